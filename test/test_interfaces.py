"""Every interface file in msg/ generated an importable type whose fields match the file."""

from __future__ import annotations

import importlib
import importlib.metadata
import re

import pytest

from conftest import REPO

MSG_DIR = REPO / "msg"
INTERFACE_FILES = sorted(p for p in MSG_DIR.iterdir() if p.suffix in {".msg", ".srv", ".action"})
KIND = {".msg": "msg", ".srv": "srv", ".action": "action"}


def _field_names(section: str) -> list[str]:
    names = []
    for line in section.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        type_, name = line.split()[:2]
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and "=" in line:
            continue  # constant
        names.append(name)
    return names


def test_there_are_interfaces():
    assert {p.name for p in INTERFACE_FILES} >= {
        "RenderSemanticView.srv", "FineTune.action", "SaveCheckpoint.srv", "LoadCheckpoint.srv",
        "KeyframeInfo.msg", "NodeStatus.msg",
    }


@pytest.mark.parametrize("path", INTERFACE_FILES, ids=lambda p: p.name)
def test_interface_generated(path):
    module = importlib.import_module(f"sray_ros.{KIND[path.suffix]}")
    interface = getattr(module, path.stem)
    sections = path.read_text().split("---")
    if path.suffix == ".msg":
        parts = {"": interface}
    elif path.suffix == ".srv":
        parts = {"Request": interface.Request, "Response": interface.Response}
    else:
        parts = {"Goal": interface.Goal, "Result": interface.Result, "Feedback": interface.Feedback}
    assert len(sections) == len(parts)
    for section, cls in zip(sections, parts.values()):
        generated = list(cls.get_fields_and_field_types())
        assert generated == _field_names(section), f"{path.name}: {cls.__name__} fields differ from the file"
        cls()  # default-constructible


def test_render_request_shapes():
    from sray_ros.srv import RenderSemanticView

    fields = RenderSemanticView.Request.get_fields_and_field_types()
    assert fields["target_pose"] == "geometry_msgs/PoseStamped"
    assert fields["camera_info"] == "sensor_msgs/CameraInfo"
    assert fields["num_source_views"] == "uint16"
    response = RenderSemanticView.Response.get_fields_and_field_types()
    assert response["labels"] == "sensor_msgs/Image"
    assert response["source_keyframe_ids"] == "sequence<uint32>"


def test_python_modules_come_from_the_same_installed_package():
    import sray_ros
    import sray_ros.geometry
    import sray_ros.srv

    root = sray_ros.srv.__file__.rsplit("/srv/", 1)[0]
    assert sray_ros.geometry.__file__.startswith(root), (sray_ros.geometry.__file__, root)


def _pip_mode() -> bool:
    """ROS 2 comes from PyPI wheels (rclpy's distribution is the ros-rclpy wheel), not from a distro."""
    try:
        importlib.metadata.distribution("ros-rclpy")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _pip_mode(), reason="a ROS distro's own launch and cv_bridge are the real ones")
@pytest.mark.parametrize("dist", ["launch", "cv-bridge", "cv_bridge"])
def test_unrelated_pypi_packages_not_installed(dist):
    # In pip mode, PyPI `launch` is an unrelated project and PyPI `cv-bridge` is ROS 1's; neither may be
    # installed. On a distro the names are ROS 2's own packages (launch is an exec_depend of package.xml).
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(dist)
