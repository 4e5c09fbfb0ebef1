"""Camera conventions: projection round trips, validity, rotated cameras, intrinsics scaling, sampling."""

import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sray_ros import geometry as G  # noqa: E402

torch.set_num_threads(1)


def _random_pose(gen: torch.Generator) -> torch.Tensor:
    q = torch.randn(4, generator=gen, dtype=torch.float64)
    t = torch.randn(3, generator=gen, dtype=torch.float64)
    return G.pose_from_translation_quaternion(t, q)


def test_pixel_ray_point_pixel_round_trip():
    gen = torch.Generator().manual_seed(0)
    K = G.intrinsics_matrix(320.0, 310.0, 319.5, 239.5, dtype=torch.float64)
    for _ in range(5):
        c2w = _random_pose(gen)
        uv = torch.rand(200, 2, generator=gen, dtype=torch.float64) * torch.tensor([640.0, 480.0]) - 0.5
        depth = torch.rand(200, generator=gen, dtype=torch.float64) * 9.0 + 0.2
        o, d = G.generate_rays(K, c2w, uv)
        pts = o + d * depth[:, None]
        uv2, z, valid = G.project_with_validity(pts, K, G.invert_pose(c2w), 480, 640)
        assert (uv2 - uv).abs().max() < 1e-4
        assert (z - depth).abs().max() < 1e-6  # t is z-depth
        assert valid.all()


def test_round_trip_float32_within_tolerance():
    K = G.intrinsics_matrix(320.0, 320.0, 319.5, 239.5)
    c2w = G.look_at(torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.0, 0.0, 0.0]))
    uv = G.pixel_grid(48, 64) * 10.0
    o, d = G.generate_rays(K, c2w, uv)
    uv2, _, _ = G.project_with_validity(o + 3.0 * d, K, G.invert_pose(c2w), 480, 640)
    assert (uv2 - uv).abs().max() < 1e-3  # float32: ~1e-4 px relative at 640 px


def test_points_behind_camera_are_invalid():
    K = G.intrinsics_matrix(100.0, 100.0, 50.0, 50.0)
    w2c = torch.eye(4)
    pts = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.1, 0.1, -2.0]])
    _, z, valid = G.project_with_validity(pts, K, w2c, 101, 101)
    assert valid.tolist() == [False, False, True, False]
    assert z[0] < 0


def test_outside_image_is_invalid_and_edges_follow_pixel_centre_convention():
    K = G.intrinsics_matrix(10.0, 10.0, 1.5, 1.5)  # 4x4 image, centre between pixels 1 and 2
    uvs = torch.tensor([[-0.5, 0.0], [-0.51, 0.0], [3.49, 3.49], [3.5, 0.0]], dtype=torch.float32)
    assert G.in_image(uvs, 4, 4).tolist() == [True, False, True, False]
    grid = G.normalize_pixels(torch.tensor([[-0.5, -0.5], [3.5, 3.5], [1.5, 1.5]]), 4, 4)
    assert torch.allclose(grid, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))


def test_camera_rotated_90_degrees_sees_expected_pixel():
    K = G.intrinsics_matrix(100.0, 100.0, 64.0, 48.0)
    # camera at origin looking along world +x (optical z -> world x), world up -z... build from look_at
    c2w = G.look_at(torch.zeros(3), torch.tensor([1.0, 0.0, 0.0]), up=torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(G.viewing_directions(c2w), torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    w2c = G.invert_pose(c2w)
    # straight ahead -> principal point; a point to the world -y (camera right: x = z_fwd cross -up) and up
    pts = torch.tensor([[2.0, 0.0, 0.0], [2.0, -0.2, 0.0], [2.0, 0.0, 0.2]])
    uv, z, valid = G.project_with_validity(pts, K, w2c, 96, 128)
    assert valid.all()
    assert torch.allclose(uv[0], torch.tensor([64.0, 48.0]), atol=1e-4)
    assert torch.allclose(uv[1], torch.tensor([64.0 + 10.0, 48.0]), atol=1e-4)  # right in the image
    assert torch.allclose(uv[2], torch.tensor([64.0, 48.0 - 10.0]), atol=1e-4)  # world up = image up
    # a point along world +y (90 degrees to the side of the optical axis) is not visible
    _, _, vis = G.project_with_validity(torch.tensor([[0.0, 3.0, 0.0]]), K, w2c, 96, 128)
    assert not vis.any()
    # explicit 90 degree yaw of an identity camera: c2w rotation about camera y
    rot = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    pose = torch.eye(4)
    pose[:3, :3] = rot
    uv, _, ok = G.project_with_validity(torch.tensor([[5.0, 0.0, 0.0]]), K, G.invert_pose(pose), 96, 128)
    assert ok.all() and torch.allclose(uv[0], torch.tensor([64.0, 48.0]), atol=1e-4)


def test_scale_intrinsics_maps_pixel_centres():
    K = G.intrinsics_matrix(320.0, 320.0, 319.5, 239.5)
    Ks = G.scale_intrinsics(K, 0.25, 0.25)
    assert math.isclose(float(Ks[0, 2]), 79.5) and math.isclose(float(Ks[0, 0]), 80.0)
    # a 3D point projects to u in full res and (u + 0.5) * s - 0.5 in the scaled image
    p = torch.tensor([[0.3, -0.2, 2.0]])
    uv, _ = G.project_points(p, K, torch.eye(4))
    uvs, _ = G.project_points(p, Ks, torch.eye(4))
    assert torch.allclose(uvs, (uv + 0.5) * 0.25 - 0.5, atol=1e-5)


def test_pose_inverse_and_quaternion_round_trip():
    gen = torch.Generator().manual_seed(1)
    pose = _random_pose(gen)
    assert torch.allclose(pose @ G.invert_pose(pose), torch.eye(4, dtype=torch.float64), atol=1e-10)
    q = G.matrix_to_quaternion(pose[:3, :3])
    assert torch.allclose(G.quaternion_to_matrix(q), pose[:3, :3], atol=1e-10)
    assert G.is_finite_pose(pose)
    bad = pose.clone()
    bad[0, 3] = float("-inf")
    assert not G.is_finite_pose(bad)


def test_inverse_depth_and_pdf_sampling():
    near, far = torch.full((3,), 0.5), torch.full((3,), 8.0)
    d = G.sample_inverse_depth(near, far, 16)
    assert torch.allclose(d[:, 0], near) and torch.allclose(d[:, -1], far)
    inv = 1.0 / d
    assert torch.allclose(inv[:, 1:] - inv[:, :-1], (inv[:, 1] - inv[:, 0])[:, None].expand(3, 15), atol=1e-5)
    dp = G.sample_inverse_depth(near, far, 16, perturb=True)
    assert (dp[:, 1:] >= dp[:, :-1]).all() and (dp >= 0.5 - 1e-6).all() and (dp <= 8.0 + 1e-5).all()
    w = torch.zeros(3, 16)
    w[:, 5] = 1.0
    fine = G.sample_pdf(d, w, 32)
    lo, hi = 0.5 * (d[:, 4] + d[:, 5]), 0.5 * (d[:, 5] + d[:, 6])
    inside = ((fine >= lo[:, None] - 1e-5) & (fine <= hi[:, None] + 1e-5)).float().mean()
    assert inside > 0.9
    assert (fine[:, 1:] >= fine[:, :-1]).all()


@pytest.mark.parametrize("h,w", [(4, 5)])
def test_pixel_grid_row_major(h, w):
    uv = G.pixel_grid(h, w)
    assert uv.shape == (h * w, 2)
    assert uv[w + 2].tolist() == [2.0, 1.0]


def test_depth_from_raw_marks_no_return_zero_and_nonfinite_invalid():
    # 65535 mm is a sensor's "no return", not a surface 65.5 m away; 0 is unknown.
    raw = np.array([[0, 1500, 65535, 65534]], np.uint16)
    depth = G.depth_from_raw(raw, 1000.0)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[0.0, 1.5, 0.0, 65.534]], rtol=1e-6)
    metres = np.array([[np.nan, np.inf, -1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(G.depth_from_raw(metres, 1.0), [[0.0, 0.0, 0.0, 2.0]])
    mask = G.valid_depth(torch.from_numpy(G.depth_from_raw(raw, 1000.0)))
    assert mask.tolist() == [[False, True, False, True]]
