#!/usr/bin/env python3
"""Write the commands of scripts/commands.txt (sray-train, sray-eval, ...) as small launchers into a bin folder.

Called by scripts/setup.sh with the venv's bin folder, so that after set-up the commands the docs use are
on the PATH of the environment (`source scripts/env.sh`), exactly as `pip install .` would provide them.
Each launcher sources env.sh (so it works from any shell) and runs ``python -P``, so a checkout in the
current directory cannot shadow the installed package (the source tree has no generated message modules).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from setup import CONSOLE_SCRIPTS  # noqa: E402  (setup.py reads scripts/commands.txt; setup() runs only as __main__)

TEMPLATE = """#!/usr/bin/env bash
# sray_ros command {name}, written by scripts/write_commands.py from scripts/commands.txt
source "{root}/scripts/env.sh"
exec python -P -c "import sys; sys.argv[0] = '{name}'; from {module} import {func}; sys.exit({func}())" "$@"
"""


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: write_commands.py BIN_DIR", file=sys.stderr)
        return 2
    bindir = Path(argv[0])
    bindir.mkdir(parents=True, exist_ok=True)
    for name, target in CONSOLE_SCRIPTS.items():
        module, func = target.split(":")
        path = bindir / name
        path.write_text(TEMPLATE.format(name=name, root=ROOT, module=module, func=func))
        path.chmod(0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
