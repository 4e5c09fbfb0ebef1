"""The node's ROS parameters: names, defaults, descriptions and ranges, declared and checked in one place.

:data:`PARAMETERS` is the table the node declares (``ros2 param describe`` shows each description and range);
:func:`declare_parameters` declares it on a node, :func:`check_choices` checks the string / choice parameters
rclpy cannot range-check, and :func:`renderer_changes` maps runtime changes onto
:meth:`sray_ros.online.renderer.Renderer.configure`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

# Writable parameters the renderer reads at render time (applied by the parameter callback).
RENDERER_PARAMETERS = {"num_source_views": "num_source_views", "confidence_threshold": "confidence_threshold",
                       "opacity_threshold": "opacity_threshold", "max_render_pixels": "max_pixels",
                       "render_chunk": "chunk", "render_view_scale": "view_scale"}


class ParameterError(ValueError):
    """A parameter value the node cannot run with; the message names the parameter, the value and what is expected."""


def default_checkpoint() -> str:
    """The shipped default model: share/sray_ros/models/sray_default.pt (or the source tree's models/)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory("sray_ros")) / "models" / "sray_default.pt"
        if candidate.exists():
            return str(candidate)
    except Exception:  # noqa: BLE001 - not installed through ament: fall back to the source tree
        pass
    return str(Path(__file__).resolve().parents[2] / "models" / "sray_default.pt")


# name -> (default, description, extra descriptor fields)
PARAMETERS: dict[str, tuple] = {
    "world_frame": ("map", "Fixed frame keyframe poses and renders are expressed in.", {"read_only": True}),
    "pose_source": ("tf", "'tf': pose of image.header.frame_id in world_frame from /tf at the image stamp; "
                    "'topic': from the PoseStamped topic 'pose' (camera optical frame).", {"read_only": True}),
    "tf_timeout_s": (5.0, "How long a frame may wait for the transform at its stamp (as tf2 message filters "
                          "do); it is retried as transforms arrive, and later frames whose transform is there "
                          "are handled meanwhile (one unresolvable frame holds up none behind it).",
                     {"floating_point_range": (0.0, 30.0)}),
    "checkpoint": ("", "Model checkpoint to load at start; empty = the shipped default model.", {"read_only": True}),
    "device": ("", "Torch device: cpu, cuda, cuda:1; empty = cuda when available, else cpu.", {"read_only": True}),
    "sensor_data_qos": (True, "Subscribe to images with SensorDataQoS (best effort); false = reliable.",
                        {"read_only": True}),
    "sync_slop_s": (0.02, "Max stamp difference when pairing colour, camera_info, depth and labels.",
                    {"floating_point_range": (0.0, 1.0), "read_only": True}),
    "max_keyframes": (32, "Keyframe ring size (oldest evicted).", {"integer_range": (2, 1024), "read_only": True}),
    "min_translation_m": (0.10, "A frame becomes a keyframe when it moved this far since the last one ...",
                          {"floating_point_range": (0.0, 10.0), "read_only": True}),
    "min_rotation_deg": (10.0, "... or turned this much ...", {"floating_point_range": (0.0, 180.0), "read_only": True}),
    "min_interval_s": (0.0, "... or this long passed (0 = time alone never makes a keyframe).",
                       {"floating_point_range": (0.0, 3600.0), "read_only": True}),
    "blur_threshold": (0.0, "Reject frames whose variance of Laplacian is below this (0 = off).",
                       {"floating_point_range": (0.0, 10000.0), "read_only": True}),
    "keyframe_width": (160, "Keyframes are resized to this width (the model's working resolution).",
                       {"integer_range": (32, 4096), "read_only": True}),
    "keyframe_height": (120, "Keyframe height.", {"integer_range": (32, 4096), "read_only": True}),
    "time_jump_s": (1.0, "A stamp (image, /tf or /clock) this much older than the newest one is a backwards time "
                    "jump (bag loop, simulator reset): keyframes, transforms and frames in flight are cleared, and "
                    "late messages of the old timeline are dropped.", {"floating_point_range": (0.01, 3600.0),
                                                                       "read_only": True}),
    "num_source_views": (8, "Source keyframes per render when a request asks for 0.", {"integer_range": (1, 64)}),
    "default_width": (160, "Render width when a request's camera_info has zero size.", {"integer_range": (1, 4096)}),
    "default_height": (120, "Render height when a request's camera_info has zero size.", {"integer_range": (1, 4096)}),
    "max_render_pixels": (320 * 240, "Larger requests are refused. Default: what a CPU serves in seconds with "
                          "fast views (a 320x240 view); raise it on a GPU.", {"integer_range": (1, 16_777_216)}),
    "render_view_scale": (0, "Fast depth-guided views: the network renders every N-th pixel per axis and the rest "
                          "is upsampled on the keyframes' fused depth, pixels it cannot explain rendered exactly "
                          "(0 = the model's, 4 by default; 1 = every pixel, the exact path).",
                          {"integer_range": (0, 8)}),
    "max_queued_renders": (4, "Render requests that may wait while one renders; more are refused at once with the "
                           "reason and the estimated wait (0 = refuse whenever a render runs).",
                           {"integer_range": (0, 1000)}),
    "confidence_threshold": (0.3, "Pixels whose max class probability is below this are labelled 255.",
                             {"floating_point_range": (0.0, 1.0)}),
    "opacity_threshold": (0.5, "Pixels whose accumulated opacity is below this are labelled 255.",
                          {"floating_point_range": (0.0, 1.0)}),
    "render_chunk": (0, "Rays per model call (0 = automatic, cache-sized chunks; memory bound).",
                     {"integer_range": (0, 1_048_576)}),
    "render_num_coarse": (0, "Coarse samples per ray (0 = the model's).", {"integer_range": (0, 512), "read_only": True}),
    "render_num_fine": (-1, "Fine samples per ray (-1 = the model's).", {"integer_range": (-1, 512), "read_only": True}),
    "sampling": ("auto", "Ray sampling: 'auto' (depth-guided around the keyframes' fused depth where the chosen "
                 "keyframes carry depth, else hierarchical), 'depth_guided' (RGB-only keyframes: around the coarse "
                 "pass's depth) or 'hierarchical' (coarse + fine, GSNeRF off).", {"read_only": True}),
    "num_surface_samples": (0, "Depth-guided samples per ray around the depth (0 = the model's; at least 2).",
                            {"integer_range": (0, 512), "read_only": True}),
    "surface_semantics": ("", "Depth-guided semantics: 'volume' (weights-rendered logits), 'surface' (the "
                          "max-weight sample's, GSNeRF) or empty = the model's.", {"read_only": True}),
    "render_threads": (1, "Torch CPU threads for renders (0 = torch's default). 1: renders are many small ops "
                       "and slowed 3-17x at 2 threads when other processes loaded the cores; raise it only on "
                       "cores reserved for the node.", {"integer_range": (0, 256), "read_only": True}),
    "publish_point_cloud": (True, "Publish ~/semantic/points for each render.", {}),
    "fine_tune_default_steps": (300, "Steps of a fine_tune goal with max_steps 0.", {"integer_range": (1, 1_000_000)}),
    "fine_tune_num_rays": (256, "Rays per fine-tuning step.", {"integer_range": (16, 65536)}),
    "checkpoint_dir": ("", "Folder the node writes checkpoints to (~/save_checkpoint, fine-tune goals, "
                       "fine_tune_checkpoint); paths outside it are refused. Empty = $ROS_HOME/sray_ros/checkpoints.",
                       {"read_only": True}),
    "fine_tune_checkpoint": ("", "File fine-tuned weights (and ~/save_checkpoint without a path) are written to: a "
                             "name inside checkpoint_dir, or an absolute path inside it (empty = fine_tuned.pt).", {}),
    "use_keyframe_labels": (True, "Render with the label images of keyframes that carry one (labels/image: mono8 or "
                            "mono16 class ids of the node's label set or of label_map's source, 255 = unknown; "
                            "optional labels/confidence weights each pixel's vote) besides the model's semantics; "
                            "false = the model's semantics only.", {}),
    "label_map": ("", "Label map applied to labels/image at intake: a segmenter's class ids -> the node's label set "
                  "(a shipped map's name, e.g. ade20k150_to_scannet20, coco_panoptic133_to_scannet20, "
                  "nyu40_to_scannet20, or a YAML file path; empty = ids of the label set). Ids the map does not know "
                  "become 255 (unknown) and are counted in NodeStatus.label_unknown_pixels; a bad map is refused "
                  "with the reason.", {}),
    "prior_up": ("0,0,1", "World up direction of world_frame as 'x,y,z', for the semantic prior's height cue (a "
                 "keyframe pixel's height above the lowest surface it observes). REP-103 map/odom frames are z-up, "
                 "the default; set it when your fixed frame is not.", {"read_only": True}),
    "label_pooling_max_radius": (12, "Largest square half-size (pixels) over which a keyframe's labels are pooled "
                                 "along its own surfaces (same colour and depth) when it is stored; the radius "
                                 "used follows from the keyframe's estimated label noise: 0 for clean labels or "
                                 "region-wise errors, ~2 px at 50 % and 11-12 px at 90 % pixel noise. 0 = off.",
                                 {"integer_range": (0, 64), "read_only": True}),
    "auto_fine_tune_every": (0, "Start fine-tuning after this many new labelled keyframes (0 = off).",
                             {"integer_range": (0, 100_000)}),
    "status_period_s": (1.0, "Period of NodeStatus and /diagnostics.", {"floating_point_range": (0.05, 60.0),
                                                                         "read_only": True}),
}


_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number (float; integers are accepted)",
               str: "a string"}


def _expected(default: Any, extra: dict) -> str:
    text = _TYPE_NAMES[type(default)]
    for key in ("floating_point_range", "integer_range"):
        if key in extra:
            text += f" in [{extra[key][0]}, {extra[key][1]}]"
    return text


def _descriptor(description: str, extra: dict) -> ParameterDescriptor:
    d = ParameterDescriptor(description=description, read_only=extra.get("read_only", False))
    if "floating_point_range" in extra:
        lo, hi = extra["floating_point_range"]
        d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    if "integer_range" in extra:
        lo, hi = extra["integer_range"]
        d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
    return d


def declare_parameters(node) -> None:
    """Declare :data:`PARAMETERS` on ``node``. An integer given for a float parameter (``tf_timeout_s: 5``,
    ``-p x:=10``) is taken as that float; any other bad value raises :class:`ParameterError` naming the
    parameter, the value and the expected type."""
    overrides = node._parameter_overrides
    for name, (default, description, extra) in PARAMETERS.items():
        override = overrides.get(name)
        if override is not None and isinstance(default, float) and override.type_ == Parameter.Type.INTEGER:
            overrides[name] = Parameter(name, value=float(override.value))
            override = overrides[name]
        try:
            node.declare_parameter(name, default, _descriptor(description, extra))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            value = override.value if override is not None else default
            raise ParameterError(f"parameter '{name}' = {value!r}: expected {_expected(default, extra)}") from exc


def check_choices(p: Callable[[str], Any]) -> None:
    """Raise :class:`ParameterError` for a choice parameter outside its choices (``p(name)`` gives a value)."""
    for name, allowed in (("pose_source", ("tf", "topic")), ("sampling", ("auto", "hierarchical", "depth_guided")),
                          ("surface_semantics", ("", "volume", "surface"))):
        if p(name) not in allowed:
            expected = "'tf' or 'topic'" if name == "pose_source" else f"one of {allowed}"
            raise ParameterError(f"parameter '{name}' = {p(name)!r}: expected {expected}")
    try:
        parse_prior_up(p("prior_up"))
    except ValueError as exc:
        raise ParameterError(f"parameter 'prior_up' = {p('prior_up')!r}: {exc}") from None
    if p("num_surface_samples") == 1:
        raise ParameterError("parameter 'num_surface_samples' = 1: expected 0 (the model's) or at least 2")


def parse_prior_up(text: str) -> tuple[float, float, float]:
    """``'x,y,z'`` -> a 3-tuple of finite floats, not all zero; ValueError saying what is expected."""
    import math

    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values) or sum(v * v for v in values) < 1e-12:
        raise ValueError("expected three finite numbers 'x,y,z', not all zero (e.g. '0,0,1')")
    return values


def renderer_changes(parameters: list[Parameter]) -> dict[str, Any]:
    """Keyword arguments of ``Renderer.configure`` for runtime parameter changes (``ros2 param set``) that the
    renderer reads at render time; other parameters are left out."""
    changes: dict[str, Any] = {}
    for param in parameters:
        if param.name in RENDERER_PARAMETERS:
            value = param.value
            if param.name in ("render_chunk", "render_view_scale"):
                value = int(value) or None
            changes[RENDERER_PARAMETERS[param.name]] = value
        elif param.name == "use_keyframe_labels":
            changes["use_keyframe_labels"] = bool(param.value)
    return changes


def make_renderer(p: Callable[[str], Any]):
    """The :class:`~sray_ros.online.renderer.Renderer` the parameters describe (``p(name)`` gives a value)."""
    from sray_ros.model.label_pooling import LabelPoolingConfig
    from sray_ros.online.renderer import Renderer

    return Renderer(device=p("device"), num_source_views=p("num_source_views"),
                    confidence_threshold=p("confidence_threshold"), opacity_threshold=p("opacity_threshold"),
                    max_pixels=p("max_render_pixels"), chunk=p("render_chunk") or None,
                    num_coarse=p("render_num_coarse") or None,
                    num_fine=None if p("render_num_fine") < 0 else p("render_num_fine"), sampling=p("sampling"),
                    num_surface_samples=p("num_surface_samples") or None,
                    surface_semantics=p("surface_semantics") or None, num_threads=p("render_threads"),
                    view_scale=p("render_view_scale") or None, use_keyframe_labels=bool(p("use_keyframe_labels")),
                    label_pooling=(LabelPoolingConfig(max_radius=p("label_pooling_max_radius"))
                                   if p("label_pooling_max_radius") else None),
                    prior_up=parse_prior_up(p("prior_up")))


def make_keyframe_buffer(p: Callable[[str], Any], encode_fn):
    """The :class:`~sray_ros.online.keyframes.KeyframeBuffer` the parameters describe."""
    import math

    from sray_ros.online.keyframes import KeyframeBuffer

    return KeyframeBuffer(max_keyframes=p("max_keyframes"), min_translation_m=p("min_translation_m"),
                          min_rotation_deg=p("min_rotation_deg"), min_interval_s=p("min_interval_s") or math.inf,
                          blur_threshold=p("blur_threshold"), encode_fn=encode_fn,
                          target_size=(p("keyframe_width"), p("keyframe_height")))
