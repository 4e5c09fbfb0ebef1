"""The node's Renderer and FineTuneJob driven without ROS, on a generated room."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sray_ros.online.keyframes import Frame, Keyframe, KeyframeBuffer
from sray_ros.online.renderer import RenderError, RenderRequest, Renderer


@pytest.fixture(scope="module")
def room(synthetic_mini_set):
    from sray_ros.data.scannet import load_scannet_scene

    folder = next((synthetic_mini_set / "test").glob("test_*"))
    return load_scannet_scene(folder, 80, 60).preload()


@pytest.fixture(scope="module")
def tiny_model():
    from sray_ros.data.label_sets import load_label_set
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay

    torch.manual_seed(0)
    label_set = load_label_set("scannet20")
    return SRay(SRayConfig.tiny(num_classes=label_set.num_classes)).eval(), label_set.to_dict()


def frame_of(room, i) -> Frame:
    return Frame(int(1e9 * (i + 1)), room.poses[i].astype(np.float64), room.intrinsics.astype(np.float64),
                 room.colors[i], room.depths[i], room.labels[i], "camera")


def make_renderer(tiny_model, **kwargs) -> Renderer:
    renderer = Renderer(device="cpu", num_source_views=4, **kwargs)
    renderer.swap(*tiny_model, "tiny")
    return renderer


def fill(renderer, room, skip=(8,)) -> KeyframeBuffer:
    buffer = KeyframeBuffer(max_keyframes=32, min_translation_m=0.0, min_rotation_deg=0.0, encode_fn=renderer.encode)
    for i in range(room.num_frames):
        if i not in skip:
            assert buffer.consider(frame_of(room, i))[0]
    return buffer


def test_render_equals_offline_core_render(room, tiny_model):
    from sray_ros.model.feature_net import SourceViews
    from sray_ros.model.render import near_far_from_sources, render_view

    renderer = make_renderer(tiny_model, opacity_threshold=0.0, use_keyframe_labels=False)
    snapshot = fill(renderer, room).snapshot()
    target = 8
    result = renderer.render(snapshot, RenderRequest(room.poses[target], room.intrinsics, 80, 60, 4))
    assert result.labels.shape == (60, 80) and result.color.shape == (60, 80, 3)
    assert len(result.source_ids) == 4
    # Offline: the core library on the same keyframes and weights.
    model = tiny_model[0]
    by_id = {kf.id: kf for kf in snapshot}
    views = []
    for kf_id in result.source_ids:
        f = by_id[kf_id].frame
        views.append(model.encode_sources(torch.from_numpy(f.rgb).permute(2, 0, 1).float() / 255,
                                          torch.from_numpy(f.K).float(), torch.from_numpy(f.c2w).float(),
                                          torch.from_numpy(f.depth)))
    sources = SourceViews.cat(views)
    near, far = near_far_from_sources(sources, model.cfg.default_near, model.cfg.default_far)
    offline = render_view(model, sources, torch.from_numpy(room.intrinsics).float(),
                          torch.from_numpy(room.poses[target]).float(), 60, 80, near=near, far=far)
    known = result.labels != 255
    assert known.mean() > 0.5
    assert np.array_equal(result.labels[known], offline.labels.numpy()[known])
    assert np.array_equal(result.color, (offline.rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def test_features_are_encoded_once_per_keyframe_and_generation(room, tiny_model):
    renderer = make_renderer(tiny_model)
    calls = []
    original = renderer._encode_with
    renderer._encode_with = lambda handle, frame, previous=None: (calls.append(frame.stamp_ns)
                                                                   or original(handle, frame, previous))
    snapshot = fill(renderer, room).snapshot()
    n = len(calls)
    assert n == len(snapshot)
    request = RenderRequest(room.poses[8], room.intrinsics, 16, 12, 4)
    renderer.render(snapshot, request)
    renderer.render(snapshot, request)
    assert len(calls) == n, "a render re-encoded keyframes"
    # New weights: the sources are re-encoded once, on first use, then cached.
    renderer.swap(*tiny_model, "tiny again")
    renderer.render(snapshot, request)
    assert len(calls) == n + 4
    renderer.render(snapshot, request)
    assert len(calls) == n + 4


@pytest.mark.parametrize("case", ["empty", "oversized", "non_finite", "bad_K", "no_overlap", "no_model"])
def test_render_failures_have_reasons(room, tiny_model, case):
    renderer = make_renderer(tiny_model, max_pixels=80 * 60)
    snapshot = fill(renderer, room).snapshot()
    pose, K, w, h = room.poses[8].astype(np.float64), room.intrinsics.astype(np.float64), 80, 60
    expected = {"empty": "empty", "oversized": "exceeds", "non_finite": "finite", "bad_K": "focal",
                "no_overlap": "overlap", "no_model": "no model"}[case]
    if case == "empty":
        snapshot = ()
    elif case == "oversized":
        w, h = 160, 120
    elif case == "non_finite":
        pose = pose.copy()
        pose[0, 3] = np.inf
    elif case == "bad_K":
        K = K.copy()
        K[0, 0] = 0.0
    elif case == "no_overlap":
        pose = pose.copy()
        pose[:3, 3] += 1000.0 * pose[:3, 2]  # far beyond the room, looking further away
    elif case == "no_model":
        renderer = Renderer(device="cpu")
    with pytest.raises(RenderError, match=expected):
        renderer.render(snapshot, RenderRequest(pose, K, w, h))


def test_unknown_label_where_not_confident(room, tiny_model):
    # S-Ray's own confidence (fused confidence saturates at 1.0 in float32 where label views agree)
    renderer = make_renderer(tiny_model, confidence_threshold=1.0, use_keyframe_labels=False)
    snapshot = fill(renderer, room).snapshot()
    result = renderer.render(snapshot, RenderRequest(room.poses[8], room.intrinsics, 40, 30, 4))
    assert (result.labels == 255).all() and not result.known.any()


def test_swap_keeps_render_in_flight_consistent(room, tiny_model):
    renderer = make_renderer(tiny_model)
    first = renderer.handle
    import copy

    second = renderer.swap(copy.deepcopy(tiny_model[0]), tiny_model[1], "copy")
    assert second.generation == first.generation + 1 and renderer.handle is second
    assert first.model is not second.model  # a render that started with `first` keeps its model object


def test_fine_tune_job_improves_holdout_accuracy(room, tiny_model):
    from sray_ros.online.fine_tuner import FineTuneGoal, FineTuneJob, holdout_miou

    renderer = make_renderer(tiny_model)
    snapshot = fill(renderer, room, skip=()).snapshot()
    job = FineTuneJob(renderer, snapshot, FineTuneGoal(max_steps=30, num_rays=128, num_sources=4))
    assert job.held and not {kf.id for kf in job.held} & {kf.id for kf in job.train}
    before = holdout_miou(renderer, renderer.handle.model, renderer.handle.label_set, job.train, job.held, 4,
                          job.goal.holdout_scale)
    steps = []
    outcome = job.run(steps.append)
    assert outcome.steps_done == 30 and len(steps) == 30
    assert outcome.holdout_miou > before, (before, outcome.holdout_miou)
    assert renderer.handle.model is tiny_model[0], "the job must not swap weights itself"


def test_fine_tune_job_rejects_bad_goals(room, tiny_model):
    from sray_ros.online.fine_tuner import FineTuneError, FineTuneGoal, FineTuneJob

    renderer = make_renderer(tiny_model)
    snapshot = fill(renderer, room).snapshot()
    with pytest.raises(FineTuneError, match="unknown keyframe ids"):
        FineTuneJob(renderer, snapshot, FineTuneGoal(keyframe_ids=[9999]))
    with pytest.raises(FineTuneError, match="at least 2"):
        FineTuneJob(renderer, snapshot[:1], FineTuneGoal())
    with pytest.raises(FineTuneError, match="no model"):
        FineTuneJob(Renderer(device="cpu"), snapshot, FineTuneGoal())


def _yaw(deg: float) -> np.ndarray:
    """Optical-frame camera at the origin turned by ``deg`` about its y axis (down): a pan."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    pose = np.eye(4)
    pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    return pose


def test_render_from_sources_that_barely_see_the_target_says_so(tiny_model):
    # Three keyframes at the origin looking within +-5 deg of +z; the target, at the same centre, pans
    # 50 deg away. Same centre: a target pixel is seen by a source whatever its rendered depth, so the
    # overlap has an exact value, the fraction of target rays inside some source image (0.338 here).
    renderer = make_renderer(tiny_model, opacity_threshold=0.0)
    K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
    rng = np.random.default_rng(0)
    buffer = KeyframeBuffer(max_keyframes=8, min_translation_m=0.0, min_rotation_deg=0.0, encode_fn=renderer.encode)
    for n, deg in enumerate((-5.0, 0.0, 5.0)):
        assert buffer.consider(Frame(int(1e9 * (n + 1)), _yaw(deg), K, rng.integers(0, 256, (60, 80, 3), np.uint8),
                                     np.full((60, 80), 2.0, np.float32)))[0]
    target = _yaw(50.0)
    result = renderer.render(buffer.snapshot(), RenderRequest(target, K, 80, 60, 3))
    v, u = np.mgrid[0:60, 0:80]
    rays = np.stack([(u - 39.5) / 60.0, (v - 29.5) / 60.0, np.ones_like(u, float)], -1) @ target[:3, :3].T
    seen = np.zeros((60, 80), bool)
    for deg in (-5.0, 0.0, 5.0):
        cam = rays @ _yaw(deg)[:3, :3]  # R^T d for row vectors
        us, vs = 60.0 * cam[..., 0] / cam[..., 2] + 39.5, 60.0 * cam[..., 1] / cam[..., 2] + 29.5
        seen |= (cam[..., 2] > 0) & (us >= -0.5) & (us < 79.5) & (vs >= -0.5) & (vs < 59.5)
    assert seen.mean() == pytest.approx(0.338, abs=0.001)
    assert result.source_overlap == pytest.approx(seen.mean(), abs=2 / seen.size)
    assert result.source_distance_m == 0.0
    assert "barely see the target" in result.coverage_warning and f"{100 * seen.mean():.0f} %" in result.coverage_warning
    assert np.all(result.labels[~seen] == 255)

    covered = renderer.render(buffer.snapshot(), RenderRequest(_yaw(0.0), K, 80, 60, 3))
    assert covered.source_overlap == 1.0 and covered.coverage_warning == ""


def test_source_distance_is_to_the_nearest_source(tiny_model):
    poses = [np.eye(4) for _ in range(3)]
    for pose, x in zip(poses, (0.7, -0.5, 2.0)):
        pose[0, 3] = x
    keyframes = [Keyframe(i, Frame(0, p, np.eye(3), np.zeros((2, 2, 3), np.uint8)), None) for i, p in enumerate(poses)]
    distance, overlap, warning = Renderer.source_coverage(np.ones((2, 2), bool), np.eye(4), keyframes)
    assert (distance, overlap, warning) == (0.5, 1.0, "")
    distance, overlap, warning = Renderer.source_coverage(np.eye(2, dtype=bool) & False, np.eye(4), keyframes)
    assert overlap == 0.0 and "nearest source 0.50 m away" in warning


def unlabelled(frame: Frame) -> Frame:
    return Frame(frame.stamp_ns, frame.c2w, frame.K, frame.rgb, frame.depth, None, frame.frame_id)


def accuracy(pred: np.ndarray, gt: np.ndarray) -> float:
    valid = gt != 255
    return float((pred[valid] == gt[valid]).mean())


def test_keyframe_labels_are_transferred_to_a_view_at_a_labelled_keyframe(room, tiny_model):
    # An untrained model: S-Ray alone is near chance, so the rendered labels can only be right through the
    # keyframe's own labels (sampled around its own depth, nearest pixel, depth-tested).
    renderer = make_renderer(tiny_model)
    snapshot = fill(renderer, room, skip=()).snapshot()
    target = 8
    result = renderer.render(snapshot, RenderRequest(room.poses[target], room.intrinsics, 80, 60, 4))
    target_id = next(kf.id for kf in snapshot if kf.stamp_ns == frame_of(room, target).stamp_ns)
    assert target_id in result.source_ids and target_id in result.label_source_ids
    gt = room.labels[target]
    fused, alone = accuracy(result.raw_labels, gt), accuracy(result.sray_labels, gt)
    assert fused >= 0.95, (fused, alone)
    assert alone < 0.5, alone
    covered = result.label_coverage >= 1.0
    assert covered.mean() > 0.9
    # Confidence reflects the evidence: where covered views agree, the fused label is confident (a posterior
    # probability: a surface only one keyframe labels stays below one agreeing with several).
    agree = covered & (result.label_agreement > 0.99)
    assert agree.mean() > 0.5 and result.confidence[agree].min() > 0.9 and result.confidence[agree].mean() > 0.99
    assert result.label_agreement.min() >= 0.0 and result.label_agreement.max() <= 1.0 + 1e-6


def test_without_labels_or_when_off_the_render_is_s_ray_alone(room, tiny_model):
    # every pixel rendered (view_scale 1): labelled sources always take that path, so the S-Ray labels of the
    # three renders compare like for like
    renderer = make_renderer(tiny_model, opacity_threshold=0.0, view_scale=1)
    snapshot = fill(renderer, room).snapshot()
    request = RenderRequest(room.poses[8], room.intrinsics, 40, 30, 4)
    with_labels = renderer.render(snapshot, request)
    renderer.configure(use_keyframe_labels=False)
    off = renderer.render(snapshot, request)
    assert off.sray_labels is None and off.label_coverage is None and off.label_source_ids == []
    assert np.array_equal(off.raw_labels, with_labels.sray_labels)  # opacity_threshold 0: every pixel known
    renderer.configure(use_keyframe_labels=True)
    bare = KeyframeBuffer(max_keyframes=32, min_translation_m=0.0, min_rotation_deg=0.0, encode_fn=renderer.encode)
    for i in range(room.num_frames):
        if i != 8:
            bare.consider(unlabelled(frame_of(room, i)))
    none = renderer.render(bare.snapshot(), request)
    assert none.sray_labels is None
    assert np.array_equal(none.raw_labels, off.raw_labels)


def test_unlabelled_geometry_sources_take_labels_from_the_nearest_labelled_keyframes(room, tiny_model):
    renderer = make_renderer(tiny_model)
    target = 8
    order = renderer.select_sources(tuple(Keyframe(i, frame_of(room, i), None) for i in range(room.num_frames)
                                          if i != target), room.poses[target], room.num_frames)
    nearest = {kf.id for kf in order[:4]}  # the geometry sources: unlabelled
    buffer = KeyframeBuffer(max_keyframes=32, min_translation_m=0.0, min_rotation_deg=0.0, encode_fn=renderer.encode)
    for i in range(room.num_frames):
        if i != target:
            buffer.consider(frame_of(room, i) if i not in nearest else unlabelled(frame_of(room, i)))
    snapshot = buffer.snapshot()
    labelled_ids = {kf.id for kf in snapshot if kf.frame.labels is not None}
    result = renderer.render(snapshot, RenderRequest(room.poses[target], room.intrinsics, 80, 60, 4))
    assert not set(result.source_ids) & labelled_ids
    assert result.label_source_ids and set(result.label_source_ids) <= labelled_ids
    # The nearest labelled ones, in the renderer's own view-selection order.
    expected = renderer.select_sources(tuple(kf for kf in snapshot if kf.id in labelled_ids), room.poses[target], 4)
    assert result.label_source_ids == [kf.id for kf in expected]
    gt = room.labels[target]
    covered = result.label_coverage > 0
    assert covered.mean() > 0.3
    fused, alone = accuracy(result.raw_labels, gt), accuracy(result.sray_labels, gt)
    # Measured with the untrained tiny model: fused 0.43, S-Ray alone 0.03, 51 % of pixels covered (farther
    # label views see less of the target); the margin asks for most of the covered pixels to be right.
    assert fused > alone + 0.2, (fused, alone, covered.mean())


def test_view_scale_setting_reaches_the_render_and_bad_values_are_refused(room, tiny_model):
    with pytest.raises(ValueError, match="view_scale"):
        make_renderer(tiny_model, view_scale=0)
    renderer = make_renderer(tiny_model, opacity_threshold=0.0, use_keyframe_labels=False, view_scale=1)
    snapshot = fill(renderer, room).snapshot()
    request = RenderRequest(room.poses[8], room.intrinsics, 80, 60, 4)
    exact = renderer.render(snapshot, request)
    with pytest.raises(ValueError, match="view_scale"):
        renderer.configure(view_scale=0)
    assert renderer.view_scale == 1  # a refused change leaves the setting
    renderer.configure(view_scale=None)  # the model's (fast) default
    fast = renderer.render(snapshot, request)
    renderer.configure(view_scale=2)
    coarse = renderer.render(snapshot, request)
    # the fast renders (the model's view_scale 4, then 2) differ from the per-pixel one on few pixels
    assert tiny_model[0].cfg.view_scale == 4
    same = (exact.labels == fast.labels).mean()
    assert 0.9 < same and not np.array_equal(exact.color, fast.color)
    assert (exact.labels == coarse.labels).mean() > 0.8


def test_fine_tuning_trains_on_pooled_labels_and_leaves_out_confidence_zero(room, tiny_model):
    """Keyframes whose labels carry 90 % pixel noise train on the labels the renderer stored for them (pooled
    once, when encoded): far closer to the clean labels than what arrived. Pixels of segmenter confidence 0
    supervise nothing (255), with or without pooling. A fine-tuning job stacks exactly those labels."""
    from dataclasses import replace as dc_replace

    from sray_ros.data.label_noise import LabelCorruption
    from sray_ros.online.fine_tuner import FineTuneGoal, FineTuneJob

    noisy = LabelCorruption(pixel_noise=0.9, seed=0).apply(room.labels, 20)
    renderer = make_renderer(tiny_model)
    buffer = KeyframeBuffer(max_keyframes=32, min_translation_m=0.0, min_rotation_deg=0.0, encode_fn=renderer.encode)
    for i in range(room.num_frames):
        assert buffer.consider(dc_replace(frame_of(room, i), labels=noisy[i]))[0]
    snapshot = buffer.snapshot()
    known = room.labels != 255
    stored = np.stack([renderer.stored_labels(kf) for kf in snapshot])
    assert (noisy == room.labels)[known].mean() < 0.15
    assert (stored == room.labels)[known].mean() > 0.6, (stored == room.labels)[known].mean()
    job = FineTuneJob(renderer, snapshot, FineTuneGoal(max_steps=1, num_rays=16, num_sources=4))
    by_id = {kf.id: renderer.stored_labels(kf) for kf in snapshot}
    assert all(np.array_equal(job.scene.labels[j], by_id[int(i)]) for j, i in enumerate(job.scene.frame_ids))

    conf = np.ones(room.labels.shape[1:], np.float32)
    conf[:, :20] = 0.0
    for pooling in (None, renderer.label_pooling):
        r = Renderer(device="cpu", num_source_views=4, label_pooling=pooling)
        r.swap(*tiny_model, "tiny")
        b = KeyframeBuffer(max_keyframes=4, min_translation_m=0.0, min_rotation_deg=0.0, encode_fn=r.encode)
        assert b.consider(dc_replace(frame_of(room, 0), label_confidence=conf))[0]
        out = r.stored_labels(b.snapshot()[0])
        assert (out[:, :20] == 255).all() and (out[:, 25:] == room.labels[0][:, 25:]).all()


def test_prior_up_is_set_on_every_model_the_renderer_is_given():
    """The node's prior_up parameter: the up direction of the world frame for the semantic prior's height
    cue reaches each model swapped in; a bad value is refused with what is expected."""
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay
    from sray_ros.ros.parameters import parse_prior_up

    model = SRay(SRayConfig.tiny(semantic_prior="resunet", prior_channels=16, prior_input_height=64, num_classes=5))
    assert model.cfg.prior_up == (0.0, 0.0, 1.0)
    renderer = Renderer(device="cpu", prior_up=(0.0, 1.0, 0.0))
    renderer.swap(model, {"name": "five", "class_names": list("abcde"), "colors": [[i * 40, 0, 0] for i in range(5)],
                          "ignore_index": 255}, "test")
    assert renderer.handle.model.cfg.prior_up == (0.0, 1.0, 0.0)
    assert parse_prior_up("0, -1, 0") == (0.0, -1.0, 0.0)
    for bad in ("0,0", "0,0,0", "a,b,c", "nan,0,1", ""):
        with pytest.raises(ValueError, match="three finite numbers"):
            parse_prior_up(bad)
    with pytest.raises(ValueError, match="prior_up must be three finite numbers"):
        Renderer(device="cpu", prior_up=(0.0, 0.0, 0.0))


def test_a_bad_prior_up_parameter_stops_start_up_with_one_line():
    from sray_ros.ros.parameters import PARAMETERS, ParameterError, check_choices

    values = {name: default for name, (default, _, _) in PARAMETERS.items()}
    check_choices(values.__getitem__)  # the defaults pass
    values["prior_up"] = "0,0"
    with pytest.raises(ParameterError, match=r"parameter 'prior_up' = '0,0': expected three finite numbers"):
        check_choices(values.__getitem__)
