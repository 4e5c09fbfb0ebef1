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
