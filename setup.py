"""pip install of the pure-Python core of sray_ros (model, data, training, CLIs) for machines without
ROS, e.g. training servers: `pip install .` (torch: install the build that fits your machine first).

On a ROS machine, colcon builds the package through CMakeLists.txt instead (interfaces + Python).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

COMMANDS_FILE = Path(__file__).resolve().parent / "scripts" / "commands.txt"
_COMMAND = re.compile(r"^(?P<name>[a-z][a-z0-9-]*) = (?P<target>[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$")


def read_commands(path: Path = COMMANDS_FILE) -> dict[str, str]:
    """Command name -> "module:function" from scripts/commands.txt, the package's one list of commands
    (also the `ros2 run sray_ros NAME` executables, see CMakeLists.txt). ValueError names a malformed line."""
    commands = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _COMMAND.match(line.strip())
        if not match:
            raise ValueError(f"{path}:{number}: expected 'name = module:function', got {line!r}")
        commands[match["name"]] = match["target"]
    return commands


CONSOLE_SCRIPTS = read_commands()


def read_requirements(path: Path) -> list[str]:
    """The requirement specifiers of a requirements file (lower bounds; comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]

if __name__ == "__main__":
    setup(
        name="sray_ros",
        version="0.1.0",
        description="Semantic-Ray (S-Ray) generalizable semantic radiance field for ROS 2 robots",
        license="Apache-2.0",
        python_requires=">=3.10",
        packages=find_packages(include=["sray_ros", "sray_ros.*"]),
        install_requires=read_requirements(COMMANDS_FILE.parents[1] / "requirements" / "python.txt"),
        extras_require={"test": read_requirements(COMMANDS_FILE.parents[1] / "requirements" / "test.txt"),
                        "plots": read_requirements(COMMANDS_FILE.parents[1] / "requirements" / "plots.txt")},
        entry_points={"console_scripts": [f"{name} = {target}" for name, target in CONSOLE_SCRIPTS.items()]},
    )
