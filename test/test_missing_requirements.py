"""Distro mode installs only what the environment lacks and never moves numpy (scripts/missing_requirements.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "missing_requirements.py"
REQUIREMENTS = [REPO / "requirements" / "python.txt", REPO / "requirements" / "test.txt"]


def _load():
    spec = importlib.util.spec_from_file_location("missing_requirements", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_requirement_line_names_its_module():
    module = _load()
    parsed = [entry for path in REQUIREMENTS for entry in module.parse(path)]
    assert ("numpy>=1.21", "numpy") in parsed and ("opencv-python-headless>=4.5.4", "cv2") in parsed
    # lower bounds only: nothing in the files a distro user installs pins an exact version
    assert not [spec for spec, _ in parsed if "==" in spec], parsed


def test_complete_environment_installs_nothing_and_pins_its_numpy(tmp_path):
    pins = tmp_path / "pins.txt"
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, REQUIREMENTS), "--constraints-out", str(pins)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # this environment has every module
    assert pins.read_text() == f"numpy=={np.__version__}\n"


def test_only_missing_modules_are_listed(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("# comment\nnumpy>=1.21  # import: numpy\n"
                   "sray-absent-package>=1.0  # import: sray_absent_module\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(req)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["sray-absent-package>=1.0"]


def test_missing_torch_stops_with_the_users_choice(monkeypatch, capsys):
    module = _load()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    assert module.main([str(REQUIREMENTS[0])]) == 3
    assert "build for your GPU" in capsys.readouterr().err


def test_numpy_older_than_the_bound_is_reported_not_replaced(monkeypatch, capsys, tmp_path):
    module = _load()
    monkeypatch.setattr(np, "__version__", "1.20.3")
    pins = tmp_path / "pins.txt"
    assert module.main([str(REQUIREMENTS[0]), "--constraints-out", str(pins)]) == 4
    assert "numpy 1.20.3 is older than the supported 1.21" in capsys.readouterr().err
    assert not pins.exists()


def test_line_without_import_marker_is_an_error(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("numpy>=1.21\n")
    with pytest.raises(ValueError, match=r"req.txt:1: requirement without '# import: MODULE'"):
        _load().parse(req)
