"""package.xml declares exactly what the package imports or runs, with rosdep keys that exist.

The imports are read from the sources (sray_ros/ and launch/) with ``ast``, including imports inside
functions. Every third-party import must be declared (or be one of the two stated pip-only
dependencies, or the optional generator's), and every declared dependency must be imported, be a field
type of msg/, or be run by a file named here.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO

# Import name -> rosdep key, for the non-ROS Python packages (ROS packages: the key is the import name).
SYSTEM_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "tqdm": "python3-tqdm"}
# No rosdep key exists for these (rosdistro rosdep/python.yaml has neither python3-torch nor a rosbags key):
# requirements/python.txt carries them, README says why.
PIP_ONLY = {"torch": "the user's torch build for their GPU", "rosbags": "pip only (no rosdep key)"}
# The optional synthetic-room generator (requirements/generator.txt); only sray_ros/data/synth imports it.
GENERATOR_ONLY = {"pyrender", "trimesh"}
# Declared because a file of the package runs them (key -> (file, text that shows it)).
RUN = {
    "ros2launch": ("launch/sray.launch.py", "ros2 launch sray_ros sray.launch.py"),
    "ros2bag": ("launch/replay.launch.py", '["ros2", "bag", "play"'),
    "rosbag2_storage_default_plugins": ("launch/replay.launch.py", '["ros2", "bag", "play"'),
    "rviz2": ("launch/sray.launch.py", 'Node(package="rviz2", executable="rviz2"'),
    "rosidl_default_runtime": ("package.xml", "<member_of_group>rosidl_interface_packages</member_of_group>"),
}
# Every key package.xml may use, each checked to exist on Humble and Jazzy (README, "Dependencies"):
# python3-* in rosdistro's rosdep/python.yaml (an entry for ubuntu without a release restriction), the rest
# are packages released in the humble and jazzy distributions. A new key must be checked and added here.
CHECKED_KEYS = {
    "python3-numpy", "python3-opencv", "python3-yaml", "python3-tqdm", "python3-pytest", "python3-pytest-timeout",
    "ament_cmake", "ament_cmake_python", "ament_cmake_pytest", "ament_index_python", "rosidl_default_generators",
    "rosidl_default_runtime", "builtin_interfaces", "geometry_msgs", "sensor_msgs", "std_msgs", "std_srvs",
    "action_msgs", "diagnostic_msgs", "rosgraph_msgs", "rcl_interfaces", "rclpy", "tf2_msgs", "launch",
    "launch_ros", "ros2launch", "ros2bag", "rosbag2_storage_default_plugins", "rviz2",
}
# The user's named packages the code replaces (README, "What replaces cv_bridge, ..."), and keys that
# would install something the code does not use.
NEVER = {"cv_bridge", "tf2_ros", "tf_transformations", "sensor_msgs_py", "python3-torch", "python3-rosbags"}


def _imports(path) -> set[str]:
    """Top-level names of the absolute imports of one Python file (module level and inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _third_party_imports() -> dict[str, set[str]]:
    """Third-party top-level import -> the files (relative paths) that import it."""
    found: dict[str, set[str]] = {}
    files = sorted((REPO / "sray_ros").rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))
    for path in files:
        for name in _imports(path):
            if name in sys.stdlib_module_names or name in {"sray_ros", "__future__"}:
                continue
            found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def _package_xml() -> ET.Element:
    return ET.parse(REPO / "package.xml").getroot()


def _keys(root: ET.Element, *tags: str) -> set[str]:
    return {el.text.strip() for tag in tags for el in root.findall(tag)}


def _msg_packages() -> set[str]:
    """Packages whose types the interface files use (an action also needs action_msgs)."""
    packages = set()
    for path in (REPO / "msg").iterdir():
        packages.update(re.findall(r"^\s*([a-z][a-z0-9_]*)/[A-Z]\w*", path.read_text(), flags=re.M))
        if path.suffix == ".action":
            packages.add("action_msgs")
    return packages


def test_format_3_and_interface_package():
    root = _package_xml()
    assert root.get("format") == "3"
    assert root.findtext("name") == "sray_ros"
    assert root.findtext("export/build_type") == "ament_cmake"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"


def test_the_import_scan_sees_the_package():
    # The scan must find what the code certainly imports, or the checks below would pass vacuously.
    imports = _third_party_imports()
    assert {"rclpy", "numpy", "torch", "cv2", "yaml", "launch", "rosbags"} <= set(imports), sorted(imports)
    assert "sray_ros/ros/node.py" in imports["rclpy"]


def test_every_third_party_import_is_declared():
    root = _package_xml()
    declared = _keys(root, "depend", "exec_depend")
    python_txt = (REPO / "requirements" / "python.txt").read_text()
    generator_txt = (REPO / "requirements" / "generator.txt").read_text()
    undeclared = []
    for name, files in sorted(_third_party_imports().items()):
        if name in PIP_ONLY:
            assert f"# import: {name}" in python_txt, f"{name} (imported by {sorted(files)}) not in requirements/python.txt"
            assert not {name, f"python3-{name}"} & declared, f"{name} has no rosdep key; package.xml must not claim one"
        elif name in GENERATOR_ONLY:
            assert all(f.startswith("sray_ros/data/synth/") for f in files), (name, files)
            assert re.search(rf"^{name}==", generator_txt, flags=re.M | re.I), f"{name} not in requirements/generator.txt"
        elif SYSTEM_KEYS.get(name, name) not in declared:
            undeclared.append(f"{name} (imported by {', '.join(sorted(files))})")
    assert not undeclared, "imported but not in package.xml: " + "; ".join(undeclared)


def test_nothing_declared_that_is_not_imported_or_run():
    root = _package_xml()
    imported = {SYSTEM_KEYS.get(name, name) for name in _third_party_imports()}
    unused = []
    for key in sorted(_keys(root, "depend", "exec_depend")):
        if key in imported or key in _msg_packages():
            continue
        if key in RUN:
            file, evidence = RUN[key]
            assert evidence in (REPO / file).read_text(), f"{key}: {file} no longer contains {evidence!r}"
            continue
        unused.append(key)
    assert not unused, f"declared in package.xml but neither imported, a msg/ field type nor run: {unused}"
    assert not NEVER & _keys(root, "depend", "exec_depend", "build_depend", "test_depend"), NEVER


def test_build_and_test_dependencies_are_used():
    root = _package_xml()
    cmake = (REPO / "CMakeLists.txt").read_text()
    for key in _keys(root, "buildtool_depend"):
        used = f"find_package({key} " in cmake or (key == "ament_cmake_python" and "ament_get_python_install_dir" in cmake)
        assert used, f"buildtool_depend {key} is not used by CMakeLists.txt"
    for key in _keys(root, "depend", "build_depend"):
        if key in _msg_packages():
            assert f"find_package({key} REQUIRED)" in cmake, f"{key}: the interfaces need it at build time"
    tests = {key: False for key in _keys(root, "test_depend")}
    tests["ament_cmake_pytest"] = "find_package(ament_cmake_pytest REQUIRED)" in cmake
    tests["python3-pytest"] = True  # the suite itself
    tests["python3-pytest-timeout"] = re.search(r"^timeout\s*=", (REPO / "pytest.ini").read_text(), re.M) is not None
    assert all(tests.values()), tests


@pytest.mark.parametrize("tag", ["buildtool_depend", "depend", "exec_depend", "build_depend", "test_depend"])
def test_keys_are_checked_rosdep_keys(tag):
    unknown = _keys(_package_xml(), tag) - CHECKED_KEYS
    assert not unknown, f"{tag} keys not checked against rosdistro (see CHECKED_KEYS): {sorted(unknown)}"
