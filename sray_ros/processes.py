"""Child processes of the demo and the tests: started in their own process group, stopped by their own id.

* :func:`start_ros_process` starts a child (a node, the bag player) in its own process group with
  SIGINT restored (non-interactive shells start background jobs with SIGINT ignored) and with the
  parent's environment, which carries the wheels' ``LD_LIBRARY_PATH``; :func:`stop_ros_process`
  sends SIGINT to that group only (never by name), then SIGKILL after a timeout.
* :class:`ProcessGroup`: the demo's and the tests' children, with log files, built on those two.

Nothing here imports rclpy.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def _restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_ros_process(cmd: Sequence[str], env: Mapping[str, str] | None = None, **popen_kwargs) -> subprocess.Popen:
    """Start ``cmd`` in a new process group (session) with SIGINT at its default action."""
    return subprocess.Popen(list(cmd), env=None if env is None else dict(env), start_new_session=True,
                            preexec_fn=_restore_sigint, **popen_kwargs)


def stop_ros_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> tuple[int, object, object]:
    """SIGINT the child's process group, wait up to ``timeout_s``, then SIGKILL the group.

    Returns ``(returncode, stdout, stderr)``; the outputs are what ``communicate`` collected from pipes
    (None where not piped), so the child cannot block on a full pipe while stopping.
    """
    out = err = None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
    else:
        out, err = proc.communicate()
    return proc.returncode, out, err


class ProcessGroup:
    """Children of the demo or a test, each started by :func:`start_ros_process` with its output in
    ``<log_dir>/<name>.log``, and stopped by id with :func:`stop_ros_process` (last started first)."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self._procs: list[tuple[subprocess.Popen, Path]] = []
        self._log_dir = Path(log_dir)

    def start(self, cmd: Sequence[str], name: str, env: Mapping[str, str] | None = None, cwd=None) -> subprocess.Popen:
        log_path = self._log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = start_ros_process(cmd, env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        self._procs.append((proc, log_path))
        return proc

    @property
    def children(self) -> list[tuple[str, subprocess.Popen]]:
        """(name, process) of every child started, in start order."""
        return [(path.stem, proc) for proc, path in self._procs]

    def log(self, proc: subprocess.Popen) -> str:
        for p, path in self._procs:
            if p is proc:
                return path.read_text(errors="replace")
        raise KeyError(proc)

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> int:
        return stop_ros_process(proc, timeout)[0]

    def stop_all(self, timeout: float = 10.0) -> None:
        for proc, _ in reversed(self._procs):
            self.stop(proc, timeout)


__all__ = ["ProcessGroup", "start_ros_process", "stop_ros_process"]
