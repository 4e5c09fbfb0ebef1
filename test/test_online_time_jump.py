"""TimeJumpDetector: the one rule for backwards time jumps of stamps (bag loop, restarted sim clock)."""

import pytest

from sray_ros.online.time_jump import TimeJumpDetector

S = 1_000_000_000


def test_backwards_jump_beyond_the_threshold_only():
    detector = TimeJumpDetector(1.0)
    assert not detector.update(100 * S)
    assert not detector.update(int(99.5 * S))  # reordering within 1 s: not a jump
    assert not detector.update(101 * S)
    assert detector.update(10 * S)  # the bag looped
    assert not detector.update(11 * S)  # the new timeline continues from the jump
    assert detector.jumps == 1


def test_reset_and_bad_threshold():
    detector = TimeJumpDetector(0.5)
    detector.update(100 * S)
    detector.reset()
    assert not detector.update(1 * S)
    with pytest.raises(ValueError, match="> 0"):
        TimeJumpDetector(0.0)


def test_verdicts_after_a_jump_drop_late_messages_of_the_old_timeline():
    detector = TimeJumpDetector(1.0)
    assert detector.observe(200 * S) == "ok"
    assert detector.observe(100 * S) == "jump"  # the new timeline starts here
    assert detector.classify(int(199.5 * S)) == "stale"  # a late old-timeline message: not stored
    assert detector.observe(int(199.5 * S)) == "stale" and detector.stale == 1
    assert detector.observe(int(100.2 * S)) == "ok"  # so the new timeline's next frame is no second jump
    assert detector.jumps == 1
    assert detector.observe(int(100.9 * S)) == "ok"  # within the threshold ahead: the new timeline
    assert detector.observe(202 * S) == "ok"  # past the old timeline's newest: nothing is stale any more
    assert detector.observe(int(150 * S)) == "jump"
