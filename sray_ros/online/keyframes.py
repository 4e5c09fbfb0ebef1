"""Keyframe buffer: which posed frames the model renders from, with their features encoded once.

Acceptance policy of :meth:`KeyframeBuffer.consider`, checks in this order (the first failing one
is the rejection reason, and the counter of that reason is incremented):

1. ``invalid_pose``: ``c2w`` is not a finite rigid transform (:func:`sray_ros.geometry.is_finite_pose`;
   ScanNet poses can hold -inf). ``invalid_intrinsics``: K rejected by
   :func:`sray_ros.geometry.intrinsics_problem`. ``invalid_image``: rgb not ``uint8 [H, W, 3]``, or depth / labels /
   label_confidence of another size.
2. Time: a stamp older than the previous frame's is rejected as ``out_of_order``. A backwards jump of
   ROS time (bag loop) is the owner's to detect (its one :class:`~sray_ros.online.time_jump.TimeJumpDetector`),
   which then calls :meth:`KeyframeBuffer.clear`.
3. Motion, relative to the **most recent keyframe**: with ``d`` its camera-centre distance,
   ``a`` the relative rotation angle and ``dt`` the stamp difference, the frame is rejected as
   ``too_close`` when ``d < min_translation_m`` AND ``a < min_rotation_deg`` AND
   ``dt < min_interval_s``. In words: it is a keyframe candidate when it moved OR turned enough OR
   the last keyframe is older than ``min_interval_s`` (``math.inf``, the default, disables the time
   criterion, so a parked robot does not flush its buffer with identical frames). The first frame
   (empty buffer) passes.
4. ``blurred``: variance of the Laplacian of the grey image (after resizing) below
   ``blur_threshold`` (0 disables; the value depends on resolution and scene texture).
5. ``encode_fn(frame)`` is called exactly once; its result (the model's cached CNN features) is
   stored with the keyframe and never recomputed by queries. If it raises, the frame is rejected as
   ``encode_failed`` and the exception is kept in ``last_encode_error``.

Accepted reasons: ``first`` (buffer was empty), ``moved``, ``rotated``, ``interval`` (first
criterion that held, in that order).

Accepted frames are optionally resized to the model resolution (``target_size``; rgb with area
interpolation, depth and labels with :func:`geometry.resize_nearest`, K via
:func:`geometry.scale_intrinsics`), copied and made read-only.

Eviction (a full buffer receiving a keyframe) keeps spatial coverage: it drops the **most redundant**
keyframe, not the oldest. With the pose distance ``D(i, j) = |t_i - t_j| + r * angle(R_i, R_j)``
(camera centres in metres, relative rotation in radians, ``r = rotation_weight_m_per_rad``; by default
``min_translation_m / min_rotation_deg`` in m/rad, so one acceptance step of turning counts like one
of moving, or 0.5 m/rad when either is 0), a keyframe's redundancy is the sum of its distances to its
two nearest other keyframes: on a path, the gap its removal would leave between its neighbours. The
keyframe with the smallest sum is evicted (the older one on a tie); the newest never is. So a robot
moving on thins its recent frames to the spacing of the rest instead of dropping the start of its path
(a long trajectory ends up covered at roughly even spacing, its end points kept), and revisiting a
place replaces the old keyframe there (its nearest neighbour is then the new one, at distance ~0).
Cost: ``O(n^2)`` pose distances per eviction (n = ``max_keyframes``).

Keyframe ids are uint32, strictly increasing for the lifetime of the buffer (not reset by
``clear``, so ids reported in render responses stay unambiguous).

Threading: ``consider``, ``clear`` and ``reencode_all`` are serialised by an intake lock, and
encoding runs outside the lock that guards the ring, so :meth:`snapshot` (the render worker) never
waits for an encoder. ``snapshot`` returns an immutable tuple of frozen :class:`Keyframe` objects
whose arrays are read-only copies. Consequences for the node: ``clear`` waits for an encode in
flight; ``reencode_all`` holds intake for all keyframes (N encodes), so call it from a worker thread,
not from a subscription callback, and expect ``consider`` calls to wait meanwhile.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import torch

from sray_ros import geometry

NS_PER_S = 1_000_000_000
UINT32_MAX = 2**32 - 1

REJECT_REASONS = (
    "invalid_pose", "invalid_intrinsics", "invalid_image", "out_of_order", "too_close", "blurred", "encode_failed",
)
ACCEPT_REASONS = ("first", "moved", "rotated", "interval")


@dataclass(frozen=True)
class Frame:
    """One posed camera frame. ``c2w`` camera-to-world (OpenCV optical frame), depth in metres (0 = invalid),
    labels uint8 class ids (255 = ignore), label_confidence float32 in [0, 1] per label pixel (the segmenter's;
    weights that pixel's vote in label fusion, 0 = no vote; None = every label pixel votes with weight 1)."""

    stamp_ns: int
    c2w: np.ndarray  # [4, 4]
    K: np.ndarray  # [3, 3]
    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray | None = None  # float32 [H, W]
    labels: np.ndarray | None = None  # uint8 [H, W]
    frame_id: str = ""
    label_confidence: np.ndarray | None = None  # float32 [H, W]


@dataclass(frozen=True)
class Keyframe:
    """An accepted frame with its id and the cached result of ``encode_fn``."""

    id: int
    frame: Frame
    features: Any

    @property
    def stamp_ns(self) -> int:
        return self.frame.stamp_ns

    @property
    def c2w(self) -> np.ndarray:
        return self.frame.c2w


def variance_of_laplacian(rgb: np.ndarray) -> float:
    """Sharpness measure: variance of the 3x3 Laplacian of the grey image (higher = sharper)."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


class KeyframeBuffer:
    """Bounded ring of keyframes with the acceptance policy of the module docstring."""

    def __init__(
        self,
        max_keyframes: int = 32,
        min_translation_m: float = 0.1,
        min_rotation_deg: float = 10.0,
        min_interval_s: float = math.inf,
        blur_threshold: float = 0.0,
        encode_fn: Callable[[Frame], Any] | None = None,
        *,
        target_size: tuple[int, int] | None = None,
        rotation_weight_m_per_rad: float | None = None,
    ) -> None:
        if max_keyframes < 1:
            raise ValueError(f"max_keyframes must be >= 1, got {max_keyframes}")
        if min_translation_m < 0 or min_rotation_deg < 0 or min_interval_s < 0 or blur_threshold < 0:
            raise ValueError(
                "thresholds must be >= 0, got min_translation_m={}, min_rotation_deg={}, min_interval_s={}, "
                "blur_threshold={}".format(min_translation_m, min_rotation_deg, min_interval_s, blur_threshold)
            )
        if target_size is not None and (len(target_size) != 2 or min(target_size) < 1):
            raise ValueError(f"target_size must be (width, height) with positive entries, got {target_size}")
        self.max_keyframes = int(max_keyframes)
        self.min_translation_m = float(min_translation_m)
        self.min_rotation_deg = float(min_rotation_deg)
        self.min_interval_s = float(min_interval_s)
        self.blur_threshold = float(blur_threshold)
        self.encode_fn = encode_fn
        self.target_size = None if target_size is None else (int(target_size[0]), int(target_size[1]))
        if rotation_weight_m_per_rad is None:
            rotation_weight_m_per_rad = (self.min_translation_m / math.radians(self.min_rotation_deg)
                                         if self.min_translation_m > 0 and self.min_rotation_deg > 0 else 0.5)
        if not (math.isfinite(rotation_weight_m_per_rad) and rotation_weight_m_per_rad >= 0):
            raise ValueError(f"rotation_weight_m_per_rad must be finite and >= 0, got {rotation_weight_m_per_rad}")
        self.rotation_weight_m_per_rad = float(rotation_weight_m_per_rad)
        self._ring: deque[Keyframe] = deque()
        self._lock = threading.Lock()  # guards the ring and counters
        self._intake = threading.RLock()  # serialises consider / clear / reencode_all
        self._ids = itertools.count()
        self._last_stamp_ns: int | None = None
        self.rejected: dict[str, int] = {reason: 0 for reason in REJECT_REASONS}
        self.accepted: dict[str, int] = {reason: 0 for reason in ACCEPT_REASONS}
        self.evicted = 0
        self.clears = 0
        self.last_encode_error: BaseException | None = None

    # -------------------------------------------------------------------------------- queries
    def snapshot(self) -> tuple[Keyframe, ...]:
        """The current keyframes, oldest first, as an immutable tuple (safe to use from any thread)."""
        with self._lock:
            return tuple(self._ring)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ring)

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {
                "keyframes": len(self._ring),
                "accepted": dict(self.accepted),
                "rejected": dict(self.rejected),
                "evicted": self.evicted,
                "clears": self.clears,
            }

    # ------------------------------------------------------------------------------- mutation
    def clear(self) -> None:
        """Drop all keyframes (ids keep increasing)."""
        with self._intake, self._lock:
            self._ring.clear()
            self._last_stamp_ns = None
            self.clears += 1

    def consider(self, frame: Frame) -> tuple[bool, str]:
        """Apply the acceptance policy; on acceptance encode once and store. Returns (accepted, reason)."""
        with self._intake:
            reason = self._check(frame)
            if reason in REJECT_REASONS:
                return self._reject(reason)
            frame = self._prepare(frame)
            if self.blur_threshold > 0 and variance_of_laplacian(frame.rgb) < self.blur_threshold:
                return self._reject("blurred")
            try:
                features = self.encode_fn(frame) if self.encode_fn is not None else None
            except Exception as exc:  # noqa: BLE001 - reported as a rejection reason, kept for the node to log
                self.last_encode_error = exc
                return self._reject("encode_failed")
            keyframe = Keyframe(next(self._ids) & UINT32_MAX, frame, features)
            with self._lock:
                self._ring.append(keyframe)
                if len(self._ring) > self.max_keyframes:
                    del self._ring[self._most_redundant()]
                    self.evicted += 1
                self.accepted[reason] += 1
            return True, reason

    def reencode_all(self, encode_fn: Callable[[Frame], Any]) -> int:
        """Recompute the features of every keyframe with new weights; swaps them in atomically.

        ``encode_fn`` also becomes the encoder of future frames. Returns the number re-encoded.
        """
        with self._intake:
            current = self.snapshot()
            updated = [replace(keyframe, features=encode_fn(keyframe.frame)) for keyframe in current]
            with self._lock:
                self._ring = deque(updated)
            self.encode_fn = encode_fn
            return len(updated)

    # ------------------------------------------------------------------------------- internal
    def _most_redundant(self) -> int:
        """Ring index of the keyframe to evict (policy in the module docstring); the newest is exempt."""
        if len(self._ring) <= 2:
            return 0
        poses = np.stack([kf.c2w for kf in self._ring]).astype(np.float64)  # [n, 4, 4], oldest first
        centres, rots = poses[:, :3, 3], poses[:, :3, :3]
        dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        if self.rotation_weight_m_per_rad > 0:
            trace = np.einsum("iab,jab->ij", rots, rots)  # trace(R_i^T R_j)
            dist = dist + self.rotation_weight_m_per_rad * np.arccos(np.clip((trace - 1.0) * 0.5, -1.0, 1.0))
        np.fill_diagonal(dist, np.inf)
        two_nearest = np.sort(dist, axis=1)[:, :2].sum(axis=1)
        return int(np.argmin(two_nearest[:-1]))  # the newest is exempt; first minimum = the oldest on a tie

    def _reject(self, reason: str) -> tuple[bool, str]:
        with self._lock:
            self.rejected[reason] += 1
        return False, reason

    def _check(self, frame: Frame) -> str:
        """First failing check's reject reason, or the accept reason of the motion policy."""
        if not geometry.is_finite_pose(frame.c2w):
            return "invalid_pose"
        if geometry.intrinsics_problem(frame.K) is not None:
            return "invalid_intrinsics"
        rgb = frame.rgb
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
                and rgb.shape[0] > 0 and rgb.shape[1] > 0):
            return "invalid_image"
        for extra in (frame.depth, frame.labels, frame.label_confidence):
            if extra is not None and np.shape(extra) != rgb.shape[:2]:
                return "invalid_image"
        return self._check_motion(int(frame.stamp_ns), frame.c2w)

    def _check_motion(self, stamp: int, c2w) -> str:
        """Time (jump / out of order) and motion policy for a pose at a stamp (no image needed)."""
        if self._last_stamp_ns is not None and stamp < self._last_stamp_ns:
            return "out_of_order"
        self._last_stamp_ns = stamp
        with self._lock:
            last = self._ring[-1] if self._ring else None
        if last is None:
            return "first"
        c2w = np.asarray(c2w, dtype=np.float64)
        if np.linalg.norm(c2w[:3, 3] - last.c2w[:3, 3]) >= self.min_translation_m:
            return "moved"
        angle = geometry.relative_angle(torch.tensor(last.c2w), torch.from_numpy(c2w))  # copy: read-only array
        if math.degrees(float(angle)) >= self.min_rotation_deg:
            return "rotated"
        if (stamp - last.stamp_ns) / NS_PER_S >= self.min_interval_s:
            return "interval"
        return "too_close"

    def precheck(self, stamp_ns: int, c2w) -> tuple[bool, str]:
        """The pose, time and motion checks of :meth:`consider` for a frame not yet decoded.

        Intake calls this before converting and resizing images, so frames that cannot become keyframes
        (the camera has not moved) cost a pose lookup only. A rejection is counted here; an accepted
        precheck is followed by :meth:`consider`, which repeats these checks (cheap) with the images.
        """
        with self._intake:
            if not geometry.is_finite_pose(c2w):
                return self._reject("invalid_pose")
            reason = self._check_motion(int(stamp_ns), c2w)
            if reason in REJECT_REASONS:
                return self._reject(reason)
            return True, reason

    def _prepare(self, frame: Frame) -> Frame:
        """Resize to the model resolution (if set), copy, and freeze the arrays."""
        rgb, depth, labels = frame.rgb, frame.depth, frame.labels
        confidence = None if labels is None else frame.label_confidence
        K = np.asarray(frame.K, dtype=np.float64)
        if self.target_size is not None and (rgb.shape[1], rgb.shape[0]) != self.target_size:
            width, height = self.target_size
            sx, sy = width / rgb.shape[1], height / rgb.shape[0]
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            if depth is not None:
                depth = geometry.resize_nearest(np.asarray(depth, np.float32), width, height)
            if labels is not None:
                labels = geometry.resize_nearest(np.asarray(labels, np.uint8), width, height)
            if confidence is not None:  # nearest, like the labels it weights
                confidence = geometry.resize_nearest(np.asarray(confidence, np.float32), width, height)
            K = geometry.scale_intrinsics(K, sx, sy)
        arrays = {
            "c2w": np.array(frame.c2w, dtype=np.float64),
            "K": np.array(K, dtype=np.float64),
            "rgb": np.array(rgb, dtype=np.uint8),
            "depth": None if depth is None else np.array(depth, dtype=np.float32),
            "labels": None if labels is None else np.array(labels, dtype=np.uint8),
            "label_confidence": None if confidence is None else np.array(confidence, dtype=np.float32),
        }
        for value in arrays.values():
            if value is not None:
                value.setflags(write=False)
        return replace(frame, stamp_ns=int(frame.stamp_ns), **arrays)


__all__ = ["ACCEPT_REASONS", "Frame", "Keyframe", "KeyframeBuffer", "REJECT_REASONS", "variance_of_laplacian"]
