"""Camera conventions: projection round trips, validity, rotated cameras, intrinsics scaling, sampling."""

import math

import numpy as np
import pytest
import torch


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


# ------------------------------------------------------------------------------- depth registration
def _plane_depth(K: np.ndarray, width: int, height: int, normal=(0.2, 0.1, 1.0), offset: float = 2.0) -> np.ndarray:
    """z-depth of the plane n . X = offset seen by a pinhole camera at the plane's frame origin."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return (offset / (normal[0] * x + normal[1] * y + normal[2])).astype(np.float32)


def test_register_depth_same_optical_frame_reprojects_into_the_colour_camera() -> None:
    # A 106x60 depth camera with other intrinsics than the 80x60 colour camera, same optical frame: each
    # colour pixel must get the depth of the surface along ITS ray (here a tilted plane), and 0 where its
    # ray leaves the depth camera's view (top and bottom rows: the colour camera sees wider vertically).
    K_d = np.array([[70.0, 0, 52.5], [0, 70.0, 29.5], [0, 0, 1]])
    K_c = np.array([[60.0, 0, 39.5], [0, 62.0, 30.2], [0, 0, 1]])
    depth = _plane_depth(K_d, 106, 60)
    out = G.register_depth(depth, K_d, K_c, (80, 60))
    truth = _plane_depth(K_c, 80, 60)
    v = (np.arange(60) - 30.2) / 62.0 * 70.0 + 29.5  # the colour rows' ray in the depth image
    inside_rows = (v >= -0.5) & (v < 59.5)
    assert out.shape == (60, 80) and out.dtype == np.float32
    assert 0 < inside_rows.sum() < 60
    assert np.all(out[~inside_rows] == 0)
    # nearest depth pixel: off by at most half a depth pixel along the plane's gradient (< 1 cm here)
    np.testing.assert_allclose(out[inside_rows], truth[inside_rows], atol=0.01)
    stretched = G.resize_nearest(depth, 80, 60)  # what intake did before: wrong by up to several cm
    assert np.abs(stretched - truth).max() > 0.05


def test_register_depth_identical_cameras_and_scaled_intrinsics_equal_nearest_resize() -> None:
    K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
    depth = np.random.default_rng(1).uniform(0.5, 4.0, (60, 80)).astype(np.float32)
    np.testing.assert_array_equal(G.register_depth(depth, K, K, (80, 60)), depth)
    K_half = G.scale_intrinsics(K, 0.5, 0.5)
    np.testing.assert_array_equal(G.register_depth(depth, K, K_half, (40, 30)), G.resize_nearest(depth, 40, 30))


def test_register_depth_with_a_baseline_splats_with_a_z_buffer() -> None:
    # Depth camera 6 cm to the right (+x) of the colour camera, same intrinsics: a wall at 2 m shifts by
    # fx * 0.06 / 2 = 1.8 -> 2 px, a box at 1 m (depth columns 20..29) by 3.6 -> 4 px and occludes the wall.
    K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
    depth = np.full((60, 80), 2.0, np.float32)
    depth[:, 20:30] = 1.0
    color_from_depth = np.eye(4)
    color_from_depth[0, 3] = 0.06
    out = G.register_depth(depth, K, K, (80, 60), color_from_depth)
    row = out[30]
    assert np.all(row[:2] == 0)  # no depth pixel lands left of column 2
    assert np.all(row[2:22] == 2.0) and np.all(row[22:24] == 0.0)  # disocclusion hole beside the box
    assert np.all(row[24:34] == 1.0)  # the box, winning over the wall also splatted into columns 32, 33
    assert np.all(row[34:] == 2.0)
    assert np.all(out == out[30])  # pure x baseline: rows unchanged


def test_resize_nearest_is_exact_nearest() -> None:
    # 6 -> 4 columns: output centre u' samples input (u' + 0.5) * 1.5 - 0.5 = 0.25, 1.75, 3.25, 4.75 -> 0, 2, 3, 5
    # (cv2.INTER_NEAREST takes floor(u' * 1.5) = 0, 1, 3, 4 instead)
    img = np.arange(6, dtype=np.uint8)[None].repeat(3, 0)
    np.testing.assert_array_equal(G.resize_nearest(img, 4, 3)[0], [0, 2, 3, 5])


@pytest.mark.parametrize("K, match", [
    (np.eye(3)[:2], "3x3"), (np.zeros((3, 3)), "positive focal"), (np.diag([1.0, 1.0, 2.0]), "last row"),
    (np.array([[1.0, 0, 0], [0.5, 1, 0], [0, 0, 1]]), "upper triangular"),
    (np.array([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]]), "non-finite"),
])
def test_intrinsics_problem_names_what_is_wrong(K, match) -> None:
    assert match in G.intrinsics_problem(K)
    assert G.intrinsics_problem(np.array([[10.0, 0, 5], [0, 10, 5], [0, 0, 1]]), 10, 10) is None
    assert "positive image size" in G.intrinsics_problem(np.array([[10.0, 0, 5], [0, 10, 5], [0, 0, 1]]), 0, 10)
