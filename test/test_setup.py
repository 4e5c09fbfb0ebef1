"""The set-up script is idempotent: a second run after a completed one has nothing to do."""

import subprocess

from conftest import REPO


def test_second_setup_run_is_a_no_op():
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout, result.stdout


def test_console_commands_of_setup_py_are_on_the_path(tmp_path):
    """The commands the docs use (sray-train, sray-eval, ...) exist after set-up and run from any folder,
    the repository root included (where the source tree must not shadow the installed package)."""
    import os
    import shutil
    import sys

    sys.path.insert(0, str(REPO))
    try:
        from setup import CONSOLE_SCRIPTS
    finally:
        sys.path.remove(str(REPO))
    missing = [name for name in CONSOLE_SCRIPTS if shutil.which(name) is None]
    assert not missing, f"not on PATH after set-up: {missing}"
    for cwd in (tmp_path, REPO):
        for name in ("sray-train", "sray-eval", "sray-resize-dataset"):
            result = subprocess.run([name, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120,
                                    check=False, env=dict(os.environ))
            assert result.returncode == 0 and f"usage: {name}" in result.stdout, result.stdout + result.stderr
    # The node from the repository root (imports the generated messages); a device torch does not know is a
    # start-up error with a reason and exit status 1, not a traceback.
    result = subprocess.run(["sray-node", "--ros-args", "-p", "device:=nonsense"], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot start: device 'nonsense' is not a torch device" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
