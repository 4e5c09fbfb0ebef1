"""ros_env helpers: isolated environment and process-group start/stop."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ros_env import isolated_ros_env, xdist_domain_id
from sray_ros.processes import start_ros_process, stop_ros_process


def test_isolated_env(tmp_path, monkeypatch) -> None:
    env = isolated_ros_env(77, tmp_path / "log", base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": "77",
                   "ROS_LOG_DIR": str(tmp_path / "log")}
    assert (tmp_path / "log").is_dir()
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID"):
        isolated_ros_env(300, tmp_path)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert xdist_domain_id() == 63
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert xdist_domain_id() == 60


def test_sigint_reaches_child_process_group() -> None:
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: sys.exit(5))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = start_ros_process([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    returncode, _, _ = stop_ros_process(proc, timeout_s=10)
    assert returncode == 5 and time.monotonic() - start < 5


def test_unresponsive_child_is_killed() -> None:
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(30)\n"
    proc = start_ros_process([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    returncode, _, _ = stop_ros_process(proc, timeout_s=0.3)
    assert returncode == -9


def test_process_group_logs_and_stops_its_children_by_id(tmp_path) -> None:
    from sray_ros.processes import ProcessGroup

    group = ProcessGroup(tmp_path)
    code = "import time\nprint('hello', flush=True)\ntime.sleep(30)\n"
    proc = group.start([sys.executable, "-c", code], "child")
    deadline = time.monotonic() + 10
    while "hello" not in group.log(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group.log(proc).strip() == "hello" and group.children == [("child", proc)]
    group.stop_all(timeout=5)
    assert proc.returncode is not None and proc.returncode != 0  # KeyboardInterrupt from the SIGINT
