"""The set-up script is idempotent: a second run after a completed one has nothing to do."""

import os
import subprocess

import pytest

from conftest import REPO

# These test the environment scripts/setup.sh makes (scripts/env.sh exports SRAY_ROOT), not a robot's workspace.
pytestmark = pytest.mark.skipif("SRAY_ROOT" not in os.environ, reason="not an environment of scripts/setup.sh")


def test_second_setup_run_is_a_no_op():
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout, result.stdout


def _setup_py():
    """The repository's setup.py as a module (loaded from its path: no sys.path edit)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sray_setup_py", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_console_commands_of_setup_py_are_on_the_path(tmp_path):
    """The commands the docs use (sray-train, sray-eval, ...) exist after set-up and run from any folder,
    the repository root included (where the source tree must not shadow the installed package)."""
    import shutil
    import sys

    CONSOLE_SCRIPTS = _setup_py().CONSOLE_SCRIPTS
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


def test_one_list_of_commands():
    """scripts/commands.txt is the one list: `ros2 run sray_ros NAME` executables, the console scripts and the
    commands README documents are the same names, and each installed launcher runs its entry point."""
    import re
    import sys

    from conftest import BUILD_TREE, installed_executable

    setup_py = _setup_py()
    CONSOLE_SCRIPTS, read_commands = setup_py.CONSOLE_SCRIPTS, setup_py.read_commands
    assert CONSOLE_SCRIPTS == read_commands() and "sray-node" in CONSOLE_SCRIPTS
    lib = BUILD_TREE / "install" / "sray_ros" / "lib" / "sray_ros"
    installed = {p.name for p in lib.iterdir() if p.exists()}  # a dangling link is a removed command
    assert installed == set(CONSOLE_SCRIPTS), installed ^ set(CONSOLE_SCRIPTS)
    for name, target in CONSOLE_SCRIPTS.items():
        module, func = target.split(":")
        assert f"from {module} import {func}\n" in (lib / name).read_text(), name
    documented = set(re.findall(r"^\| `(sray-[a-z-]+)", (REPO / "README.md").read_text(), flags=re.M))
    assert documented == set(CONSOLE_SCRIPTS), documented ^ set(CONSOLE_SCRIPTS)
    result = subprocess.run(installed_executable("sray-resize-dataset") + ["--help"], capture_output=True, text=True,
                            timeout=120, check=False, cwd=REPO)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stdout + result.stderr
