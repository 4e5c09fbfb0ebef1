"""Depth-guided S-Ray: target depth from keyframe depth (z-buffer splat + fusion), the depth-guided sampler,
and rendering / training with it. Tiny sizes throughout (2 shared CPU cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sray_ros import geometry as G
from sray_ros.model import SRay, SRayConfig, render_rays, render_view
from sray_ros.model.samplers import DepthGuidedSampler, HierarchicalSampler, resolve_sampling
from sray_ros.model.surface import SurfaceConfig, splat_depth, surface_for_rays, surface_from_sources
from sray_ros.train.losses import sray_loss

torch.set_num_threads(1)

# --------------------------------------------------------------------------------------------------
# a box scene: a wall at z = 4 and a box [-0.4, 0.4] x [-0.3, 0.3] x [2.2, 2.8], ray-cast exactly
# --------------------------------------------------------------------------------------------------
H, W = 60, 80
K_BOX = G.intrinsics_matrix(70.0, 70.0, 39.5, 29.5)
BOX_LO = torch.tensor([-0.4, -0.3, 2.2])
BOX_HI = torch.tensor([0.4, 0.3, 2.8])
WALL_Z = 4.0


def camera(x: float, y: float = 0.0) -> torch.Tensor:
    return G.look_at(torch.tensor([x, y, 0.0]), torch.tensor([0.0, 0.0, 3.0]), up=torch.tensor([0.0, -1.0, 0.0]))


def cast(c2w: torch.Tensor, K: torch.Tensor = K_BOX, h: int = H, w: int = W) -> torch.Tensor:
    """Exact z-depth [h, w] of the box scene (slab test for the box, plane for the wall)."""
    o, d = G.generate_rays(K, c2w, G.pixel_grid(h, w))
    inv = 1.0 / d
    t0, t1 = (BOX_LO - o) * inv, (BOX_HI - o) * inv
    t_near = torch.minimum(t0, t1).amax(-1)
    t_far = torch.maximum(t0, t1).amin(-1)
    hit = (t_far >= t_near) & (t_near > 0)
    t_wall = (WALL_Z - o[:, 2]) / d[:, 2]
    t = torch.where(hit, t_near, t_wall)
    return t.view(h, w)  # directions have camera-z = 1: t is the z-depth


SOURCES = [camera(-0.5, 0.1), camera(0.5, -0.1)]


def source_stack():
    return torch.stack([cast(c) for c in SOURCES]), K_BOX.expand(2, 3, 3), torch.stack(SOURCES)


def seen_by_sources(target: torch.Tensor, K_t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[h, w] True where the target's true surface point is visible in at least one source depth map."""
    gt = cast(target, K_t, h, w)
    pts = G.backproject_depth(gt, K_t, target)
    seen = torch.zeros(h * w, dtype=torch.bool)
    for c2w in SOURCES:
        uv, z, ok = G.project_with_validity(pts, K_BOX, G.invert_pose(c2w), H, W)
        src = cast(c2w)
        col, row = uv[:, 0].round().long().clamp(0, W - 1), uv[:, 1].round().long().clamp(0, H - 1)
        seen |= ok & ((src[row, col] - z).abs() <= 0.01 * z)
    return seen.view(h, w)


def depth_edges(depth: torch.Tensor, rel: float = 0.05) -> torch.Tensor:
    """[h, w] True within one pixel of a depth discontinuity."""
    pad = torch.nn.functional.pad(depth[None, None], (1, 1, 1, 1), mode="replicate")
    nb = torch.nn.functional.unfold(pad, 3).view(9, *depth.shape)
    return ((nb - depth).abs() > rel * depth).any(0)


def test_splat_of_box_scene_reproduces_target_depth_and_marks_holes():
    depths, Ks, c2ws = source_stack()
    # a target between the sources with a wider field of view: its border sees what no source saw
    K_t = G.intrinsics_matrix(45.0, 45.0, 39.5, 29.5)
    target = camera(0.1, 0.0)
    gt = cast(target, K_t)
    surf = surface_from_sources(depths, Ks, c2ws, K_t, target, H, W)
    seen = seen_by_sources(target, K_t, H, W)
    assert 0.3 < seen.float().mean() < 0.95  # both visible parts and holes exist
    rel = (surf.depth - gt).abs() / gt
    interior = seen & ~depth_edges(gt)
    assert surf.valid[interior].float().mean() >= 0.99
    assert (rel[interior & surf.valid] < 0.01).float().mean() >= 0.99, rel[interior & surf.valid].max()
    # at depth edges too, most visible pixels are right
    assert (rel[seen & surf.valid] < 0.01).float().mean() >= 0.95
    # holes: pixels further than the hole-filling reach from anything a source saw stay unknown
    far_from_seen = ~torch.nn.functional.max_pool2d(seen[None, None].float(), 7, 1, 3)[0, 0].bool()
    assert far_from_seen.sum() > 100
    assert not surf.valid[far_from_seen].any()
    assert (surf.depth[~surf.valid] == 0).all() and (surf.confidence[~surf.valid] == 0).all()
    # where both sources agree the confidence is higher than where only one view saw the surface
    zbuf = splat_depth(depths, Ks, c2ws, K_t, target, H, W)
    both = torch.isfinite(zbuf).all(0) & ~depth_edges(gt)
    one = (torch.isfinite(zbuf).sum(0) == 1) & ~depth_edges(gt)
    assert both.any() and one.any()
    assert surf.confidence[both].mean() > surf.confidence[one].mean()


def test_surface_for_rays_matches_the_view_map():
    depths, Ks, c2ws = source_stack()
    target = camera(0.0, 0.05)
    view = surface_from_sources(depths, Ks, c2ws, K_BOX, target, H, W)
    uv = torch.tensor([[10.0, 5.0], [39.6, 29.4], [79.0, 59.0], [0.2, 58.8]])
    rays = surface_for_rays(depths, Ks, c2ws, K_BOX, target, H, W, uv)
    cols, rows = uv[:, 0].round().long(), uv[:, 1].round().long()
    assert torch.equal(rays.depth, view.depth[rows, cols])
    assert torch.equal(rays.valid, view.valid[rows, cols])


@pytest.mark.parametrize("kind", ["zero", "nan", "inf", "negative", "no_return_65535"])
def test_invalid_source_depth_never_becomes_a_surface(kind):
    depths, Ks, c2ws = source_stack()
    bad = np.zeros((H, W), bool)
    bad[10:50, 20:60] = True  # a block of invalid depth in every source
    if kind == "no_return_65535":
        raw = (depths.numpy() * 1000).round().astype(np.uint16)
        raw[:, bad] = 65535
        depths = torch.from_numpy(np.stack([G.depth_from_raw(r) for r in raw]))
    else:
        value = {"zero": 0.0, "nan": float("nan"), "inf": float("inf"), "negative": -2.0}[kind]
        depths = depths.clone()
        depths[:, torch.from_numpy(bad)] = value
    # target = first source: its invalid block must not receive a surface (beyond the fill reach)
    # from itself; the second source sees only part of it, so compare against a source-free estimate
    surf = surface_from_sources(depths[:1], Ks[:1], c2ws[:1], K_BOX, SOURCES[0], H, W)
    inner = torch.zeros(H, W, dtype=torch.bool)
    inner[13:47, 23:57] = True
    assert not surf.valid[inner].any()
    assert torch.isfinite(surf.depth).all() and torch.isfinite(surf.confidence).all()
    both = surface_from_sources(depths, Ks, c2ws, K_BOX, camera(0.0), H, W)
    assert torch.isfinite(both.depth).all()
    assert float(both.depth.max()) <= WALL_Z * 1.1  # nothing at 65.5 m or infinity
    ok = both.valid
    assert (both.depth[ok] > 0).all()


def test_surface_config_rejects_bad_values():
    with pytest.raises(ValueError, match="rel_tol"):
        SurfaceConfig(rel_tol=0.0)
    with pytest.raises(ValueError, match="depths must be"):
        splat_depth(torch.zeros(2, H, W), K_BOX.expand(3, 3, 3), torch.stack(SOURCES + SOURCES[:1]), K_BOX,
                    SOURCES[0], H, W)


# --------------------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distribution", ["gaussian", "stratified"])
@pytest.mark.parametrize("perturb", [False, True])
def test_depth_guided_sampler_returns_k_sorted_samples_inside_the_band(distribution, perturb):
    torch.manual_seed(0)
    sampler = DepthGuidedSampler(num_samples=8, distribution=distribution, band_min=0.02, band_max=0.2)
    depth = torch.rand(500) * 5 + 0.2
    conf = torch.rand(500)
    conf[:10] = 0.0
    conf[10:20] = 1.0
    s = sampler(depth, conf, perturb=perturb)
    assert s.shape == (500, 8)
    assert (s[:, 1:] >= s[:, :-1]).all()
    lo, hi = sampler.band(depth, conf)
    assert (s >= lo[:, None] - 1e-6).all() and (s <= hi[:, None] + 1e-6).all()
    # the band is the stated one: half-width d * (0.02 + (1 - c) * 0.18), at least 2 cm
    half = (depth * (0.02 + (1 - conf) * 0.18)).clamp_min(0.02)
    assert torch.allclose(hi - depth, half, atol=1e-6)
    # the band narrows as confidence grows
    lo1, hi1 = sampler.band(torch.full((2,), 3.0), torch.tensor([0.2, 0.9]))
    assert (hi1 - lo1)[1] < (hi1 - lo1)[0]
    if distribution == "gaussian" and not perturb:
        # symmetric around the target depth, denser near it than at the band's ends
        mid = s.mean(-1)
        assert torch.allclose(mid, (lo + hi) / 2, atol=1e-4)
        gaps = s[:, 1:] - s[:, :-1]
        assert (gaps[:, 3] < gaps[:, 0]).all()


def test_depth_guided_sampler_uniform_mix_and_bad_settings():
    sampler = DepthGuidedSampler(num_samples=6, num_uniform=3)
    depth = torch.tensor([1.0, 2.5])
    s = sampler(depth, torch.ones(2), torch.full((2,), 0.5), torch.full((2,), 6.0))
    assert s.shape == (2, 9) and (s[:, 1:] >= s[:, :-1]).all()
    lo, hi = sampler.band(depth, torch.ones(2))
    inside = (s >= lo[:, None]) & (s <= hi[:, None])
    assert (inside.sum(-1) >= 6).all()
    with pytest.raises(ValueError, match="near and far"):
        sampler(depth, torch.ones(2))
    with pytest.raises(ValueError, match="distribution"):
        DepthGuidedSampler(distribution="beta")
    with pytest.raises(ValueError, match="num_samples"):
        DepthGuidedSampler(num_samples=1)
    with pytest.raises(ValueError, match="sampling must be"):
        resolve_sampling("surface", True)
    assert resolve_sampling("auto", True) == "depth_guided" and resolve_sampling("auto", False) == "hierarchical"
    with pytest.raises(ValueError, match="sampling must be"):
        SRayConfig(sampling="guided")


def test_hierarchical_sampler_matches_the_previous_sampling():
    near, far = torch.full((4,), 0.5), torch.full((4,), 6.0)
    hs = HierarchicalSampler(16, 8, True)
    coarse = hs.coarse(near, far)
    assert torch.allclose(coarse, G.sample_inverse_depth(near, far, 16))
    w = torch.rand(4, 16)
    fine = hs.fine(coarse, w)
    assert fine.shape == (4, 24) and (fine[:, 1:] >= fine[:, :-1]).all()
    assert hs.samples_per_ray == 24


# --------------------------------------------------------------------------------------------------
# rendering and training with depth guidance (the toy plane of test_model: z = 2, two classes)
# --------------------------------------------------------------------------------------------------
from test_model import K_TOY, H as TH, W as TW, render_plane, toy_camera, toy_images, toy_two_view_setup  # noqa: E402


def test_depth_guided_render_follows_the_target_depth_and_surface_semantics_option():
    torch.manual_seed(0)
    cfg = SRayConfig.tiny(num_classes=3)
    model = SRay(cfg).eval()
    poses = [toy_camera(-0.3), toy_camera(0.3)]
    images = toy_images(poses)
    depths = torch.stack([render_plane(c)[4].view(TH, TW) for c in poses])
    src = model.encode_sources(images, K_TOY.expand(2, 3, 3), torch.stack(poses), depths)
    target = toy_camera(0.05, 0.05)
    K_small = G.scale_intrinsics(K_TOY, 0.25, 0.25)
    gt = render_plane(target, G.pixel_grid(12, 16).mul(4).add(1.5))[4].view(12, 16)
    for mode in ("volume", "surface"):
        out = render_view(model, src, K_small, target, 12, 16, sampling="auto", surface_semantics=mode)
        assert out.sampling == "depth_guided" and out.target_depth is not None
        ok = out.target_depth > 0
        assert ok.float().mean() > 0.9
        # whatever the (untrained) density, a depth-guided depth stays inside the band around the surface
        assert ((out.depth[ok] - gt[ok]).abs() / gt[ok]).max() < 0.25
        assert torch.isfinite(out.rgb).all() and out.labels.shape == (12, 16)
    # without source depth, auto is hierarchical; depth_guided samples around the coarse pass's depth
    rgb_only = model.encode_sources(images, K_TOY.expand(2, 3, 3), torch.stack(poses))
    out_h = render_view(model, rgb_only, K_small, target, 12, 16, near=1.0, far=4.0)
    assert out_h.sampling == "hierarchical"
    out_c = render_view(model, rgb_only, K_small, target, 12, 16, near=1.0, far=4.0, sampling="depth_guided")
    assert out_c.sampling == "depth_guided" and (out_c.target_depth >= 1.0 - 1e-4).all()
    assert ((out_c.depth >= 0.8) & (out_c.depth <= 4.0 * 1.25)).all()


def _overfit(sampling: str, steps: int = 120) -> tuple[float, float, float]:
    _, model, images, Ks, c2ws, (o_all, d_all, rgb_all, lab_all, t_all) = toy_two_view_setup()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(steps):
        idx = torch.randint(0, o_all.shape[0], (64,), generator=gen)
        src = model.encode_sources(images, Ks, c2ws)
        kw = dict(sampling="depth_guided", target_depth=t_all[idx]) if sampling == "depth_guided" else {}
        res = render_rays(model, src, o_all[idx], d_all[idx], 1.2, 3.5, perturb=True, **kw)
        loss = sray_loss(res, lab_all[idx], rgb_all[idx])
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        # score the final pass only (hierarchical has a coarse pass too)
        best = res.best
        history.append((float(torch.nn.functional.cross_entropy(best.logits.detach(), lab_all[idx])),
                        float(((best.rgb.detach() - rgb_all[idx]) ** 2).mean()),
                        float((best.logits.argmax(-1) == lab_all[idx]).float().mean())))
    first = np.mean(history[:10], 0)
    last = np.mean(history[-10:], 0)
    assert last[0] * 5 <= first[0], (sampling, first, last)
    return tuple(last)


def test_with_exact_depth_a_tiny_model_overfits_as_well_as_hierarchical():
    ce_h, mse_h, acc_h = _overfit("hierarchical")
    ce_d, mse_d, acc_d = _overfit("depth_guided")
    assert acc_d >= acc_h - 0.03, (acc_d, acc_h)
    assert ce_d <= 1.5 * ce_h + 0.02, (ce_d, ce_h)
    assert mse_d <= 1.5 * mse_h + 0.002, (mse_d, mse_h)


# --------------------------------------------------------------------------------------------------
# depth metrics, strict JSON, training and evaluation with depth guidance
# --------------------------------------------------------------------------------------------------
def test_depth_errors_known_values_and_invalid_pixels():
    from sray_ros.train.metrics import DepthErrors

    errs = DepthErrors()
    gt = torch.tensor([1.0, 2.0, 4.0, 0.0, float("nan"), 2.0])
    pred = torch.tensor([1.1, 2.0, 2.0, 5.0, 3.0, float("nan")])
    errs.update(pred, gt)
    s = errs.summary()
    # valid GT: 1, 2, 4, 2 (4 pixels); usable predictions on the first three
    assert s["depth_coverage"] == pytest.approx(3 / 4)
    assert s["depth_abs_rel"] == pytest.approx((0.1 + 0.0 + 0.5) / 3)
    assert s["depth_rmse"] == pytest.approx(((0.01 + 0 + 4.0) / 3) ** 0.5)
    assert s["depth_delta1"] == pytest.approx(2 / 3)  # 4 -> 2 is a factor 2
    empty = DepthErrors().summary()
    assert all(v != v for k, v in empty.items() if k != "depth_coverage")


def test_strict_json_writes_null_for_non_finite():
    import json

    from sray_ros.train.metrics import strict_json

    data = {"a": float("nan"), "b": [1.0, float("inf"), np.float32("nan")], "c": {"d": -float("inf"), "e": 2},
            "f": np.int64(3)}
    text = json.dumps(strict_json(data), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.0, None, None], "c": {"d": None, "e": 2}, "f": 3}


def test_depth_guided_training_step_with_depth_loss(synthetic_mini_set):
    from test_train import _tiny_setup

    from sray_ros.train.trainer import Trainer

    model, label_set, sampler, _ = _tiny_setup(synthetic_mini_set)
    trainer = Trainer(model, label_set.to_dict(), sampler, max_steps=10, sampling="depth_guided",
                      depth_loss_weight=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = [trainer.train_step() for _ in range(2)]
    assert all(s.depth_guided for s in stats)
    assert all(np.isfinite(s.loss) and np.isfinite(s.depth_loss) and s.depth_loss > 0 for s in stats)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the mix: with fraction 0 every step is hierarchical
    mixed = Trainer(model, label_set.to_dict(), sampler, max_steps=10, sampling="auto", depth_guided_fraction=0.0)
    assert not mixed.train_step().depth_guided
    with pytest.raises(ValueError, match="sampling must be"):
        Trainer(model, label_set.to_dict(), sampler, sampling="guided")


def test_eval_cli_reports_depth_metrics_for_each_mode_as_strict_json(synthetic_mini_set, tmp_path):
    import json

    from test_train import _tiny_setup

    from sray_ros.train import evaluate
    from sray_ros.train.trainer import Trainer

    model, label_set, sampler, _ = _tiny_setup(synthetic_mini_set)
    Trainer(model, label_set.to_dict(), sampler, max_steps=10,
            train_config={"width": 40, "height": 30}).save(tmp_path / "m.pt")
    results = {}
    for mode, depth_flag in (("hierarchical", "--keyframe-depth"), ("depth_guided", "--keyframe-depth"),
                             ("depth_guided", "--no-keyframe-depth")):
        out = tmp_path / f"eval_{mode}_{depth_flag}"
        code = evaluate.main(["--checkpoint", str(tmp_path / "m.pt"), "--data", str(synthetic_mini_set / "test"),
                              "--out", str(out), "--num-sources", "4", "--holdout-every", "8", "--max-views", "1",
                              "--sampling", mode, depth_flag, "--num-panels", "0"])
        assert code == 0
        text = (out / "metrics.json").read_text()
        assert "NaN" not in text and "Infinity" not in text
        report = json.loads(text)
        assert report["sampling"] == mode
        overall = report["overall"]
        for key in ("depth_abs_rel", "depth_rmse", "depth_delta1", "depth_coverage"):
            assert key in overall and overall[key] is not None
        results[(mode, depth_flag)] = overall
    # an untrained model's depth is only right where it samples around the keyframes' depth
    assert results[("depth_guided", "--keyframe-depth")]["depth_abs_rel"] < 0.1
    assert (results[("depth_guided", "--keyframe-depth")]["depth_abs_rel"]
            < results[("hierarchical", "--keyframe-depth")]["depth_abs_rel"])


# --------------------------------------------------------------------------------------------------
# the node's Renderer (plain Python) with and without keyframe depth
# --------------------------------------------------------------------------------------------------
from test_renderer import make_renderer, room, tiny_model  # noqa: E402,F401  (fixtures)


def _fill(renderer, room, with_depth: bool, skip=(8,)):
    from sray_ros.online.keyframes import Frame, KeyframeBuffer

    buffer = KeyframeBuffer(max_keyframes=32, min_translation_m=0.0, min_rotation_deg=0.0, encode_fn=renderer.encode)
    for i in range(room.num_frames):
        if i not in skip:
            frame = Frame(int(1e9 * (i + 1)), room.poses[i].astype(np.float64), room.intrinsics.astype(np.float64),
                          room.colors[i], room.depths[i] if with_depth else None, room.labels[i], "camera")
            assert buffer.consider(frame)[0]
    return buffer


@pytest.mark.parametrize("sampling", ["auto", "depth_guided", "hierarchical"])
@pytest.mark.parametrize("with_depth", [True, False])
def test_renderer_renders_with_and_without_keyframe_depth(room, tiny_model, sampling, with_depth):
    from sray_ros.online.renderer import RenderRequest

    renderer = make_renderer(tiny_model, opacity_threshold=0.0, sampling=sampling)
    snapshot = _fill(renderer, room, with_depth).snapshot()
    assert all((kf.frame.depth is not None) == with_depth for kf in snapshot)
    K_half = G.scale_intrinsics(room.intrinsics.astype(np.float64), 0.5, 0.5)
    result = renderer.render(snapshot, RenderRequest(room.poses[8], K_half, 40, 30, 4))
    assert result.labels.shape == (30, 40) and result.color.shape == (30, 40, 3)
    depth = result.depth
    gt = room.depths[8][::2, ::2]
    ok = np.isfinite(depth) & (gt > 0)
    assert ok.mean() > 0.5
    rel = np.abs(depth[ok] - gt[ok]) / gt[ok]
    if with_depth and sampling != "hierarchical":
        assert np.median(rel) < 0.05, np.median(rel)  # sampled around the fused keyframe depth
    assert np.isfinite(result.color).all()


def test_renderer_rejects_unknown_sampling():
    from sray_ros.online.renderer import Renderer

    with pytest.raises(ValueError, match="sampling must be"):
        Renderer(device="cpu", sampling="guided")
    with pytest.raises(ValueError, match="surface_semantics"):
        Renderer(device="cpu", surface_semantics="max")


def test_surface_semantics_are_the_max_weight_samples_logits():
    from sray_ros.model.render import _pass

    torch.manual_seed(0)
    model = SRay(SRayConfig.tiny(num_classes=4)).eval()
    poses = [toy_camera(-0.3), toy_camera(0.3)]
    src = model.encode_sources(toy_images(poses), K_TOY.expand(2, 3, 3), torch.stack(poses))
    o, d, _, _, t = render_plane(toy_camera(0.0), G.pixel_grid(TH, TW)[::97])
    depths = DepthGuidedSampler(num_samples=6)(t, torch.full_like(t, 0.5))
    with torch.no_grad():
        vol = _pass(model, src, o, d, depths, fine=True, semantics=True)
        surf = _pass(model, src, o, d, depths, fine=True, semantics=True, surface_logits=True)
        points = o[:, None] + d[:, None] * depths[..., None]
        from sray_ros.model.sray import contextual_space

        per_sample = model.field(True)(contextual_space(src, points, d)).logits
    idx = vol.weights.argmax(-1)
    assert torch.allclose(surf.logits, per_sample[torch.arange(len(idx)), idx], atol=1e-5)
    assert not torch.allclose(surf.logits, vol.logits, atol=1e-3)  # the option changes the result
    assert torch.equal(surf.rgb, vol.rgb) and torch.equal(surf.depth, vol.depth)


@pytest.mark.parametrize("batch", [1, 6, 7])
def test_paired_short_sequence_attention_equals_per_sequence_attention(batch):
    import sray_ros.model.attention as A

    gen = torch.Generator().manual_seed(batch)
    q, k, v = (torch.randn(batch, 4, 8, 8, generator=gen) for _ in range(3))
    valid = torch.rand(batch, 8, generator=gen) > 0.4
    valid[0] = False  # a sequence without valid keys: opened up by safe_key_mask
    mask = A.safe_key_mask(valid)
    paired = A.masked_attention(q, k, v, mask)
    single = torch.stack([torch.nn.functional.scaled_dot_product_attention(
        q[i:i + 1], k[i:i + 1], v[i:i + 1], attn_mask=mask[i][None, None, None, :])[0] for i in range(batch)])
    assert torch.allclose(paired, single, atol=1e-5)
    # keys of the partner sequence never leak: changing them leaves this sequence's output unchanged
    if batch >= 2:
        k2, v2 = k.clone(), v.clone()
        k2[1] += 5.0
        v2[1] -= 3.0
        again = A.masked_attention(q, k2, v2, mask)
        assert torch.allclose(again[0], paired[0], atol=1e-5)


@pytest.mark.parametrize("batch", [1, 7])
def test_short_attention_used_on_cuda_equals_the_fused_kernel(batch):
    """The batched-matmul path CUDA takes for short sequences gives the fused kernel's result (run here on
    CPU tensors; the CUDA tests of test_model render whole views through it)."""
    import sray_ros.model.attention as A

    gen = torch.Generator().manual_seed(10 + batch)
    q, k, v = (torch.randn(batch, 4, 8, 16, generator=gen) for _ in range(3))
    valid = torch.rand(batch, 8, generator=gen) > 0.4
    valid[0] = False
    mask = A.safe_key_mask(valid)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    assert torch.allclose(A.short_attention(q, k, v, mask), fused, atol=1e-5)
