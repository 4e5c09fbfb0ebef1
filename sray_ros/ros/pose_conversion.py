"""``geometry_msgs`` poses and transforms <-> 4x4 matrices: the one place for the message side of the pose
convention (the matrix side, quaternions in ROS order x, y, z, w, lives in :mod:`sray_ros.geometry`).

A matrix here is a rigid transform ``float64 [4, 4]``; for a camera, the camera-to-world pose of its
optical frame (OpenCV / REP-103: x right, y down, z forward).
"""

from __future__ import annotations

import numpy as np
import torch
from geometry_msgs.msg import Pose, TransformStamped
from std_msgs.msg import Header

from sray_ros import geometry


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """4x4 transform of a ``geometry_msgs/Pose`` (the quaternion is normalised).

    Raises ValueError naming the field when the orientation is not a finite non-zero quaternion or the
    position is not finite."""
    p, q = pose.position, pose.orientation
    quat = np.array([q.x, q.y, q.z, q.w], np.float64)
    if not np.all(np.isfinite(quat)) or np.linalg.norm(quat) < 1e-6:
        raise ValueError("orientation is not a finite non-zero quaternion")
    matrix = np.eye(4)
    matrix[:3, :3] = geometry.quaternion_to_matrix(torch.from_numpy(quat)).numpy()
    matrix[:3, 3] = [p.x, p.y, p.z]
    if not np.all(np.isfinite(matrix)):
        raise ValueError("position is not finite")
    return matrix


def rotation_to_quaternion(rot: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w), w >= 0, of the rotation nearest to ``rot`` ``[3, 3]`` (orthonormalised first, so poses
    read from text files with ~1e-6 rounding give a unit quaternion of a proper rotation)."""
    u, _, vt = np.linalg.svd(np.asarray(rot, np.float64))
    nearest = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    q = geometry.matrix_to_quaternion(torch.from_numpy(np.ascontiguousarray(nearest))).numpy()
    return tuple(float(v) for v in q)


def matrix_to_pose(matrix: np.ndarray) -> Pose:
    """``geometry_msgs/Pose`` of a 4x4 rigid transform."""
    m = np.asarray(matrix, np.float64)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in m[:3, 3])
    o = pose.orientation
    o.x, o.y, o.z, o.w = rotation_to_quaternion(m[:3, :3])
    return pose


def matrix_to_transform(matrix: np.ndarray, header: Header, child_frame_id: str) -> TransformStamped:
    """``TransformStamped`` (``header.frame_id`` = parent) of a 4x4 rigid transform parent <- child."""
    m = np.asarray(matrix, np.float64)
    t = TransformStamped(header=header, child_frame_id=child_frame_id)
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in m[:3, 3])
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = rotation_to_quaternion(m[:3, :3])
    return t


def pose_stamped_to_transform(header: Header, pose: Pose, child_frame_id: str) -> TransformStamped:
    """The transform ``header.frame_id <- child_frame_id`` a ``PoseStamped`` of the child describes."""
    t = TransformStamped(header=header, child_frame_id=child_frame_id)
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (
        pose.position.x, pose.position.y, pose.position.z)
    t.transform.rotation = pose.orientation
    return t


__all__ = ["matrix_to_pose", "matrix_to_transform", "pose_stamped_to_transform", "pose_to_matrix",
           "rotation_to_quaternion"]
