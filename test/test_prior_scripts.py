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
