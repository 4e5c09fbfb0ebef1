"""Source-view selection and training ray batches."""

import numpy as np
import pytest
import torch

from sray_ros.data.ray_batch import RayBatch, RayBatchSampler, build_ray_batch
from sray_ros.data.scene import SceneArrays
from sray_ros.data.view_selection import sample_source_views, select_source_views, view_scores
from sray_ros.geometry import look_at


def circle_poses(n=24, radius=1.0):
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    eye = torch.tensor(np.stack([radius * np.cos(ang), radius * np.sin(ang), np.full(n, 1.5)], 1))
    target = torch.zeros(n, 3, dtype=torch.float64)
    return look_at(eye, target).numpy()


def test_select_excludes_target_and_prefers_neighbours():
    poses = circle_poses()
    sel = select_source_views(poses[5], poses, 4, exclude=5)
    assert 5 not in sel and len(sel) == 4
    assert set(sel.tolist()) == {3, 4, 6, 7}
    assert np.all(np.diff(view_scores(poses[5], poses)[sel]) >= 0)


def test_angle_matters():
    base = np.eye(4)
    turned = np.eye(4)
    turned[:3, :3] = [[-1, 0, 0], [0, 1, 0], [0, 0, -1]]  # same place, looking backwards
    near_same_dir = np.eye(4)
    near_same_dir[0, 3] = 0.3
    pool = np.stack([turned, near_same_dir])
    assert select_source_views(base, pool, 1).tolist() == [1]


def test_sampling_deterministic_and_varies_density():
    poses = circle_poses(40)
    a = [sample_source_views(poses[0], poses, 6, np.random.default_rng(7), exclude=0) for _ in range(3)]
    b = [sample_source_views(poses[0], poses, 6, np.random.default_rng(7), exclude=0) for _ in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    rng = np.random.default_rng(3)
    draws = [sample_source_views(poses[0], poses, 6, rng, exclude=0, k_max=18) for _ in range(50)]
    assert all(0 not in d and len(set(d.tolist())) == 6 for d in draws)
    assert len({tuple(d) for d in draws}) > 10  # randomised k and choice
    assert max(max(d) for d in draws) > 6  # sometimes sparser than the 6 nearest
    assert np.array_equal(sample_source_views(poses[0], poses, 6, 11, exclude=0),
                          sample_source_views(poses[0], poses, 6, 11, exclude=0))


def _arrays(n=6, h=12, w=16):
    rng = np.random.default_rng(0)
    return SceneArrays(name="t", frame_ids=np.arange(n), colors=rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
                       depths=rng.uniform(1, 3, (n, h, w)).astype(np.float32),
                       labels=rng.integers(0, 20, (n, h, w)).astype(np.uint8), poses=circle_poses(n).astype(np.float32),
                       intrinsics=np.array([[10, 0, 7.5], [0, 10, 5.5], [0, 0, 1]], np.float32),
                       intrinsics_depth=np.array([[10, 0, 7.5], [0, 10, 5.5], [0, 0, 1]], np.float32), near=0.5, far=4.0)


def test_build_ray_batch_gathers_right_pixels():
    sc = _arrays()
    pix = np.array([0, 17, 12 * 16 - 1])
    b = build_ray_batch(sc, 2, np.array([1, 3]), pix)
    assert isinstance(b, RayBatch) and b.num_rays == 3 and b.num_sources == 2
    assert b.uv[1].tolist() == [1.0, 1.0]  # pixel 17 = row 1, col 1
    assert b.labels[2].item() == sc.labels[2, 11, 15]
    assert torch.allclose(b.colors[1], torch.tensor(sc.colors[2, 1, 1] / 255.0, dtype=torch.float32))
    assert b.depths[0].item() == pytest.approx(float(sc.depths[2, 0, 0]))
    assert b.source_images.shape == (2, 3, 12, 16) and b.source_images.dtype == torch.float32
    assert b.source_K.shape == (2, 3, 3) and b.labels.dtype == torch.int64
    moved = b.to("cpu")
    assert moved.uv.device.type == "cpu" and moved.near == 0.5


def test_sampler_deterministic_and_excludes_query():
    sc = _arrays()
    s1, s2 = RayBatchSampler([sc], num_rays=64, num_sources=3, seed=5), RayBatchSampler([sc], num_rays=64, num_sources=3, seed=5)
    for _ in range(5):
        a, b = s1.sample(), s2.sample()
        assert a.query_index == b.query_index and torch.equal(a.uv, b.uv)
        assert torch.equal(a.source_indices, b.source_indices)
        assert a.query_index not in a.source_indices.tolist()
