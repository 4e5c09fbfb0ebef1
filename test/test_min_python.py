"""The sources run on Python 3.10 (Humble's, Ubuntu 22.04): a static minimum-version check with vermin.

vermin reads the syntax and standard-library use of every file and reports the lowest Python that has
all of it. Annotations are treated as evaluated (--eval-annotations): the config dataclasses' types
must work at run time too. ``.long`` (torch's ``Tensor.long()`` / ``torch.long``) is excluded: vermin
takes it for Python 2's ``long`` builtin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO

TARGET = "3.10"
SOURCES = ["sray_ros", "launch", "test", "setup.py", "scripts/write_commands.py", "scripts/missing_requirements.py",
           "scripts/card_runs.py"]


def _vermin(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    vermin = shutil.which("vermin")
    if vermin is None:
        message = "vermin is missing: it is in requirements/test.txt (pip install vermin)"
        if "SRAY_ROOT" in os.environ:  # an environment scripts/setup.sh made (CI): it must be there
            pytest.fail(message)
        pytest.skip(message)  # e.g. `colcon test` in a robot's workspace set up with rosdep only
    return subprocess.run([vermin, "--no-tips", "--eval-annotations", "--exclude", "long", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def _minimum(output: str) -> tuple[int, int]:
    match = re.search(r"Minimum required versions:\s*(?:[~!]?2\.\d+,\s*)?(\d+)\.(\d+)", output)
    assert match, output
    return int(match[1]), int(match[2])


def test_sources_need_at_most_python_3_10():
    result = _vermin("--violations", f"-t={TARGET}-", *SOURCES)
    assert result.returncode == 0, f"code needing Python > {TARGET}:\n{result.stdout}{result.stderr}"
    report = _vermin(*SOURCES)
    assert report.returncode == 0, report.stdout + report.stderr
    assert _minimum(report.stdout) <= (3, 10), report.stdout


def test_the_check_catches_newer_code(tmp_path):
    # The same invocation flags 3.11-only code (tomllib, except*), so a pass above is not vacuous.
    (tmp_path / "new.py").write_text("import tomllib\n\ntry:\n    pass\nexcept* ValueError:\n    pass\n")
    result = _vermin("--violations", f"-t={TARGET}-", "new.py", cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "tomllib" in result.stdout, result.stdout
