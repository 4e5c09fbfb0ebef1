"""A posed RGB-D(-L) scene at a working resolution, independent of the on-disk layout.

Readers (:mod:`sray_ros.data.scannet`, :mod:`sray_ros.data.replica`) build a :class:`Scene` from
per-scene metadata read once (frame ids, c2w poses, intrinsics, file paths); images are read on
demand by the loaders, or all at once with :meth:`Scene.preload` for training.

Resizing to the working resolution (integer-centre pixel convention, ``geometry.scale_intrinsics``):
colour with area/linear interpolation; depth and labels with :func:`sray_ros.geometry.resize_nearest`
only (exact nearest neighbour, the one resize the node and the fine-tuner use too), so a label map
only ever holds values present in the input and depth edges never get mixed depths.

File checks: every image a loader reads must be readable, of the documented type (depth: 16-bit
millimetres; labels: 8/16-bit ids) and of the same size as the first one of its stream; otherwise
:class:`SceneFormatError` names the file and what was found.

Frame indexing: loaders take ``idx``, the position in ``scene.frame_ids`` (0..N-1), not the frame id.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sray_ros.data.label_sets import IGNORE_INDEX, LabelSet
from sray_ros import geometry
from sray_ros.geometry import resize_nearest, scale_intrinsics

__all__ = ["Scene", "SceneArrays", "SceneFormatError", "drop_invalid_poses", "image_size", "read_depth_image",
           "read_image", "read_label_image", "resize_color", "resize_nearest"]


class SceneFormatError(ValueError):
    """A scene folder does not have the expected layout (the message names the missing piece)."""


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise SceneFormatError(f"cannot read image {path} (missing or not an image)")
    return img


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file."""
    img = read_image(path)
    return int(img.shape[1]), int(img.shape[0])


def read_depth_image(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Raw depth ``uint16 [H, W]`` (millimetres) of a depth PNG, validated.

    Raises :class:`SceneFormatError` naming the file when it cannot be read, is not single-channel
    16-bit (an 8-bit PNG would read as millimetres 10x-250x too small), or is not ``expected_size``
    ``(width, height)``, the size of the scene's other depth images.
    """
    raw = read_image(path)
    if raw.ndim != 2 or raw.dtype != np.uint16:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise SceneFormatError(f"{path}: depth must be a single-channel 16-bit PNG of millimetres, found "
                               f"{channels}-channel {raw.dtype} {raw.shape[1]}x{raw.shape[0]}")
    _require_size(path, raw, expected_size, "depth")
    return raw


def read_label_image(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Raw label ids ``uint8 / uint16 [H, W]`` of a label PNG, validated (a 3-channel PNG whose channels
    are equal, i.e. grey saved as colour, is accepted as its first channel). Raises
    :class:`SceneFormatError` naming the file for anything else or a size other than ``expected_size``."""
    raw = read_image(path)
    if raw.ndim == 3 and raw.shape[2] in (3, 4) and np.all(raw[..., 0] == raw[..., 1]) \
            and np.all(raw[..., 0] == raw[..., 2]):
        raw = raw[..., 0]
    if raw.ndim != 2 or raw.dtype not in (np.uint8, np.uint16):
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise SceneFormatError(f"{path}: labels must be a single-channel 8- or 16-bit PNG of raw ids, found "
                               f"{channels}-channel {raw.dtype} {raw.shape[1]}x{raw.shape[0]}")
    _require_size(path, raw, expected_size, "label")
    return raw


def _require_size(path: Path, img: np.ndarray, expected_size: tuple[int, int] | None, what: str) -> None:
    if expected_size is not None and (img.shape[1], img.shape[0]) != tuple(expected_size):
        raise SceneFormatError(f"{path}: {what} image is {img.shape[1]}x{img.shape[0]}, but the scene's other {what} "
                               f"images are {expected_size[0]}x{expected_size[1]}")


def resize_color(img: np.ndarray, width: int, height: int) -> np.ndarray:
    if img.shape[1] == width and img.shape[0] == height:
        return img
    shrink = width < img.shape[1] or height < img.shape[0]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclass
class SceneArrays:
    """A whole scene in memory (what training samples rays from; no file reads per step).

    Shapes: ``colors [N, H, W, 3]`` uint8 RGB, ``depths [N, H, W]`` float32 metres (0 = invalid) or
    None, ``labels [N, H, W]`` uint8 class ids (255 = ignore) or None, ``poses [N, 4, 4]`` float32
    c2w, ``intrinsics [3, 3]`` (colour / labels) and ``intrinsics_depth [3, 3]`` at the working
    resolution. ``near`` / ``far`` bound the scene's valid depths (metres) for ray sampling.
    """

    name: str
    frame_ids: np.ndarray
    colors: np.ndarray
    depths: np.ndarray | None
    labels: np.ndarray | None
    poses: np.ndarray
    intrinsics: np.ndarray
    intrinsics_depth: np.ndarray
    near: float
    far: float
    ignore_index: int = IGNORE_INDEX

    @property
    def num_frames(self) -> int:
        return int(self.colors.shape[0])

    @property
    def height(self) -> int:
        return int(self.colors.shape[1])

    @property
    def width(self) -> int:
        return int(self.colors.shape[2])


class Scene:
    """Posed frames of one scene at ``(width, height)``.

    Attributes:
        name, root: scene name and folder.
        frame_ids: integer frame ids (sorted, not necessarily contiguous), frames with invalid poses dropped.
        poses: ``[N, 4, 4]`` float64 camera-to-world (OpenCV optical frame).
        intrinsics: ``[3, 3]`` colour intrinsics at the working resolution (labels share them unless
            ``intrinsics_label`` says otherwise).
        intrinsics_depth: ``[3, 3]`` depth intrinsics at the working resolution (differ from colour in ScanNet).
        has_depth, has_labels: whether depth / label images exist.
    """

    def __init__(self, *, name: str, root: Path, frame_ids: list[int], poses: np.ndarray, width: int, height: int,
                 color_paths: list[Path], color_intrinsics: np.ndarray, color_size: tuple[int, int],
                 depth_paths: list[Path | None] | None, depth_intrinsics: np.ndarray | None,
                 depth_size: tuple[int, int] | None, depth_scale: float,
                 label_paths: list[Path | None] | None, label_size: tuple[int, int] | None,
                 label_lut: np.ndarray | None, label_set: LabelSet):
        self.name, self.root = name, Path(root)
        self.frame_ids = list(frame_ids)
        self.poses = np.asarray(poses, np.float64)
        self.width, self.height = int(width), int(height)
        self._color_paths = color_paths
        self.color_size = color_size
        self.intrinsics = scale_intrinsics(color_intrinsics, width / color_size[0], height / color_size[1])
        self._depth_paths = depth_paths
        self.depth_size = depth_size
        self.depth_scale = float(depth_scale)
        if depth_paths is not None and depth_intrinsics is not None and depth_size is not None:
            self.intrinsics_depth = scale_intrinsics(depth_intrinsics, width / depth_size[0], height / depth_size[1])
        else:
            self.intrinsics_depth = self.intrinsics.copy()
        self._label_paths = label_paths
        self._label_lut = label_lut
        self.label_set = label_set
        self.label_size = label_size
        # labels are annotated on the colour image unless their size says they follow the depth camera
        if label_size is not None and depth_size is not None and label_size == depth_size != color_size:
            self.intrinsics_label = self.intrinsics_depth.copy()
        else:
            self.intrinsics_label = self.intrinsics.copy()

    def __len__(self) -> int:
        return len(self.frame_ids)

    def __repr__(self) -> str:
        return (f"Scene({self.name!r}, frames={len(self)}, size={self.width}x{self.height}, "
                f"depth={self.has_depth}, labels={self.has_labels}, label_set={self.label_set.name!r})")

    @property
    def has_depth(self) -> bool:
        return self._depth_paths is not None

    @property
    def has_labels(self) -> bool:
        return self._label_paths is not None and self._label_lut is not None

    def index_of(self, frame_id: int) -> int:
        try:
            return self.frame_ids.index(int(frame_id))
        except ValueError:
            raise KeyError(f"{self.name}: no frame id {frame_id} (ids {self.frame_ids[:5]}...)") from None

    # -- loaders (idx = position in frame_ids) -------------------------------------------------------
    def load_color(self, idx: int) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]``."""
        path = self._color_paths[idx]
        bgr = read_image(path, cv2.IMREAD_COLOR)
        _require_size(path, bgr, self.color_size, "colour")
        return np.ascontiguousarray(resize_color(bgr, self.width, self.height)[..., ::-1])

    def load_depth(self, idx: int) -> np.ndarray:
        """float32 metres ``[H, W]``, 0 where invalid (and everywhere when this frame has no depth file)."""
        if self._depth_paths is None:
            raise SceneFormatError(f"{self.name}: scene has no depth/ folder")
        path = self._depth_paths[idx]
        if path is None:
            return np.zeros((self.height, self.width), np.float32)
        depth = geometry.depth_from_raw(read_depth_image(path, self.depth_size), self.depth_scale)
        return resize_nearest(depth, self.width, self.height)

    def load_labels(self, idx: int) -> np.ndarray:
        """uint8 class ids ``[H, W]`` of the scene's label set, ``ignore_index`` where unlabelled."""
        if not self.has_labels:
            raise SceneFormatError(f"{self.name}: scene has no labels (label folder or label table missing)")
        path = self._label_paths[idx]
        if path is None:
            return np.full((self.height, self.width), self.label_set.ignore_index, np.uint8)
        raw = read_label_image(path, self.label_size)
        classes = self._label_lut[np.minimum(raw.astype(np.int64), self._label_lut.size - 1)]
        return resize_nearest(classes, self.width, self.height)

    # -- training ------------------------------------------------------------------------------------
    def preload(self, with_depth: bool = True, with_labels: bool = True, progress: bool = False) -> SceneArrays:
        """Read every frame into memory (colour, and depth / labels when present and asked for)."""
        n, h, w = len(self), self.height, self.width
        colors = np.empty((n, h, w, 3), np.uint8)
        depths = np.empty((n, h, w), np.float32) if (with_depth and self.has_depth) else None
        labels = np.empty((n, h, w), np.uint8) if (with_labels and self.has_labels) else None
        it = range(n)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"loading {self.name}", unit="frame")
        for i in it:
            colors[i] = self.load_color(i)
            if depths is not None:
                depths[i] = self.load_depth(i)
            if labels is not None:
                labels[i] = self.load_labels(i)
        near, far = 0.1, 10.0
        if depths is not None and np.any(depths > 0):
            valid = depths[depths > 0]
            lo, hi = np.percentile(valid, [0.5, 99.5])
            near, far = max(0.05, 0.8 * float(lo)), 1.2 * float(hi)
        return SceneArrays(name=self.name, frame_ids=np.asarray(self.frame_ids), colors=colors, depths=depths,
                           labels=labels, poses=self.poses.astype(np.float32), intrinsics=self.intrinsics.astype(np.float32),
                           intrinsics_depth=self.intrinsics_depth.astype(np.float32), near=near, far=far,
                           ignore_index=self.label_set.ignore_index)


def drop_invalid_poses(name: str, frame_ids: list[int], poses: list[np.ndarray]) -> tuple[list[int], np.ndarray]:
    """Keep frames whose pose is finite with an orthonormal rotation; warn once about the others."""
    from sray_ros.geometry import is_finite_pose

    ok = [is_finite_pose(p) for p in poses]
    keep = [i for i, good in enumerate(ok) if good]
    dropped = [frame_ids[i] for i, good in enumerate(ok) if not good]
    if dropped:
        warnings.warn(f"{name}: dropped {len(dropped)} frame(s) with non-finite or invalid poses: "
                      f"{dropped[:10]}{'...' if len(dropped) > 10 else ''}", stacklevel=3)
    if not keep:
        raise SceneFormatError(f"{name}: no frame has a valid (finite) pose")
    return [frame_ids[i] for i in keep], np.stack([poses[i] for i in keep]).astype(np.float64)
