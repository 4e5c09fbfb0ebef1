"""Convert a posed RGB-D(-L) scene folder (ScanNet layout or Replica/Semantic-NeRF) to a rosbag2.

    python -m sray_ros.ros.scannet_to_bag SCENE_DIR OUT_BAG [--fps 10] [--width W --height H]
        [--every N] [--start I] [--end J] [--encoding rgb8|bgr8] [--no-depth] [--no-labels]
        [--storage sqlite3|mcap] [--label-set scannet20] [--format auto|scannet|replica]
        [--world-frame map] [--topic-prefix /camera] [--no-progress]
        [--label-noise segmenter] [--label-noise-seed N] [--label-space ade20k150_to_scannet20]

The bag is what a robot driver plus a localisation stack would record, so that the node (or
``ros2 bag play --clock`` + the node with ``use_sim_time``) sees the scene as live input.

Topics (``P`` = ``topic_prefix``, default ``/camera``; these are ``sray.launch.py``'s default inputs):

=============================  =====================  ==========================================
topic                          type                   content
=============================  =====================  ==========================================
``P/color/image_raw``          sensor_msgs/Image      rgb8 (or bgr8), the reader's colour image
``P/color/camera_info``        sensor_msgs/CameraInfo colour intrinsics at the written size
``P/depth/image_raw``          sensor_msgs/Image      16UC1 millimetres, 0 = invalid
``P/depth/camera_info``        sensor_msgs/CameraInfo see "Depth" below
``P/labels/image_raw``         sensor_msgs/Image      mono8 class ids of ``label_set``, 255 = ignore
``/tf``                        tf2_msgs/TFMessage     ``world_frame -> camera_link`` per frame
``/tf_static``                 tf2_msgs/TFMessage     ``camera_link -> camera_color_optical_frame``
=============================  =====================  ==========================================

Depth and labels are written only when the scene has them (and ``with_depth`` / ``with_labels``). For a test of
a robot's own segmenter, ``label_noise`` corrupts the written labels like a segmenter (or a Semantic-NeRF label
task) and ``label_space`` writes them in a segmenter's ids (mono16 when an id exceeds 255) through a label map.

Frames and poses: every image and camera_info has ``header.frame_id = camera_color_optical_frame``.
The scene's c2w poses are in the OpenCV / REP-103 optical convention (x right, y down, z forward).
/tf carries the body frame ``camera_link`` (x forward, y left, z up) so that the bag looks like a real
robot's TF tree; the static ``camera_link -> camera_color_optical_frame`` transform is the standard
body -> optical rotation (quaternion x, y, z, w = -0.5, 0.5, -0.5, 0.5, no translation). Composed,
``world_frame -> camera_color_optical_frame`` equals the scene's pose of that frame.

Time: frame ``k`` of the selection (k = 0, 1, ...) is stamped ``START_TIME_S + k / fps`` with
``START_TIME_S = 1.0`` s (not 0: a zero stamp means "latest" to tf2 lookups). The bag's receive
timestamps equal the header stamps. /tf_static is written once at the first stamp, before anything
else; within a frame /tf comes first, then camera_info and images, so a player that publishes in
order has the pose before the image.

Size: by default the colour images' native size; ``width`` / ``height`` resize through the scene
reader (colour with area/linear interpolation, depth and labels nearest-neighbour, intrinsics scaled).
Giving only one of them keeps the aspect ratio.

Depth: the readers return depth already resized (nearest neighbour) to the working size, i.e. the
colour image size, so the depth image is written at the colour resolution. ``P/depth/camera_info``
carries that size and the depth camera's intrinsics scaled to it (``scene.intrinsics_depth``); for
registered data (Replica, the synthetic rooms, hololens) these equal the colour intrinsics. For raw
ScanNet the depth camera's intrinsics differ from the colour camera's (the depth is not registered to
colour; the node registers it into the colour camera from the two camera_infos). Depth beyond 65.535 m does not fit
16UC1 millimetres and is written as 0 (invalid).

Bag format: rosbag2 metadata version 8 with sqlite3 storage (``ros2 bag play`` of Humble, Jazzy and
Kilted all read it) or mcap; messages are serialised with ``rclpy.serialization.serialize_message``
(real ROS CDR) and written as raw bytes with the ``rosbags`` writer. Offered QoS is recorded per
connection: sensor and /tf topics reliable, volatile, keep-last; /tf_static reliable, transient local,
keep-last 1 (latched), as tf2's static broadcaster offers.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

START_TIME_S = 1.0
NS_PER_S = 1_000_000_000
BODY_FRAME = "camera_link"
OPTICAL_FRAME = "camera_color_optical_frame"
ENCODINGS = ("rgb8", "bgr8")
STORAGES = ("sqlite3", "mcap")
FORMATS = ("auto", "scannet", "replica")
BAG_VERSION = 8
SENSOR_QOS_DEPTH = 10
TF_QOS_DEPTH = 100
MM_PER_M = 1000.0
UINT16_MAX = 65535

# Rotation of the optical frame in the body frame (REP-103): optical x = -body y, y = -body z, z = body x.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
Q_BODY_OPTICAL = (-0.5, 0.5, -0.5, 0.5)  # x, y, z, w of R_BODY_OPTICAL
T_BODY_OPTICAL = np.eye(4)
T_BODY_OPTICAL[:3, :3] = R_BODY_OPTICAL


class BagConversionError(ValueError):
    """The scene cannot be converted, or the options are invalid; the message says what is wrong."""


@dataclass
class BagSummary:
    path: Path
    frames: int
    duration_s: float
    topics: dict[str, int] = field(default_factory=dict)  # topic -> message count


def topic_names(topic_prefix: str = "/camera") -> dict[str, str]:
    """The converter's topics for a prefix: keys color, camera_info, depth, depth_info, labels, tf, tf_static."""
    p = "/" + topic_prefix.strip("/") if topic_prefix.strip("/") else ""
    return {
        "color": f"{p}/color/image_raw",
        "camera_info": f"{p}/color/camera_info",
        "depth": f"{p}/depth/image_raw",
        "depth_info": f"{p}/depth/camera_info",
        "labels": f"{p}/labels/image_raw",
        "tf": "/tf",
        "tf_static": "/tf_static",
    }


def frame_stamp_ns(k: int, fps: float) -> int:
    """Bag / header time of the k-th written frame in nanoseconds (see module docstring)."""
    return round(START_TIME_S * NS_PER_S) + round(k * NS_PER_S / fps)


def body_pose_from_optical(c2w: np.ndarray) -> np.ndarray:
    """``world -> camera_link`` 4x4 for an optical-frame c2w (``c2w = T_world_link @ T_BODY_OPTICAL``)."""
    return np.asarray(c2w, np.float64) @ np.linalg.inv(T_BODY_OPTICAL)


def _validate(scene_dir, out_bag, fps, width, height, every, start, end, encoding, storage, fmt) -> tuple[Path, Path]:
    scene_dir, out_bag = Path(scene_dir), Path(out_bag)
    if not scene_dir.is_dir():
        raise BagConversionError(f"scene folder {str(scene_dir)!r} does not exist (or is not a folder)")
    if out_bag.exists():
        raise BagConversionError(f"output {str(out_bag)!r} exists already; remove it or choose another path "
                                 "(a bag is never overwritten)")
    if not out_bag.parent.is_dir():
        raise BagConversionError(f"output folder's parent {str(out_bag.parent)!r} does not exist")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise BagConversionError(f"fps must be a finite number > 0, got {fps!r}")
    for name, value in (("width", width), ("height", height)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise BagConversionError(f"{name} must be a positive integer or None, got {value!r}")
    if not isinstance(every, int) or every < 1:
        raise BagConversionError(f"every must be an integer >= 1, got {every!r}")
    if not isinstance(start, int) or start < 0:
        raise BagConversionError(f"start must be an integer >= 0, got {start!r}")
    if end is not None and (not isinstance(end, int) or end < 0):
        raise BagConversionError(f"end must be an integer >= 0 or None, got {end!r}")
    if encoding not in ENCODINGS:
        raise BagConversionError(f"unknown colour encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
    if storage not in STORAGES:
        raise BagConversionError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGES)}")
    if fmt not in FORMATS:
        raise BagConversionError(f"unknown scene format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return scene_dir, out_bag


def detect_format(scene_dir: Path) -> str:
    """``replica`` when the folder has ``traj_w_c.txt``, ``scannet`` when it has ``pose/``."""
    if (scene_dir / "traj_w_c.txt").is_file():
        return "replica"
    if (scene_dir / "pose").is_dir():
        return "scannet"
    raise BagConversionError(
        f"{str(scene_dir)!r} is neither a ScanNet-layout scene (no pose/ folder; expected color/, pose/, "
        "intrinsic/) nor a Replica export (no traj_w_c.txt); pass fmt= (--format) to get the reader's detailed error")


def _load_scene(scene_dir: Path, fmt: str, width: int | None, height: int | None, label_set: str):
    from sray_ros.data.scene import SceneFormatError

    if fmt == "auto":
        fmt = detect_format(scene_dir)
    try:
        if fmt == "replica":
            from sray_ros.data.replica import load_replica_scene as load
        else:
            from sray_ros.data.scannet import load_scannet_scene as load
        scene = load(scene_dir, None, None, label_set=label_set)  # native size first, to fill in a missing side
        if width is not None or height is not None:
            native_w, native_h = scene.color_size
            if width is None:
                width = max(1, round(native_w * height / native_h))
            if height is None:
                height = max(1, round(native_h * width / native_w))
            scene = load(scene_dir, width, height, label_set=label_set)
    except SceneFormatError as exc:
        raise BagConversionError(f"cannot read {fmt} scene {str(scene_dir)!r}: {exc}") from None
    except (KeyError, FileNotFoundError) as exc:  # e.g. an unknown label set name
        raise BagConversionError(f"cannot read {fmt} scene {str(scene_dir)!r}: {exc}") from None
    return scene


def _sensor_qos(depth: int = SENSOR_QOS_DEPTH, transient_local: bool = False):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def _header(stamp_ns: int, frame_id: str):
    from std_msgs.msg import Header

    header = Header()
    header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_ns), NS_PER_S)
    header.frame_id = frame_id
    return header


def _transform(stamp_ns: int, parent: str, child: str, translation, quat_xyzw):
    from geometry_msgs.msg import TransformStamped

    t = TransformStamped()
    t.header = _header(stamp_ns, parent)
    t.child_frame_id = child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in translation)
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in quat_xyzw)
    return t


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """uint16 millimetres from float metres (rounded; invalid, negative or > 65.535 m -> 0)."""
    mm = np.rint(np.nan_to_num(np.asarray(depth_m, np.float64), nan=0.0, posinf=0.0, neginf=0.0) * MM_PER_M)
    mm[(mm < 0) | (mm > UINT16_MAX)] = 0
    return mm.astype(np.uint16)


def _segmenter_labels(label_noise: str, seed: int, label_space: str, label_set: str):
    """``(labels uint8 [H, W], frame position) -> ids`` written on the labels topic (see :func:`convert`)."""
    from sray_ros.data.label_map import load_label_map
    from sray_ros.data.label_noise import LABEL_TASKS
    from sray_ros.data.label_sets import IGNORE_INDEX, load_label_set

    if label_noise not in LABEL_TASKS or LABEL_TASKS[label_noise].keep_fraction < 1:
        names = [n for n, t in LABEL_TASKS.items() if t.keep_fraction == 1]
        raise BagConversionError(f"label_noise must be one of {names}, got {label_noise!r}")
    task = replace(LABEL_TASKS[label_noise], seed=int(seed))
    classes = load_label_set(label_set)
    to_source = None
    if label_space:
        try:
            to_source = load_label_map(label_space, classes.class_names, classes.name).source_ids(classes.num_classes)
        except (FileNotFoundError, ValueError) as exc:
            raise BagConversionError(f"label_space: {exc}") from None
    dtype = np.uint8 if to_source is None or to_source.max() <= IGNORE_INDEX else np.uint16

    def write(labels: np.ndarray, position: int) -> np.ndarray:
        labels = labels if task.is_identity else task.apply_frame(labels, classes.num_classes, position)
        return labels if to_source is None else to_source[labels].astype(dtype)
    return write


def convert(scene_dir, out_bag, *, fps: float = 10.0, width: int | None = None, height: int | None = None,
            every: int = 1, start: int = 0, end: int | None = None, encoding: str = "rgb8",
            with_depth: bool = True, with_labels: bool = True, storage: str = "sqlite3",
            label_set: str = "scannet20", fmt: str = "auto",
            world_frame: str = "map", topic_prefix: str = "/camera", progress: bool = True,
            label_noise: str = "clean", label_noise_seed: int = 0, label_space: str = "") -> BagSummary:
    """Write the scene at ``scene_dir`` to a new rosbag2 directory ``out_bag`` (see module docstring).

    ``every`` / ``start`` / ``end`` select frames by position in the scene's (valid-pose) frame list,
    like ``frames[start:end:every]``. Raises :class:`BagConversionError` for invalid options or input
    (also for any frame file that is unreadable or of the wrong type/size, naming the file: the readers
    raise ``SceneFormatError`` for it); a partly written bag is removed.

    ``label_noise`` (a :data:`~sray_ros.data.label_noise.LABEL_TASKS` name other than the sequence-wide
    ``keep10``, e.g. ``segmenter``) corrupts each written label image, deterministically per
    ``label_noise_seed`` and frame; ``label_space`` (a label map, :mod:`sray_ros.data.label_map`, e.g.
    ``ade20k150_to_scannet20``) writes the labels in that map's segmenter ids (mono16 when an id exceeds 255),
    as a robot's segmenter would publish them for the node's ``label_map``.
    """
    scene_dir, out_bag = _validate(scene_dir, out_bag, fps, width, height, every, start, end, encoding, storage, fmt)
    if not world_frame or world_frame.startswith("/"):
        raise BagConversionError(f"world_frame must be a non-empty tf frame name without a leading '/', "
                                 f"got {world_frame!r}")
    scene = _load_scene(scene_dir, fmt, width, height, label_set)
    indices = list(range(len(scene)))[start:end:every]
    if not indices:
        raise BagConversionError(f"no frames selected: the scene {scene.name!r} has {len(scene)} frame(s) with valid "
                                 f"poses and start={start}, end={end}, every={every} selects none")
    write_depth = bool(with_depth) and scene.has_depth
    write_labels = bool(with_labels) and scene.has_labels
    segmenter_labels = _segmenter_labels(label_noise, label_noise_seed, label_space, label_set)

    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
    from rosbags.typesys import Stores, get_typestore
    from tf2_msgs.msg import TFMessage

    from sray_ros.data.scene import SceneFormatError
    from sray_ros.ros.image_conversion import ImageConversionError, make_camera_info, numpy_to_image
    from sray_ros.ros.pose_conversion import rotation_to_quaternion

    names = topic_names(topic_prefix)
    typestore = get_typestore(Stores.ROS2_KILTED)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    K_color = np.asarray(scene.intrinsics, np.float64)
    K_depth = np.asarray(scene.intrinsics_depth, np.float64)
    w, h = scene.width, scene.height
    counts: dict[str, int] = {}
    bar = None
    try:
        with Writer(out_bag, version=BAG_VERSION, storage_plugin=plugin) as writer:
            connections = {}

            def connect(key: str, msgtype: str, qos) -> None:
                connections[key] = writer.add_connection(names[key], msgtype, typestore=typestore,
                                                         offered_qos_profiles=[qos])
                counts[names[key]] = 0

            connect("tf_static", "tf2_msgs/msg/TFMessage", _sensor_qos(1, transient_local=True))
            connect("tf", "tf2_msgs/msg/TFMessage", _sensor_qos(TF_QOS_DEPTH))
            connect("camera_info", "sensor_msgs/msg/CameraInfo", _sensor_qos())
            connect("color", "sensor_msgs/msg/Image", _sensor_qos())
            if write_depth:
                connect("depth_info", "sensor_msgs/msg/CameraInfo", _sensor_qos())
                connect("depth", "sensor_msgs/msg/Image", _sensor_qos())
            if write_labels:
                connect("labels", "sensor_msgs/msg/Image", _sensor_qos())

            def put(key: str, stamp_ns: int, msg) -> None:
                writer.write(connections[key], stamp_ns, serialize_message(msg))
                counts[names[key]] += 1

            first = frame_stamp_ns(0, fps)
            static = TFMessage()
            static.transforms = [_transform(first, BODY_FRAME, OPTICAL_FRAME, (0.0, 0.0, 0.0), Q_BODY_OPTICAL)]
            put("tf_static", first, static)

            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(indices), unit="frame", desc=f"writing {out_bag.name}", file=sys.stderr,
                           mininterval=0.5, dynamic_ncols=True)
            for k, idx in enumerate(indices):
                stamp = frame_stamp_ns(k, fps)
                body = body_pose_from_optical(scene.poses[idx])
                tf = TFMessage()
                tf.transforms = [_transform(stamp, world_frame, BODY_FRAME, body[:3, 3],
                                            rotation_to_quaternion(body[:3, :3]))]
                put("tf", stamp, tf)
                put("camera_info", stamp, make_camera_info(K_color, w, h, _header(stamp, OPTICAL_FRAME)))
                rgb = scene.load_color(idx)
                pixels = rgb if encoding == "rgb8" else np.ascontiguousarray(rgb[..., ::-1])
                put("color", stamp, numpy_to_image(pixels, encoding, _header(stamp, OPTICAL_FRAME)))
                if write_depth:
                    put("depth_info", stamp, make_camera_info(K_depth, w, h, _header(stamp, OPTICAL_FRAME)))
                    put("depth", stamp, numpy_to_image(depth_to_millimetres(scene.load_depth(idx)), "16UC1",
                                                       _header(stamp, OPTICAL_FRAME)))
                if write_labels:
                    ids = segmenter_labels(scene.load_labels(idx), k)
                    put("labels", stamp, numpy_to_image(ids, "mono8" if ids.dtype == np.uint8 else "mono16",
                                                        _header(stamp, OPTICAL_FRAME)))
                if bar is not None:
                    bar.update(1)
    except BaseException as exc:
        shutil.rmtree(out_bag, ignore_errors=True)  # never leave a half-written bag behind
        if isinstance(exc, SceneFormatError):  # a frame file unreadable or of the wrong type/size
            raise BagConversionError(f"cannot read scene {str(scene_dir)!r}: {exc}; no bag written") from None
        if isinstance(exc, (WriterError, ImageConversionError)):
            raise BagConversionError(f"writing {str(out_bag)!r} failed: {exc}") from exc
        if isinstance(exc, OSError):
            raise BagConversionError(f"writing {str(out_bag)!r} failed: {type(exc).__name__}: {exc}") from exc
        raise
    finally:
        if bar is not None:
            bar.close()
    duration = (frame_stamp_ns(len(indices) - 1, fps) - frame_stamp_ns(0, fps)) / NS_PER_S
    return BagSummary(path=out_bag, frames=len(indices), duration_s=duration, topics=counts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sray-scannet-to-bag",
        description="Convert a ScanNet-layout (or Replica) scene folder to a rosbag2 (metadata v8, sqlite3 or mcap) "
                    "with colour, camera_info, depth, labels, /tf and /tf_static.")
    parser.add_argument("scene_dir", help="scene folder (ScanNet: color/ pose/ intrinsic/ [depth/ label-filt/]; "
                                          "Replica: rgb/ traj_w_c.txt [depth/ semantic_class/])")
    parser.add_argument("out_bag", help="rosbag2 directory to create (must not exist)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of the stamps (default 10)")
    parser.add_argument("--width", type=int, default=None, help="resize to this width (default: native)")
    parser.add_argument("--height", type=int, default=None, help="resize to this height (default: native)")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th frame (default 1)")
    parser.add_argument("--start", type=int, default=0, help="first frame position (default 0)")
    parser.add_argument("--end", type=int, default=None, help="stop before this frame position (default: all)")
    parser.add_argument("--encoding", default="rgb8", help="colour encoding: rgb8 (default) or bgr8")
    parser.add_argument("--no-depth", action="store_true", help="leave depth out")
    parser.add_argument("--no-labels", action="store_true", help="leave labels out")
    parser.add_argument("--storage", default="sqlite3", help="sqlite3 (default) or mcap")
    parser.add_argument("--label-set", default="scannet20", help="label set of the label images (default scannet20)")
    parser.add_argument("--format", dest="fmt", default="auto", help="auto (default), scannet or replica")
    parser.add_argument("--world-frame", default="map", help="parent frame of the camera poses (default map)")
    parser.add_argument("--topic-prefix", default="/camera", help="topic prefix (default /camera)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--label-noise", default="clean",
                        help="corrupt the written labels with this task: segmenter (a 2D segmenter's errors), "
                             "pixel50, pixel90, region30, down8 or clean (default)")
    parser.add_argument("--label-noise-seed", type=int, default=0, help="seed of the label noise (default 0)")
    parser.add_argument("--label-space", default="",
                        help="write the labels in a segmenter's ids through this label map (e.g. "
                             "ade20k150_to_scannet20); the node needs label_map set to the same map")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = convert(args.scene_dir, args.out_bag, fps=args.fps, width=args.width, height=args.height,
                          every=args.every, start=args.start, end=args.end, encoding=args.encoding,
                          with_depth=not args.no_depth, with_labels=not args.no_labels, storage=args.storage,
                          label_set=args.label_set, fmt=args.fmt, world_frame=args.world_frame,
                          topic_prefix=args.topic_prefix, progress=not args.no_progress,
                          label_noise=args.label_noise, label_noise_seed=args.label_noise_seed,
                          label_space=args.label_space)
    except BagConversionError as exc:
        print(f"[scannet_to_bag] error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("[scannet_to_bag] interrupted; the partial bag was removed", file=sys.stderr)
        return 130
    print(f"[scannet_to_bag] wrote {summary.path}: {summary.frames} frames, {summary.duration_s:.2f} s", file=sys.stderr)
    for topic, count in summary.topics.items():
        print(f"  {topic}: {count}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
