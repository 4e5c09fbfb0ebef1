"""Bad input to the semantic-prior scripts (real-sequence panels): one line naming what is wrong, exit 2,
nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOM = REPO / "sample_data" / "synthetic_room"
MODEL = REPO / "models" / "sray_default.pt"


@pytest.mark.parametrize("extra, message", [
    (["--before", "/nonexistent.pt"], "checkpoint /nonexistent.pt: no such file"),
    (["--data", "/nonexistent"], "scene folder /nonexistent does not exist"),
    (["--views", "7"], "--views [7]: not held-out frames of"),
    (["--width", "0"], "--width/--height must be >= 16"),
])
def test_real_sequence_panels_refuses_bad_input(tmp_path, extra, message):
    args = {"--before": str(MODEL), "--after": str(MODEL), "--data": str(ROOM), "--out": str(tmp_path / "out")}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    cmd = [sys.executable, str(REPO / "scripts" / "real_sequence_panels.py")]
    for flag, value in args.items():
        cmd += [flag, value]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script, args, message", [
    ("benchmarks/bench_prior.py", ["--a", "/nonexistent.pt", "--b", str(MODEL)], "--a /nonexistent.pt: no such checkpoint"),
    ("benchmarks/bench_prior.py", ["--a", str(MODEL), "--b", str(MODEL), "--reps", "0"], "--reps and --threads must be >= 1"),
    ("scripts/prior_ablation.py", ["--train", "/nonexistent", "--val", str(ROOM), "--test", str(ROOM)],
     "--train /nonexistent: no such folder"),
    ("scripts/prior_ablation.py", ["--train", str(ROOM), "--val", str(ROOM), "--test", str(ROOM), "--variants", "x"],
     "unknown --variants ['x']"),
    ("scripts/label_pooling_card.py", ["--data", "/nonexistent"], "--data /nonexistent: no such folder"),
    ("scripts/label_pooling_card.py", ["--data", str(ROOM.parent), "--set", "radius=2"], "expected NAME=V1,V2"),
    ("scripts/label_pooling_card.py", ["--data", str(ROOM.parent), "--set", "max_radius=a"], "values must be numbers"),
    ("scripts/label_pooling_card.py", ["--data", str(ROOM.parent), "--set", "max_radius=-1"],
     "max_radius must be an integer in [0, 64]"),
    ("scripts/label_pooling_card.py", ["--data", str(ROOM.parent), "--frame-step", "0"], "need --rooms >= 1"),
    ("benchmarks/bench_label_pooling.py", ["--sizes", "160"], "--sizes WxH"),
    ("benchmarks/bench_label_pooling.py", ["--rates", "1.5"], "--rates must be in [0, 1]"),
    ("benchmarks/bench_label_pooling.py", ["--reps", "0"], "--reps and --threads must be >= 1"),
    ("sray_ros/train/evaluate.py", ["--checkpoint", str(MODEL), "--data", str(ROOM), "--label-pooling-max-radius", "5"],
     "acts on source labels"),
    ("sray_ros/train/evaluate.py", ["--checkpoint", str(MODEL), "--data", str(ROOM), "--label-transfer", "depth",
                                    "--label-pooling-max-radius", "65"], "must be in [0, 64]"),
])
def test_prior_and_pooling_scripts_refuse_bad_input(tmp_path, script, args, message):
    """One line naming the flag (exit 2 from argparse or a SystemExit message), no traceback, nothing run."""
    extra = ["--out", str(tmp_path / "out")] if ("prior_ablation" in script or "evaluate" in script) else []
    cmd = ([sys.executable, "-m", "sray_ros.train.evaluate"] if "evaluate" in script
           else [sys.executable, str(REPO / script)])
    done = subprocess.run([*cmd, *args, *extra], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
