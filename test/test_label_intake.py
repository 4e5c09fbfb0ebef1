"""Label images through the node's keyframe intake (KeyframeIntake -> intake edge -> LabelIntake -> build_frame ->
KeyframeBuffer), without DDS: a label map converts exactly the listed ids and counts the rest, ids outside the
label set are counted (the frame kept), a labels/confidence of 0 removes a pixel's vote in the render, bad
confidence is ignored with the reason, and a bad label_map is refused naming the problem."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import yaml

from sray_ros.data.label_sets import load_label_set
from sray_ros.online.intake import IntakeRejection
from sray_ros.online.keyframes import KeyframeBuffer
from sray_ros.online.label_intake import LabelIntake, LabelMapError

pytest.importorskip("rclpy")

SCANNET = load_label_set("scannet20")
W, H = 40, 30
K = np.array([[40.0, 0, 19.5], [0, 40.0, 14.5], [0, 0, 1]])
DESK, BED, CHAIR = (SCANNET.class_names.index(n) for n in ("desk", "bed", "chair"))


def _header(stamp_s: float, frame_id: str = "camera"):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=int(stamp_s), nanosec=int(round((stamp_s % 1) * 1e9))), frame_id=frame_id)


def _raw(image):
    from rclpy.serialization import serialize_message

    from sray_ros.ros.intake_edge import RawImage

    return RawImage(bytes(serialize_message(image)), image.header.frame_id)


def matched_set(stamp_s: float, labels: np.ndarray, confidence=None, depth: float | None = 2.0,
                labels_frame: str = "camera", rgb_seed: int = 0):
    """A synchronised set as the node's synchroniser hands it over: serialized images, CameraInfo messages.
    ``labels`` uint8 (mono8) or uint16 (mono16); ``confidence`` a float array (32FC1) or a ready Image."""
    from sray_ros.online.sync import MatchedSet
    from sray_ros.ros.image_conversion import float_to_image, make_camera_info, numpy_to_image

    header = _header(stamp_s)
    rgb = np.random.default_rng(rgb_seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    messages = {"color": _raw(numpy_to_image(rgb, "rgb8", header)),
                "camera_info": make_camera_info(K, W, H, header)}
    if depth is not None:
        messages["depth"] = _raw(float_to_image(np.full((H, W), depth, np.float32), header))
    encoding = "mono16" if labels.dtype == np.uint16 else "mono8"
    messages["labels"] = _raw(numpy_to_image(labels, encoding, _header(stamp_s, labels_frame)))
    if confidence is not None:
        image = confidence if not isinstance(confidence, np.ndarray) else float_to_image(confidence,
                                                                                          _header(stamp_s))
        messages["confidence"] = _raw(image)
    ns = int(round(stamp_s * 1e9))
    return MatchedSet(ns, messages, {name: ns for name in messages})


class Intake:
    """A KeyframeIntake wired as the node wires it (identity pose), recording what it accepts and rejects."""

    def __init__(self, label_set=SCANNET, encode_fn=None):
        from sray_ros.ros.keyframe_intake import KeyframeIntake
        from sray_ros.ros.tf_buffer import TransformBuffer

        self.warnings: list[str] = []
        self.labels = LabelIntake(self.warnings.append)
        self.label_set = label_set
        self.buffer = KeyframeBuffer(max_keyframes=8, min_translation_m=0.0, min_rotation_deg=0.0,
                                     encode_fn=encode_fn)
        self.accepted, self.rejected, self.errors = [], [], []
        self._event = threading.Event()
        self.intake = KeyframeIntake(
            TransformBuffer(cache_time_s=30.0), self.buffer, 8, lambda matched: np.eye(4), self._reject,
            self.labels, lambda: self.label_set, lambda notes: None, self._accept, lambda: 1.0, lambda stamp: True,
            self.errors.append)
        self.intake.start()

    def _accept(self, frame):
        self.accepted.append(frame)
        self._event.set()

    def _reject(self, reason, detail):
        self.rejected.append((reason, detail))
        self._event.set()

    def handle(self, matched):
        """Submit one set and wait until it is accepted or rejected."""
        self._event.clear()
        self.intake.submit(matched)
        assert self._event.wait(20.0), f"no outcome; errors: {self.errors}"
        assert not self.errors, self.errors

    def close(self):
        self.intake.close()


@pytest.fixture
def intake():
    made = []

    def make(**kwargs) -> Intake:
        made.append(Intake(**kwargs))
        return made[-1]

    yield make
    for i in made:
        i.close()


def _write_map(tmp_path, content) -> str:
    path = tmp_path / "segmenter.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def test_a_label_map_converts_exactly_the_listed_ids_and_counts_the_rest_through_intake(intake, tmp_path):
    spec = _write_map(tmp_path, {"source_classes": {0: "wall", 1: "sky", 2: "desk", 7: "bed", 300: "chair"},
                                 "map": {"wall": "wall", "desk": "desk", 7: "bed", 300: "chair"},
                                 "target_label_set": "scannet20"})
    i = intake()
    i.labels.use(LabelIntake.prepare(spec, SCANNET))
    # mono16 ids, one 5-column band each: listed and mapped (0, 2, 7, 300), listed but unmapped (1: sky),
    # unknown to the map (3, 999), and 255 (unknown on the wire)
    bands = [0, 2, 7, 300, 1, 3, 999, 255]
    ids = np.repeat(np.array(bands, np.uint16), 5)[None].repeat(H, 0)
    i.handle(matched_set(1.0, ids))
    assert i.rejected == [] and len(i.accepted) == 1  # kept: unknown ids are no reason to drop the frame
    labels = i.buffer.snapshot()[-1].frame.labels
    expected = [SCANNET.class_names.index("wall"), DESK, BED, CHAIR, 255, 255, 255, 255]
    assert np.array_equal(labels, np.repeat(np.array(expected, np.uint8), 5)[None].repeat(H, 0))
    counters = i.labels.counters()
    # the bands of ids 3 and 999 only: 2 x 5 columns x 30 rows (sky is listed, 255 is unknown already)
    assert counters["unknown_pixels"] == 2 * 5 * H and counters["unknown_frames"] == 1
    assert counters["label_map"] == spec
    assert len(i.warnings) == 1 and "[3, 999]" in i.warnings[0] and "kept" in i.warnings[0]


def test_without_a_map_ids_outside_the_label_set_become_unknown_and_are_counted(intake):
    # Before: the whole frame was rejected (labels_out_of_set). Now it is kept with those pixels unknown.
    i = intake()
    ids = np.full((H, W), 4, np.uint8)
    ids[:5, :5] = 30  # scannet20 has ids 0..19
    ids[-1, -3:] = 255
    i.handle(matched_set(1.0, ids))
    assert i.rejected == [] and len(i.accepted) == 1
    labels = i.buffer.snapshot()[-1].frame.labels
    assert (labels[:5, :5] == 255).all() and (labels[5:-1, :] == 4).all() and (labels[-1, -3:] == 255).all()
    assert (labels[:5, 5:] == 4).all() and (labels[-1, :-3] == 4).all()
    assert i.labels.counters()["unknown_pixels"] == 25 and i.labels.counters()["unknown_frames"] == 1
    # mono16 ids above 255 too (formerly narrowed to 255 silently)
    i.handle(matched_set(2.0, np.full((H, W), 1000, np.uint16)))
    assert len(i.accepted) == 2 and i.labels.counters()["unknown_pixels"] == 25 + W * H
    # every frame counted, warned once per kind within 5 s (a segmenter with extra classes would flood the log)
    assert i.labels.counters()["unknown_frames"] == 2 and len(i.warnings) == 1
    i.handle(matched_set(3.0, np.full((H, W), 4, np.uint8), confidence=np.full((H, W), 2.0, np.float32)))
    assert len(i.warnings) == 2 and "labels/confidence ignored" in i.warnings[1]


def test_the_shipped_map_resolves_by_name_and_a_map_that_does_not_fit_a_new_label_set_rejects_with_the_reason(
        intake):
    i = intake()
    i.labels.use(LabelIntake.prepare("nyu40_to_scannet20", SCANNET))
    ids = np.full((H, W), 1, np.uint8)  # NYU40 1 = wall
    ids[:, :10] = 0  # NYU40 0 is no class of the map: counted
    i.handle(matched_set(1.0, ids))
    assert (i.buffer.snapshot()[-1].frame.labels[:, 10:] == SCANNET.class_names.index("wall")).all()
    assert i.labels.counters()["unknown_pixels"] == 10 * H
    # a model of another label set was loaded: the scannet20 map no longer fits, frames say why (not kept
    # with ids of the wrong label set)
    i.label_set = load_label_set("nyu40")
    i.handle(matched_set(2.0, ids))
    assert i.rejected[-1][0] == "bad_label_map" and "nyu40_to_scannet20" in i.rejected[-1][1]
    assert len(i.buffer) == 1  # the keyframe taken before stays


@pytest.mark.parametrize("content, match", [
    (None, "label map file '.*missing.yaml' does not exist"),
    ("source_classes: {0: wall\nmap: [", "not valid YAML"),
    ({"source_classes": {70000: "wall"}, "map": {}}, "source class id 70000 is not an integer in \\[0, 65535\\]"),
    ({"source_classes": {0: "a"}, "map": {"a": "spaceship"}}, "target 'spaceship' of 'a' is not a class of the label"),
    ({"source_classes": {0: "a"}, "map": {}, "target_label_set": "nyu40"}, "maps to label set 'nyu40'"),
])
def test_a_bad_label_map_is_refused_naming_the_parameter_and_the_problem(tmp_path, content, match):
    spec = str(tmp_path / "missing.yaml") if content is None else _write_map(tmp_path, content)
    with pytest.raises(LabelMapError, match=f"^parameter 'label_map' = '{spec}': .*{match}"):
        LabelIntake.prepare(spec, SCANNET)
    with pytest.raises(LabelMapError, match="neither a YAML file nor one of the shipped maps .*ade20k150_to_scannet20"):
        LabelIntake.prepare("pascal_to_scannet", SCANNET)
    assert LabelIntake.prepare("", SCANNET) is None and LabelIntake.prepare("  ", None) is None
    # without a model the map's declared target_label_set is used; one naming none cannot be checked
    assert LabelIntake.prepare("ade20k150_to_scannet20", None).label_set[0] == "scannet20"
    bare = _write_map(tmp_path, {"source_classes": {0: "a"}, "map": {"a": "wall"}})
    with pytest.raises(LabelMapError, match="no model is loaded and the map names no target_label_set"):
        LabelIntake.prepare(bare, None)


def _confidence_image(kind: str):
    from sray_ros.ros.image_conversion import float_to_image, numpy_to_image

    good = np.full((H, W), 0.5, np.float32)
    if kind == "wrong_encoding":
        return numpy_to_image((good * 255).astype(np.uint8), "mono8", _header(1.0)), "encoding 'mono8'"
    if kind == "wrong_size":
        return float_to_image(good[::2, ::2], _header(1.0)), "it is 20x15, the label image 40x30"
    if kind == "nan":
        bad = good.copy()
        bad[3, 4] = np.nan
        return float_to_image(bad, _header(1.0)), "1 pixels are NaN or infinite"
    if kind == "percent":
        return float_to_image(good * 100, _header(1.0)), "outside [0, 1]"
    if kind == "negative":
        bad = good.copy()
        bad[0, 0] = -0.1
        return float_to_image(bad, _header(1.0)), "outside [0, 1]"
    if kind == "other_frame":
        return float_to_image(good, _header(1.0, "other_camera")), "another optical frame"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["wrong_encoding", "wrong_size", "nan", "percent", "negative", "other_frame"])
def test_bad_confidence_is_ignored_for_its_frame_with_the_reason_and_the_labels_kept(intake, kind):
    i = intake()
    image, reason = _confidence_image(kind)
    i.handle(matched_set(1.0, np.full((H, W), 4, np.uint8), confidence=image))
    assert i.rejected == [] and len(i.accepted) == 1
    frame = i.buffer.snapshot()[-1].frame
    assert frame.label_confidence is None and (frame.labels == 4).all()  # weight 1, as without the topic
    assert i.labels.counters()["confidence_ignored"] == 1
    assert len(i.warnings) == 1 and reason in i.warnings[0] and "ignored" in i.warnings[0], i.warnings


def test_good_confidence_is_stored_with_the_labels(intake):
    i = intake()
    confidence = np.linspace(0, 1, W * H, dtype=np.float32).reshape(H, W)
    i.handle(matched_set(1.0, np.full((H, W), 4, np.uint8), confidence=confidence))
    frame = i.buffer.snapshot()[-1].frame
    assert np.array_equal(frame.label_confidence, confidence) and not frame.label_confidence.flags.writeable
    assert i.labels.counters()["confidence_ignored"] == 0 and i.warnings == []


def test_label_images_of_unsupported_type_are_a_rejection_not_a_crash():
    with pytest.raises(IntakeRejection, match="uint8 or uint16"):
        LabelIntake().convert(np.zeros((2, 2), np.int32), SCANNET)


@pytest.fixture(scope="module")
def tiny_renderer():
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay
    from sray_ros.online.renderer import Renderer

    torch.manual_seed(0)
    renderer = Renderer(device="cpu", num_source_views=1, confidence_threshold=0.0, opacity_threshold=0.0)
    renderer.swap(SRay(SRayConfig.tiny(num_classes=SCANNET.num_classes)).eval(), SCANNET.to_dict(), "tiny")
    return renderer


def test_confidence_zero_removes_a_pixels_vote_through_intake_and_render(intake, tiny_renderer):
    """One labelled keyframe (all 'desk', a wall 2 m ahead) rendered at its own pose: with its confidence 0 on
    the left half, the left half has no label evidence (coverage 0) and renders exactly as if those label
    pixels were unknown (255); the right half (confidence 1) is 'desk' as without a confidence."""
    from sray_ros.online.renderer import RenderRequest

    labels = np.full((H, W), DESK, np.uint8)
    confidence = np.ones((H, W), np.float32)
    confidence[:, : W // 2] = 0.0
    unknown_left = labels.copy()
    unknown_left[:, : W // 2] = 255
    request = RenderRequest(np.eye(4), K, W, H, 1)
    results = {}
    for name, lab, conf in (("with", labels, confidence), ("without", labels, None),
                            ("unknown", unknown_left, None)):
        i = intake(encode_fn=tiny_renderer.encode)
        i.handle(matched_set(1.0, lab, confidence=conf))
        results[name] = tiny_renderer.render(i.buffer.snapshot(), request)
    with_conf, without, unknown = results["with"], results["without"], results["unknown"]
    left, right = np.s_[:, : W // 2 - 2], np.s_[:, W // 2 + 2:]  # 2 columns off the edge: nearest-pixel lookup
    assert (without.label_coverage[left] > 0.5).all() and (without.raw_labels[left] == DESK).all()
    assert (with_conf.label_coverage[left] == 0).all()
    np.testing.assert_array_equal(with_conf.raw_labels, unknown.raw_labels)
    np.testing.assert_allclose(with_conf.label_coverage, unknown.label_coverage, atol=1e-6)
    assert (with_conf.raw_labels[right] == DESK).all()
    np.testing.assert_allclose(with_conf.label_coverage[right], without.label_coverage[right], atol=1e-6)
