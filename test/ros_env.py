"""ROS isolation for tests on one machine (pytest-xdist workers, concurrent runs).

:func:`isolated_ros_env` returns the variables a test process needs so that parallel runs do not see each
other: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, its own ``ROS_DOMAIN_ID``, and ``ROS_LOG_DIR`` under a
temporary directory. Set them before ``rclpy.init`` (rcl reads them there). Nothing here imports rclpy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TEST_DOMAIN_RANGE = (60, 89)  # ROS_DOMAIN_IDs this package's tests use


def xdist_domain_id(base: int = TEST_DOMAIN_RANGE[0], span: int = TEST_DOMAIN_RANGE[1] - TEST_DOMAIN_RANGE[0] + 1) -> int:
    """A ROS_DOMAIN_ID per pytest-xdist worker (gw0 -> base, gw1 -> base + 1, ...; no xdist -> base)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return base + index % span


def isolated_ros_env(domain_id: int, log_dir: str | os.PathLike, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) plus localhost-only discovery, the domain id and a log directory."""
    if not 0 <= int(domain_id) <= 232:
        raise ValueError(f"ROS_DOMAIN_ID must be in [0, 232], got {domain_id}")
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if base is None else base)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(int(domain_id)), ROS_LOG_DIR=str(log_dir))
    return env
