"""Fast depth-guided views: adaptive K, depth-guided (joint bilateral) upsampling of an anchor-grid render and
exact re-rendering of the pixels it cannot explain. Tiny sizes (2 shared CPU cores)."""

from __future__ import annotations

import pytest
import torch

from sray_ros import geometry as G
from sray_ros.model import SRay, SRayConfig, render_view
from sray_ros.model.render import render_guided_view
from sray_ros.model.samplers import adaptive_sample_counts
from sray_ros.model.surface import SurfaceDepth
from sray_ros.model.upsample import anchor_axes, joint_weights, refine_mask, upsample
from test_model import K_TOY, H as TH, W as TW, render_plane, toy_camera, toy_images

torch.set_num_threads(1)


def test_adaptive_k_gives_confident_rays_fewer_samples_sorted_inside_their_band():
    cfg = SRayConfig.tiny()
    gen = torch.Generator().manual_seed(0)
    depth = 0.5 + 4.0 * torch.rand(200, generator=gen)
    conf = torch.rand(200, generator=gen)
    conf[:5] = 0.6  # exactly at the threshold: confident
    groups = adaptive_sample_counts(conf, 8, 4, 0.6)
    assert sorted(k for _, k in groups) == [4, 8]
    seen = torch.cat([idx for idx, _ in groups]).sort().values
    assert torch.equal(seen, torch.arange(200))  # every ray exactly once
    for idx, k in groups:
        assert ((conf[idx] >= 0.6) == (k == 4)).all()
        sampler = cfg.depth_guided_sampler(k)
        for perturb in (False, True):
            s = sampler(depth[idx], conf[idx], perturb=perturb)
            assert s.shape == (idx.numel(), k)
            assert (s[:, 1:] >= s[:, :-1]).all()
            lo, hi = sampler.band(depth[idx], conf[idx])
            assert (s >= lo[:, None] - 1e-6).all() and (s <= hi[:, None] + 1e-6).all()
    # off, or not fewer than K: one group with K
    for off in (0, 8, 12):
        (idx, k), = adaptive_sample_counts(conf, 8, off, 0.6)
        assert k == 8 and idx.numel() == 200
    for bad in ((8, 1, 0.6), (1, 0, 0.6), (8, -2, 0.6)):
        with pytest.raises(ValueError):
            adaptive_sample_counts(conf, *bad)


def _step_guide(h: int = 12, w: int = 16, edge: int = 7) -> torch.Tensor:
    guide = torch.full((h, w), 3.0)
    guide[:, :edge] = 1.5  # a near surface left of column `edge`
    return guide


def test_joint_weights_follow_the_full_resolution_depth_edge():
    guide = _step_guide()
    rows, cols = anchor_axes(12, 16, 2)
    assert rows.tolist() == list(range(0, 12, 2)) and cols.tolist() == list(range(0, 16, 2))
    w = joint_weights(guide, rows, cols, depth_sigma=0.03)
    assert torch.allclose(w.weight.sum(-1), torch.ones(12 * 16))
    anchor_depth = guide[rows][:, cols].reshape(-1)
    # every pixel borrows (almost) only from anchors on its own surface
    own = (anchor_depth[w.index] == guide.reshape(-1)[:, None]).float()
    assert ((w.weight * (1 - own)).sum(-1) < 1e-6).all()
    # column 7 (far surface, between anchor columns 6 (near) and 8 (far)) takes column 8 only
    assert torch.allclose(upsample(anchor_depth, w).view(12, 16), guide)
    values = torch.stack([anchor_depth, 2 * anchor_depth], -1)
    assert torch.allclose(upsample(values, w).view(12, 16, 2)[..., 1], 2 * guide)
    assert w.is_anchor.view(12, 16)[rows][:, cols].all() and int(w.is_anchor.sum()) == rows.numel() * cols.numel()
    # an odd scale centres anchors in their cells; a view smaller than the scale still has one anchor
    r3, c3 = anchor_axes(7, 5, 3)
    assert r3.tolist() == [1, 4] and c3.tolist() == [1, 4]
    assert anchor_axes(1, 1, 4)[0].tolist() == [0]


def test_refine_mask_marks_unexplained_pixels_and_label_disagreements_never_anchors():
    guide = _step_guide()
    guide[5, 9] = 0.8  # a thin object no anchor sees
    rows, cols = anchor_axes(12, 16, 2)
    w = joint_weights(guide, rows, cols, 0.03)
    depth_only = refine_mask(w, None, "depth").view(12, 16)
    assert depth_only[5, 9] and int(depth_only.sum()) == 1
    labels = torch.zeros(rows.numel(), cols.numel(), dtype=torch.long)
    labels[:, 5:] = 1  # a class edge on the far wall between anchor columns 8 and 10
    by_label = refine_mask(w, labels.reshape(-1), "labels").view(12, 16)
    assert by_label[5, 9] and by_label[0, 9] and not by_label[0, 11] and not by_label[0, 3]
    assert not (by_label & w.is_anchor.view(12, 16)).any()
    # with a probability margin: only disagreeing pixels whose upsampled top-1 minus top-2 is below it
    margin = torch.full((12 * 16,), 0.9)
    margin.view(12, 16)[0, 9] = 0.1
    by_margin = refine_mask(w, labels.reshape(-1), "labels", margin=margin, max_margin=0.3).view(12, 16)
    assert by_margin[0, 9] and by_margin[5, 9] and not by_margin[1, 9]  # [5, 9]: the depth reason stays
    assert torch.equal(refine_mask(w, labels.reshape(-1), "labels", margin=margin, max_margin=1.0).view(12, 16),
                       by_label)
    assert not refine_mask(w, labels.reshape(-1), "none").any()
    with pytest.raises(ValueError):
        refine_mask(w, labels.reshape(-1), "edges")
    with pytest.raises(ValueError):
        refine_mask(w, None, "labels")


def _toy(prior: str = "none"):
    torch.manual_seed(0)
    cfg = SRayConfig.tiny(num_classes=3, semantic_prior=prior, prior_input_height=32)
    model = SRay(cfg).eval()
    poses = [toy_camera(-0.3), toy_camera(0.3)]
    images = toy_images(poses)
    depths = torch.stack([render_plane(c)[4].view(TH, TW) for c in poses])
    with torch.no_grad():
        src = model.encode_sources(images, K_TOY.expand(2, 3, 3), torch.stack(poses), depths)
    return model, src


@pytest.mark.parametrize("prior", ["none", "resunet"])
def test_fast_view_equals_the_per_pixel_path_at_anchors_and_refined_pixels(prior):
    """Tolerance 1e-4 (the same rays in other chunk sizes: float32 summation order only)."""
    model, src = _toy(prior)
    if prior != "none":
        assert src.priors is not None and model.cfg.prior_weight > 0
    target = toy_camera(0.05, 0.05)
    K = G.scale_intrinsics(K_TOY, 0.25, 0.25)
    h, w = 12, 16
    o, d = G.generate_rays(K, target, G.pixel_grid(h, w))
    depth = render_plane(target, G.pixel_grid(h, w).mul(4).add(1.5))[4].view(h, w)
    depth[3:6, 8:13] *= 0.6  # a nearer patch: a depth edge inside the view
    depth[3, 5] *= 0.5  # a one-pixel object between anchors: rendered exactly
    conf = torch.full((h, w), 0.9)
    conf[:, :5] = 0.3  # adaptive K: two groups
    surf = SurfaceDepth(depth, conf, depth > 0)
    with torch.no_grad():
        exact, n_exact = render_guided_view(model, src, o, d, surf, 1.0, 4.0, 8, 1, 4, "labels", chunk=64)
        fast, n_fast = render_guided_view(model, src, o, d, surf, 1.0, 4.0, 8, 2, 4, "labels", chunk=64)
        plain, _ = render_guided_view(model, src, o, d, surf, 1.0, 4.0, 8, 1, 0, "labels", chunk=64)
    assert n_exact == h * w and n_fast < h * w
    rows, cols = anchor_axes(h, w, 2)
    weights = joint_weights(depth, rows, cols, model.cfg.upsample_depth_sigma)
    anchors = weights.is_anchor
    refined = refine_mask(weights, fast.logits[anchors].argmax(-1), "labels")
    assert n_fast == int(anchors.sum() + refined.sum()) and refined.view(h, w)[3, 5]
    same = anchors | refined
    for name in ("rgb", "acc", "logits"):
        assert torch.allclose(getattr(fast, name)[same], getattr(exact, name)[same], atol=1e-4), name
    fd, ed = fast.depth / fast.acc.clamp_min(1e-6), exact.depth / exact.acc.clamp_min(1e-6)
    assert torch.allclose(fd[same], ed[same], atol=1e-4)
    # upsampled pixels stay on their own surface: depth within 5 % of the exact path everywhere
    assert ((fd - ed).abs() / ed).max() < 0.05
    # two levels (4 -> 2 -> 1): fewer network rays than one level of 2, still on the right surfaces
    with torch.no_grad():
        two, n_two = render_guided_view(model, src, o, d, surf, 1.0, 4.0, 8, 4, 4, "labels", chunk=64)
    assert n_two < n_fast
    d2 = two.depth / two.acc.clamp_min(1e-6)
    # (the untrained field's depth residual varies more over 4 pixels than over 2; a pixel given the other
    # surface's depth would be off by >= 40 %)
    assert ((d2 - ed).abs() / ed).max() < 0.15 and torch.isfinite(two.logits).all()
    # adaptive K changes only the confident rays
    unsure = (conf < 0.6).reshape(-1)
    assert torch.allclose(exact.logits[unsure], plain.logits[unsure], atol=1e-4)
    assert not torch.allclose(exact.logits[~unsure], plain.logits[~unsure], atol=1e-4)


def test_render_view_exact_settings_reproduce_the_per_pixel_render():
    model, src = _toy()
    target = toy_camera(0.05, 0.05)
    K = G.scale_intrinsics(K_TOY, 0.25, 0.25)
    with torch.no_grad():
        old = render_view(model, src, K, target, 12, 16, sampling="depth_guided", view_scale=1,
                          confident_surface_samples=0)
        new = render_view(model, src, K, target, 12, 16, sampling="depth_guided")
    assert old.network_rays == 12 * 16 and 0 < new.network_rays < 12 * 16
    assert torch.isfinite(new.depth).all() and torch.isfinite(new.rgb).all()
    assert new.labels.shape == old.labels.shape == (12, 16)
    assert ((new.depth - old.depth).abs() / old.depth).max() < 0.05
    for bad in (dict(view_scale=0), dict(upsample_refine="edges"), dict(confident_surface_samples=1),
                dict(upsample_refine_margin=1.5)):
        with pytest.raises(ValueError):
            SRayConfig(**bad)


def test_eval_cli_sets_the_fast_view_options_and_rejects_bad_ones(synthetic_mini_set, tmp_path, capsys):
    import json

    from test_train import _tiny_setup

    from sray_ros.train import evaluate
    from sray_ros.train.trainer import Trainer

    model, label_set, sampler, _ = _tiny_setup(synthetic_mini_set)
    Trainer(model, label_set.to_dict(), sampler, max_steps=1,
            train_config={"width": 40, "height": 30}).save(tmp_path / "m.pt")
    base = ["--checkpoint", str(tmp_path / "m.pt"), "--data", str(synthetic_mini_set / "test"), "--num-sources", "4",
            "--holdout-every", "8", "--max-views", "1", "--num-panels", "0", "--sampling", "depth_guided"]
    for bad in (["--view-scale", "0"], ["--confident-surface-samples", "1"]):
        assert evaluate.main(base + ["--out", str(tmp_path / "bad")] + bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("sray-eval: ") and ("view_scale" in err or "confident_surface_samples" in err)
    assert evaluate.main(base + ["--out", str(tmp_path / "ok"), "--view-scale", "3", "--upsample-refine", "depth"]) == 0
    report = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert report["view_scale"] == 3 and report["upsample_refine"] == "depth"
    assert report["confident_surface_samples"] == 0


def test_labelled_sources_with_label_transfer_render_every_pixel():
    """Keyframe labels are per-pixel evidence: a fast view would blur them, so those views take the exact path."""
    from dataclasses import replace

    from sray_ros.model.label_transfer import LabelTransferConfig

    model, src = _toy()
    labels = torch.randint(0, 3, (2, TH, TW), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    labelled = replace(src, labels=labels)
    target = toy_camera(0.05, 0.05)
    K = G.scale_intrinsics(K_TOY, 0.25, 0.25)
    with torch.no_grad():
        plain = render_view(model, labelled, K, target, 12, 16, sampling="depth_guided")
        fused = render_view(model, labelled, K, target, 12, 16, sampling="depth_guided",
                            label_transfer=LabelTransferConfig("depth"))
    assert plain.network_rays < 12 * 16 and fused.network_rays == 12 * 16


def test_render_view_scale_parameter_maps_onto_the_renderer():
    pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from sray_ros.ros.parameters import PARAMETERS, renderer_changes

    assert PARAMETERS["render_view_scale"][0] == 0 and PARAMETERS["max_render_pixels"][0] == 320 * 240
    assert renderer_changes([Parameter("render_view_scale", value=0)]) == {"view_scale": None}  # the model's
    assert renderer_changes([Parameter("render_view_scale", value=1)]) == {"view_scale": 1}
