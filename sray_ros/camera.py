"""One pinhole camera value: intrinsics, image size and (optionally) pose, validated once where it is made.

A :class:`Camera` is created where a camera enters the package (a ROS camera_info at the node's edge, a
render request, a dataset frame) and carried unchanged to the keyframe buffer and the renderer, instead of
loose ``K, width, height, c2w`` tuples re-checked at every step. Conventions are :mod:`sray_ros.geometry`'s:
OpenCV optical frame (x right, y down, z forward), camera-to-world ``c2w``, pixel centres at integer
coordinates.

Batched: ``K`` may be ``[..., 3, 3]`` and ``c2w`` ``[..., 4, 4]`` with the same leading dimensions; the image
size is shared by the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from sray_ros import geometry


class CameraError(ValueError):
    """Camera values that cannot describe a pinhole camera; the message names the field and what is expected."""


@dataclass(frozen=True, eq=False)
class Camera:
    """Pinhole camera. ``K``: ``float64 [..., 3, 3]`` intrinsics of the image *as published* (pixels);
    ``width``, ``height``: image size in pixels (> 0); ``c2w``: ``float64 [..., 4, 4]`` camera-to-world
    (optical frame) or None when the pose is not known yet; ``notes``: sentences about fields of the source
    (e.g. a camera_info) that were interpreted or ignored, to be logged once.

    Raises :class:`CameraError` at construction for a non-pinhole ``K`` (:func:`geometry.intrinsics_problem`),
    a non-positive size, or a pose that is not a finite rigid transform. Arrays are copied and read-only.
    """

    K: np.ndarray
    width: int
    height: int
    c2w: np.ndarray | None = None
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        width, height = int(self.width), int(self.height)
        if width <= 0 or height <= 0:
            raise CameraError(f"camera needs a positive image size, got {self.width}x{self.height}")
        K = np.array(self.K, dtype=np.float64)
        if K.ndim < 2 or K.shape[-2:] != (3, 3):
            raise CameraError(f"intrinsics K must be [..., 3, 3], got shape {K.shape}")
        for k in K.reshape(-1, 3, 3):
            problem = geometry.intrinsics_problem(k, width, height)
            if problem is not None:
                raise CameraError(problem)
        K.setflags(write=False)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "height", height)
        object.__setattr__(self, "notes", tuple(self.notes))
        if self.c2w is not None:
            c2w = np.array(self.c2w, dtype=np.float64)
            if c2w.shape[-2:] != (4, 4) or c2w.shape[:-2] != K.shape[:-2]:
                raise CameraError(f"pose c2w must be [..., 4, 4] with K's batch shape {K.shape[:-2]}, got {c2w.shape}")
            if not all(geometry.is_finite_pose(p) for p in c2w.reshape(-1, 4, 4)):
                raise CameraError("pose c2w is not a finite rigid transform")
            c2w.setflags(write=False)
            object.__setattr__(self, "c2w", c2w)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.width, self.height

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.K.shape[:-2])

    def with_pose(self, c2w: np.ndarray) -> "Camera":
        """The same camera placed at ``c2w`` (``[..., 4, 4]``, camera-to-world)."""
        return replace(self, c2w=c2w)

    def scaled(self, width: int, height: int) -> "Camera":
        """The camera of the same view resized to ``width x height`` (:func:`geometry.scale_intrinsics`, pixel-
        centre convention); the pose is kept."""
        if (int(width), int(height)) == self.size:
            return self
        return replace(self, K=geometry.scale_intrinsics(self.K, width / self.width, height / self.height),
                       width=int(width), height=int(height))

    def same_view(self, other: "Camera", atol: float = 1e-6) -> bool:
        """True when ``other`` has the same size and intrinsics (its pixels are this camera's pixels)."""
        return self.size == other.size and self.K.shape == other.K.shape and np.allclose(self.K, other.K, atol=atol)

    def rays(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through every pixel centre, row-major: ``(origins, directions)``, each ``[..., H * W, 3]``
        in the world frame, directions scaled to unit camera-z (:func:`geometry.generate_rays`). Needs a pose."""
        if self.c2w is None:
            raise CameraError("camera has no pose: rays need c2w")
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        K = torch.from_numpy(np.asarray(self.K, np_dtype)).to(device=device, dtype=dtype)
        c2w = torch.from_numpy(np.asarray(self.c2w, np_dtype)).to(device=device, dtype=dtype)
        uv = geometry.pixel_grid(self.height, self.width, device=c2w.device, dtype=dtype)
        if not self.batch_shape:
            return geometry.generate_rays(K, c2w, uv)
        pairs = [geometry.generate_rays(k, p, uv) for k, p in zip(K.reshape(-1, 3, 3), c2w.reshape(-1, 4, 4))]
        shape = (*self.batch_shape, uv.shape[0], 3)
        return (torch.stack([o for o, _ in pairs]).reshape(shape), torch.stack([d for _, d in pairs]).reshape(shape))

__all__ = ["Camera", "CameraError"]
