"""The camera value type: validation, scaling, rays (batched), without ROS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sray_ros import geometry
from sray_ros.camera import Camera, CameraError

K = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])


def test_validation_names_what_is_wrong():
    with pytest.raises(CameraError, match="positive focal"):
        Camera(np.zeros((3, 3)), 160, 120)
    with pytest.raises(CameraError, match="positive image size"):
        Camera(K, 0, 120)
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(CameraError, match="rigid"):
        Camera(K, 160, 120, bad)
    camera = Camera(K, 160, 120)
    assert not camera.K.flags.writeable and camera.size == (160, 120) and camera.c2w is None


def test_scaled_is_the_pixel_centre_rule_and_rays_match_generate_rays():
    camera = Camera(K, 160, 120, np.eye(4))
    half = camera.scaled(80, 60)
    np.testing.assert_allclose(half.K, geometry.scale_intrinsics(K, 0.5, 0.5))
    assert camera.scaled(160, 120) is camera
    o, d = half.rays()
    o2, d2 = geometry.generate_rays(torch.from_numpy(half.K.astype(np.float32)), torch.eye(4),
                                    geometry.pixel_grid(60, 80))
    assert torch.equal(o, o2) and torch.equal(d, d2) and d.shape == (4800, 3)
    # The centre pixel's ray is the optical axis.
    assert torch.allclose(camera.rays()[1].view(120, 160, 3)[59, 79], torch.tensor([-0.005, -0.005, 1.0]))
    with pytest.raises(CameraError, match="no pose"):
        Camera(K, 160, 120).rays()


def test_batched_cameras_give_batched_rays():
    poses = np.stack([np.eye(4), np.eye(4)])
    poses[1, :3, 3] = [1.0, 2.0, 3.0]
    cameras = Camera(np.stack([K, K]), 160, 120, poses)
    o, d = cameras.rays()
    assert o.shape == d.shape == (2, 160 * 120, 3)
    assert torch.allclose(o[1, 0], torch.tensor([1.0, 2.0, 3.0])) and torch.equal(d[0], d[1])
    with pytest.raises(CameraError, match="batch shape"):
        Camera(np.stack([K, K]), 160, 120, np.eye(4))
