"""Test harness: ROS isolation per xdist worker, process management, shared paths.

Every test process talks DDS on localhost only, in a ROS domain of its own (distinct per xdist worker
and per concurrent pytest run on the machine), and logs into the build tree. This module sets the
environment at import time, i.e. before any test module imports rclpy.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from sray_ros.processes import ProcessGroup  # noqa: F401 - tests import it from here

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# The colcon workspace of the set-up under test (scripts/env.sh exports it; .ros_ws-jazzy for Jazzy).
BUILD_TREE = pathlib.Path(os.environ.get("SRAY_WS", REPO / ".ros_ws"))


def _domain_id() -> int:
    if "SRAY_TEST_DOMAIN_ID" in os.environ:
        return int(os.environ["SRAY_TEST_DOMAIN_ID"])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    # The controller's pid tells concurrent pytest runs on one machine apart; each run gets `count`
    # consecutive domains in 1..100.
    controller = os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()
    slots = max(100 // count, 1)
    return 1 + (controller % slots) * count + index % count


ROS_DOMAIN_ID = _domain_id()
os.environ["ROS_DOMAIN_ID"] = str(ROS_DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOG_DIR"] = str(BUILD_TREE / "log" / "test" / os.environ.get("PYTEST_XDIST_WORKER", "main"))
os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
pathlib.Path(os.environ["ROS_LOG_DIR"]).mkdir(parents=True, exist_ok=True)


def installed_executable(name: str) -> list[str]:
    """Command line for one of the package's installed executables (what `ros2 run sray_ros NAME` runs)."""
    prefix = os.environ.get("SRAY_INSTALL_PREFIX", str(BUILD_TREE / "install" / "sray_ros"))
    path = pathlib.Path(prefix) / "lib" / "sray_ros" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash scripts/setup.sh` (colcon build) first")
    return [sys.executable, str(path)]


@pytest.fixture
def processes(tmp_path):
    group = ProcessGroup(tmp_path)
    yield group
    group.stop_all()


@pytest.fixture
def rclpy_context():
    """A fresh rclpy context for the test, shut down afterwards."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    try:
        rclpy.shutdown(context=context)
    except Exception:  # already shut down
        pass


def wait_for_service(node, client, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.wait_for_service(timeout_sec=0.2):
        if time.monotonic() > deadline:
            raise TimeoutError(f"service {client.srv_name} not available after {timeout} s")


def call_service(node, client, request, timeout: float = 60.0):
    """Call a service and spin the node until the response arrives."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, executor=executor, timeout_sec=timeout)
    executor.shutdown()
    if not future.done():
        raise TimeoutError(f"no response from {client.srv_name} within {timeout} s")
    return future.result()


def pytest_sessionfinish(session, exitstatus):
    # Processes killed hard leave Fast DDS shared-memory segments behind; remove zombie ones.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    fastdds = shutil.which("fastdds")
    if fastdds:
        subprocess.run([fastdds, "shm", "clean"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60, check=False)


def require_generator() -> None:
    """Skip (or fail, with SRAY_REQUIRE_GENERATOR=1 as CI sets it) when the optional synthetic-room
    generator's dependencies are missing."""
    import importlib.util

    from sray_ros.data.synth.catalog import SH3D_FURNITURE_DIR

    missing = []
    if importlib.util.find_spec("pyrender") is None or importlib.util.find_spec("trimesh") is None:
        missing.append("pyrender/trimesh")
    if not any(SH3D_FURNITURE_DIR.glob("*.sh3f")):
        missing.append(f"{SH3D_FURNITURE_DIR}/*.sh3f")
    if missing:
        message = f"generator dependencies missing ({', '.join(missing)}): run scripts/install_generator_deps.sh"
        if os.environ.get("SRAY_REQUIRE_GENERATOR") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def synthetic_mini_set(tmp_path_factory):
    """Two training rooms and one test room, 16 frames each at 80x60 (ScanNet layout)."""
    require_generator()
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from sray_ros.data.synth.generate import generate_scene, write_dataset_files

    root = tmp_path_factory.mktemp("synthetic_mini_set")
    for split, seeds in (("train", (11, 12)), ("test", (13,))):
        folder = root / split
        folder.mkdir()
        write_dataset_files(folder)
        for seed in seeds:
            generate_scene(folder, split, seed, frames=16, width=80, height=60, seed=seed)
    return root
