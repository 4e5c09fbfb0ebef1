#!/usr/bin/env python3
"""Distro mode of scripts/setup.sh: which lines of the requirements files the environment still lacks.

    missing_requirements.py REQUIREMENTS.txt... [--constraints-out FILE]

Each requirement line carries ``# import: MODULE``. A line whose module imports in this interpreter is
provided (by the ROS distro, apt or the user) and is left alone, whatever its version: a distro's
numpy, OpenCV or torch is never replaced. The lines whose module does not import are printed, one per
line, for pip to install. With --constraints-out, a pip constraints file is written that pins numpy to
the version this interpreter has, so that pip cannot upgrade it as a dependency of what it installs
(it fails with a conflict instead).

Exit status: 0; 3 when torch is missing (torch is the user's choice of build for their GPU, so set-up
stops and says so); 4 when the installed numpy is older than the requirements' lower bound.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

LINE = re.compile(r"^\s*(?P<spec>[A-Za-z0-9_.\-]+[^#]*?)\s*#\s*import:\s*(?P<module>[A-Za-z0-9_.]+)\s*$")
USER_CHOICE = {"torch": "install the torch build for your GPU first (https://pytorch.org/get-started/locally/)"}


def parse(path: Path) -> list[tuple[str, str]]:
    """(requirement specifier, import module) for each requirement line of a requirements file.

    Raises ValueError naming the file and line when a requirement line has no ``# import:`` marker.
    """
    out = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = LINE.match(raw)
        if not match:
            raise ValueError(f"{path}:{number}: requirement without '# import: MODULE': {stripped!r}")
        out.append((match["spec"].strip(), match["module"]))
    return out


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", nargs="+", type=Path)
    parser.add_argument("--constraints-out", type=Path)
    args = parser.parse_args(argv)

    missing: list[str] = []
    numpy_bound = None
    for path in args.requirements:
        for spec, module in parse(path):
            if module == "numpy":
                bound = re.search(r">=\s*([0-9.]+)", spec)
                numpy_bound = bound.group(1) if bound else None
            if importlib.util.find_spec(module) is not None:
                continue
            if module in USER_CHOICE:
                print(f"missing_requirements: {module} does not import: {USER_CHOICE[module]}", file=sys.stderr)
                return 3
            missing.append(spec)

    if importlib.util.find_spec("numpy") is not None:
        import numpy

        if numpy_bound and _version_tuple(numpy.__version__) < _version_tuple(numpy_bound):
            print(f"missing_requirements: numpy {numpy.__version__} is older than the supported {numpy_bound}; "
                  "sray_ros does not replace a distro's numpy", file=sys.stderr)
            return 4
        if args.constraints_out:
            args.constraints_out.write_text(f"numpy=={numpy.__version__}\n")
    elif args.constraints_out:
        args.constraints_out.write_text("")
    for spec in missing:
        print(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
