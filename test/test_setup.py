"""The set-up script is idempotent: a second run after a completed one has nothing to do."""

import subprocess

from conftest import REPO


def test_second_setup_run_is_a_no_op():
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout, result.stdout
