"""Child processes for the demo and the tests: each in a process group of its own, output to a log file,
stopped by id (SIGINT to its group, SIGKILL after a timeout), never by name."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def _restore_sigint() -> None:  # background shells start children with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ProcessGroup:
    """Starts children (``start``), reads their logs (``log``), stops one or all of them by id."""

    def __init__(self, log_dir: Path) -> None:
        self._procs: list[tuple[subprocess.Popen, Path]] = []
        self._log_dir = Path(log_dir)

    def start(self, cmd: list[str], name: str, env: dict | None = None, cwd=None) -> subprocess.Popen:
        """Start ``cmd`` with stdout and stderr in ``<log_dir>/<name>.log``."""
        log_path = self._log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                                    cwd=cwd, start_new_session=True, preexec_fn=_restore_sigint)
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

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
        """SIGINT to the child's process group, SIGKILL after ``timeout`` s; returns its exit status."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        return proc.returncode

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every child, the last started first."""
        for proc, _ in reversed(self._procs):
            self.stop(proc, timeout)


__all__ = ["ProcessGroup"]
