"""Camera conventions, projection, ray generation and pose math: the one place that owns them.

Conventions, decided once for the whole package:

* Camera frame: OpenCV / REP-103 optical frame, x right, y down, z forward.
* Poses are camera-to-world 4x4 matrices (``c2w``), as ScanNet ``pose/*.txt`` and Replica
  ``traj_w_c.txt`` store them. World-to-camera (``w2c``) is derived with :func:`invert_pose`.
* Pixel coordinates ``(u, v)`` are continuous with **pixel centres at integer coordinates**: the
  centre of the pixel in row ``i``, column ``j`` is ``(u, v) = (j, i)``. This is OpenCV's convention
  and the one ScanNet / Replica intrinsics use (Replica: ``cx = 319.5`` for a 640-wide image).
  The image covers ``u in [-0.5, W - 0.5]``.
* Ray directions returned by :func:`generate_rays` are scaled so that their camera-z component is 1:
  a ray parameter ``t`` is then the z-depth of the point, which is what depth maps hold and what the
  renderer's expected depth means.
* A point is visible in a camera when its camera-frame ``z > eps`` and its projection lies inside the
  image (``-0.5 <= u < W - 0.5``, same for ``v``).

* Depth and label images are resized with :func:`resize_nearest` only (exact nearest neighbour under
  the pixel-centre convention above), everywhere: readers, the node's intake, fine-tuning.
* Depth registration (:func:`register_depth`) maps a depth image from its own pinhole camera into
  another one (the colour camera) by reprojection, never by stretching.

Functions accept ``torch.Tensor`` with arbitrary leading batch dimensions unless stated otherwise.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

DEPTH_EPS = 1e-4  # metres; points closer than this (or behind) a camera are invalid
# Depth sensors write 65535 (the uint16 maximum) for "no return" (seen in a real HoloLens sequence);
# read as millimetres it would be a wall at 65.5 m. It is invalid depth, like 0 and non-finite values.
DEPTH_NO_RETURN_RAW = 65535


def depth_from_raw(raw: np.ndarray, scale: float = 1000.0) -> np.ndarray:
    """Metric depth ``float32 [H, W]`` from a raw depth image (uint16 millimetres when ``scale`` is 1000,
    or float metres with ``scale`` 1). Invalid depth becomes 0, the one "unknown" marker downstream:
    0, negative and non-finite values, and the uint16 "no return" value 65535."""
    raw = np.asarray(raw)
    depth = raw.astype(np.float32) / np.float32(scale)
    invalid = ~np.isfinite(depth) | (depth < 0)
    if raw.dtype.kind == "u" and raw.dtype.itemsize == 2:  # any byte order
        invalid |= raw == DEPTH_NO_RETURN_RAW
    depth[invalid] = 0.0
    return depth


def valid_depth(depth: Tensor) -> Tensor:
    """Boolean mask of usable metric depth: finite and ``> DEPTH_EPS`` (0 means unknown)."""
    return torch.isfinite(depth) & (depth > DEPTH_EPS)


# --------------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------------
def invert_pose(pose: Tensor) -> Tensor:
    """Invert rigid transforms ``[..., 4, 4]`` (c2w <-> w2c) without a general matrix inverse."""
    rot = pose[..., :3, :3]
    trans = pose[..., :3, 3:]
    rot_t = rot.transpose(-1, -2)
    out = torch.zeros_like(pose)
    out[..., :3, :3] = rot_t
    out[..., :3, 3:] = -rot_t @ trans
    out[..., 3, 3] = 1.0
    return out


def camera_centers(c2w: Tensor) -> Tensor:
    """Camera centres ``[..., 3]`` in world coordinates."""
    return c2w[..., :3, 3]


def viewing_directions(c2w: Tensor) -> Tensor:
    """Unit optical axes (camera +z) ``[..., 3]`` in world coordinates."""
    return c2w[..., :3, 2]


def relative_angle(c2w_a: Tensor, c2w_b: Tensor) -> Tensor:
    """Angle in radians of the relative rotation between two camera orientations (broadcasting)."""
    rel = c2w_a[..., :3, :3].transpose(-1, -2) @ c2w_b[..., :3, :3]
    trace = rel[..., 0, 0] + rel[..., 1, 1] + rel[..., 2, 2]
    return torch.arccos(((trace - 1.0) * 0.5).clamp(-1.0, 1.0))


def is_finite_pose(pose: np.ndarray | Tensor) -> bool:
    """True when a 4x4 pose is finite and its rotation block is orthonormal with det +1."""
    pose_np = pose.detach().cpu().numpy() if isinstance(pose, Tensor) else np.asarray(pose)
    if pose_np.shape != (4, 4) or not np.all(np.isfinite(pose_np)):
        return False
    rot = pose_np[:3, :3].astype(np.float64)
    return bool(np.allclose(rot @ rot.T, np.eye(3), atol=1e-3) and abs(np.linalg.det(rot) - 1.0) < 1e-3)


def quaternion_to_matrix(quat_xyzw: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` from quaternions ``[..., 4]`` in ROS order (x, y, z, w)."""
    q = quat_xyzw / quat_xyzw.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(rot: Tensor) -> Tensor:
    """Quaternions ``[..., 4]`` (x, y, z, w), w >= 0, from rotation matrices ``[..., 3, 3]``.

    Uses the numerically stable branch for each input (largest diagonal term).
    """
    m = rot
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack(
        [
            torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                         m[..., 1, 0] - m[..., 0, 1], 1 + trace], -1),
            torch.stack([1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                         m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
            torch.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                         m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                         1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], m[..., 1, 0] - m[..., 0, 1]], -1),
        ],
        dim=-2,
    )  # [..., 4 branches, 4]
    keys = torch.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = keys.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:4] < 0, -q, q)


def quaternion_slerp(q0: Tensor, q1: Tensor, t: Tensor | float) -> Tensor:
    """Spherical linear interpolation of quaternions ``[..., 4]`` (x, y, z, w); ``t=0`` gives ``q0``.

    Takes the shorter arc (flips ``q1`` when the dot product is negative); falls back to normalised
    linear interpolation when the two are nearly parallel. Returns unit quaternions.
    """
    q0 = q0 / q0.norm(dim=-1, keepdim=True)
    q1 = q1 / q1.norm(dim=-1, keepdim=True)
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.arccos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6
    safe_sin = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1.0 - t, torch.sin((1.0 - t) * theta) / safe_sin)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe_sin)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def pose_from_translation_quaternion(translation: Tensor, quat_xyzw: Tensor) -> Tensor:
    """4x4 transforms from a translation ``[..., 3]`` and a quaternion ``[..., 4]`` (x, y, z, w)."""
    pose = torch.zeros(*translation.shape[:-1], 4, 4, dtype=translation.dtype, device=translation.device)
    pose[..., :3, :3] = quaternion_to_matrix(quat_xyzw.to(translation.dtype))
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1.0
    return pose


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """Camera-to-world pose (OpenCV optical frame) at ``eye`` looking at ``target``.

    ``up`` is the world up vector (default +z); the camera's -y axis is aligned with it as far as
    the viewing direction allows.
    """
    if up is None:
        up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(-up, z)  # right = down x forward (optical frame: y x z = x)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    y = torch.linalg.cross(z, x)
    pose = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    pose[..., :3, 0], pose[..., :3, 1], pose[..., :3, 2], pose[..., :3, 3] = x, y, z, eye
    pose[..., 3, 3] = 1.0
    return pose


# --------------------------------------------------------------------------------------------------
# Intrinsics
# --------------------------------------------------------------------------------------------------
def scale_intrinsics(K: Tensor | np.ndarray, sx: float, sy: float):
    """Intrinsics of an image resized by ``(sx, sy)`` (new_size / old_size), integer-centre pixels.

    A pixel centre ``u`` maps to ``(u + 0.5) * sx - 0.5``; so ``fx' = fx sx`` and
    ``cx' = (cx + 0.5) sx - 0.5``. Works for numpy arrays and tensors of shape ``[..., 3, 3]``.
    """
    out = K.clone() if isinstance(K, Tensor) else np.array(K, dtype=np.float64, copy=True)
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 0, 1] = K[..., 0, 1] * sx
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return out


def intrinsics_problem(K, width: int | None = None, height: int | None = None) -> str | None:
    """Why ``K`` cannot be a pinhole intrinsics matrix of a ``width x height`` image, or None when it can.

    Requires a finite ``3x3`` matrix with positive focal lengths ``fx = K[0, 0]``, ``fy = K[1, 1]``,
    last row ``[0, 0, 1]``, zero ``K[1, 0]``, and (when a size is given) a positive size. The one check
    the node's camera_info intake, the keyframe buffer and the renderer share.
    """
    k = np.asarray(K.detach().cpu().numpy() if isinstance(K, Tensor) else K, dtype=np.float64)
    if k.shape != (3, 3):
        return f"intrinsics K must be 3x3, got shape {k.shape}"
    if not np.all(np.isfinite(k)):
        return f"intrinsics K contain non-finite values: {k.reshape(-1).tolist()}"
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        return (f"intrinsics K need positive focal lengths, got fx={k[0, 0]}, fy={k[1, 1]} "
                "(an all-zero K means the camera is uncalibrated)")
    if not np.allclose(k[2], [0.0, 0.0, 1.0]) or k[1, 0] != 0:
        return f"intrinsics K must be upper triangular with last row [0, 0, 1], got {k.reshape(-1).tolist()}"
    if width is not None and height is not None and (width <= 0 or height <= 0):
        return f"camera needs a positive image size, got {width}x{height}"
    return None


def resize_nearest(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Depth or label image ``[H, W]`` (or ``[H, W, C]``) resized to ``width x height`` by exact nearest
    neighbour: output pixel centre ``u'`` samples the input pixel whose centre is nearest to
    ``(u' + 0.5) / sx - 0.5`` (the pixel convention of :func:`scale_intrinsics`), a half-way point going to
    the higher index: input column ``floor((u' + 0.5) * W / width)``, the same rule as
    :func:`register_depth`. Values are never interpolated, so a label map holds only input ids and depth
    edges never mix depths. Computed with numpy index arithmetic rather than ``cv2.INTER_NEAREST_EXACT``,
    whose fixed-point arithmetic picks other pixels for non-integer ratios and differs between OpenCV 4.6
    and 5.0. Returns the input itself when the size already matches."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    h_in, w_in = img.shape[:2]
    cols = np.minimum(np.floor((np.arange(int(width)) + 0.5) * (w_in / int(width))).astype(np.int64), w_in - 1)
    rows = np.minimum(np.floor((np.arange(int(height)) + 0.5) * (h_in / int(height))).astype(np.int64), h_in - 1)
    return np.ascontiguousarray(img[rows[:, None], cols[None, :]])


@functools.lru_cache(maxsize=8)
def _same_frame_lookup(kd: bytes, kc: bytes, wd: int, hd: int, width: int, height: int,
                       rot: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flat source-pixel and target-pixel indices of :func:`resample_same_centre` (the mapping depends on the
    intrinsics, sizes and rotation only, so a camera pair computes it once). ``kd``: source intrinsics,
    ``kc``: target intrinsics, ``rot``: ``R_source_target`` (None = identity)."""
    Kd, Kc = np.frombuffer(kd).reshape(3, 3), np.frombuffer(kc).reshape(3, 3)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    mapping = Kd @ np.linalg.inv(Kc) if rot is None else Kd @ np.frombuffer(rot).reshape(3, 3) @ np.linalg.inv(Kc)
    homog = np.stack([u, v, np.ones_like(u)], -1) @ mapping.T
    ud, vd = homog[..., 0] / homog[..., 2], homog[..., 1] / homog[..., 2]
    # nearest pixel centre; floor(x + 0.5) so a half-way point goes to the higher index consistently
    cols, rows = np.floor(ud + 0.5).astype(np.int64), np.floor(vd + 0.5).astype(np.int64)
    inside = ((cols >= 0) & (cols < wd) & (rows >= 0) & (rows < hd) & (homog[..., 2] > 0)).reshape(-1)
    source, target = (rows.reshape(-1) * wd + cols.reshape(-1))[inside], np.flatnonzero(inside)
    source.setflags(write=False)  # cached: shared by every call
    target.setflags(write=False)
    return source, target


def resample_same_centre(image: np.ndarray, K_source: np.ndarray, K_target: np.ndarray,
                         target_size: tuple[int, int], fill, target_from_source_rotation: np.ndarray | None = None
                         ) -> np.ndarray:
    """A per-pixel image ``[Hs, Ws]`` (labels, confidence) of one camera re-expressed in another camera with the
    same optical centre: each target pixel takes the value of the source pixel its ray hits, the nearest one
    (no interpolation, so label ids stay ids); target pixels the source does not see get ``fill``.

    Exact for any pair of pinhole cameras sharing a centre (the mapping does not depend on depth): another
    resolution, a crop (ROI), a wider or narrower view, or a rotation about the centre
    (``target_from_source_rotation``, ``[3, 3]``; None = same axes). Cameras with different centres need depth
    (:func:`register_depth`). Returns ``[Ht, Wt]`` of the input's dtype.
    """
    image = np.asarray(image)
    width, height = int(target_size[0]), int(target_size[1])
    Ks, Kt = np.asarray(K_source, np.float64), np.asarray(K_target, np.float64)
    hs, ws = image.shape[:2]
    rot = None
    if target_from_source_rotation is not None:
        R = np.asarray(target_from_source_rotation, np.float64)
        if not np.allclose(R, np.eye(3), atol=1e-9):
            rot = np.ascontiguousarray(R.T).tobytes()  # R_source_target
    if rot is None and (ws, hs) == (width, height) and np.allclose(Ks, Kt):
        return image.copy()
    source, target = _same_frame_lookup(Ks.tobytes(), Kt.tobytes(), ws, hs, width, height, rot)
    out = np.full(height * width, fill, image.dtype)
    out[target] = image.reshape(-1)[source]
    return out.reshape(height, width)


def register_depth(depth: np.ndarray, K_depth: np.ndarray, K_color: np.ndarray, color_size: tuple[int, int],
                   color_from_depth: np.ndarray | None = None) -> np.ndarray:
    """Depth image of the depth camera re-expressed in the colour camera (pinhole reprojection).

    Args:
        depth: ``float32 [Hd, Wd]`` z-depth in metres of the depth camera, 0 = invalid.
        K_depth, K_color: ``[3, 3]`` pinhole intrinsics of the two cameras (rectified, no distortion).
        color_size: ``(width, height)`` of the colour image.
        color_from_depth: ``[4, 4]`` rigid transform from the depth optical frame to the colour optical
            frame; None (or identity) when the two optical frames coincide.
    Returns:
        ``float32 [Hc, Wc]`` z-depth in the colour camera's frame, 0 where no depth pixel lands.

    Coinciding optical frames: the mapping between the two images does not depend on depth (same centre,
    same axes), so each colour pixel samples the depth pixel at ``K_depth K_color^-1 (u, v, 1)``, the
    nearest one (as :func:`resize_nearest` does; identical to it when the intrinsics are a scaled copy),
    and z is unchanged. Otherwise every valid depth pixel is back-projected, moved into the colour frame
    and splatted to its nearest colour pixel, keeping the nearest surface (z-buffer); colour pixels no
    depth pixel lands on stay 0 (holes where the colour camera is finer or sees around an occluder).
    """
    depth = np.asarray(depth, np.float32)
    width, height = int(color_size[0]), int(color_size[1])
    Kd, Kc = np.asarray(K_depth, np.float64), np.asarray(K_color, np.float64)
    hd, wd = depth.shape
    if color_from_depth is None or np.allclose(color_from_depth, np.eye(4), atol=1e-9):
        return resample_same_centre(depth, Kd, Kc, (width, height), 0.0)
    T = np.asarray(color_from_depth, np.float64)
    rows, cols = np.nonzero(np.isfinite(depth) & (depth > DEPTH_EPS))
    z = depth[rows, cols].astype(np.float64)
    rays = np.stack([cols, rows, np.ones_like(cols)], -1).astype(np.float64) @ np.linalg.inv(Kd).T
    points = (rays * z[:, None]) @ T[:3, :3].T + T[:3, 3]
    zc = points[:, 2]
    front = zc > DEPTH_EPS
    pix = points[front] @ Kc.T
    uc, vc, zc = pix[:, 0] / pix[:, 2], pix[:, 1] / pix[:, 2], zc[front]
    cc, rc = np.floor(uc + 0.5).astype(np.int64), np.floor(vc + 0.5).astype(np.int64)
    inside = (cc >= 0) & (cc < width) & (rc >= 0) & (rc < height)
    cc, rc, zc = cc[inside], rc[inside], zc[inside]
    flat = rc * width + cc
    order = np.lexsort((zc, flat))  # by pixel, nearest surface first within a pixel (z-buffer)
    pixels, first = np.unique(flat[order], return_index=True)
    out = np.zeros(height * width, np.float32)
    out[pixels] = zc[order][first]
    return out.reshape(height, width)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float, dtype=torch.float32) -> Tensor:
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


# --------------------------------------------------------------------------------------------------
# Rays and projection
# --------------------------------------------------------------------------------------------------
def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel-centre coordinates ``[H*W, 2]`` as (u, v), row-major (index = row * W + col)."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def generate_rays(K: Tensor, c2w: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
    """World-space rays through pixel coordinates.

    Args:
        K: ``[3, 3]`` intrinsics; c2w: ``[4, 4]`` pose; uv: ``[N, 2]`` pixel coordinates.
    Returns:
        origins ``[N, 3]`` and directions ``[N, 3]`` whose camera-z component is 1, so that
        ``origin + t * direction`` is the point at z-depth ``t``.
    """
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    y = (uv[:, 1] - cy) / fy
    x = (uv[:, 0] - cx - skew * y) / fx
    dirs_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    dirs = dirs_cam @ c2w[:3, :3].T
    origins = c2w[:3, 3].expand_as(dirs)
    return origins, dirs


def project_points(points: Tensor, K: Tensor, w2c: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points into cameras.

    Args:
        points: ``[..., P, 3]`` world points; K: ``[..., 3, 3]``; w2c: ``[..., 4, 4]`` (batch dims of
        K / w2c broadcast against those of points, e.g. points ``[1, P, 3]`` with ``m`` cameras
        ``[m, 4, 4]`` gives ``[m, P, ...]``).
    Returns:
        uv ``[..., P, 2]`` pixel coordinates and z ``[..., P]`` camera-frame depth.
    """
    cam = points @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]
    z = cam[..., 2]
    pix = cam @ K.transpose(-1, -2)
    uv = pix[..., :2] / z.unsqueeze(-1).clamp_min(DEPTH_EPS)
    return uv, z


def in_image(uv: Tensor, height: int, width: int) -> Tensor:
    """True where pixel coordinates fall inside an image of the given size."""
    return (uv[..., 0] >= -0.5) & (uv[..., 0] < width - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] < height - 0.5)


def project_with_validity(points: Tensor, K: Tensor, w2c: Tensor, height: int, width: int):
    """:func:`project_points` plus a validity mask (in front of the camera and inside the image)."""
    uv, z = project_points(points, K, w2c)
    valid = (z > DEPTH_EPS) & in_image(uv, height, width)
    return uv, z, valid


def normalize_pixels(uv: Tensor, height: int, width: int) -> Tensor:
    """Pixel coordinates -> ``grid_sample`` coordinates in [-1, 1] (``align_corners=False``).

    With integer-centre pixels, the image edge ``u = -0.5`` maps to -1 and ``u = W - 0.5`` to +1.
    """
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=uv.dtype, device=uv.device)
    return (uv + 0.5) * scale - 1.0


def backproject_depth(depth: Tensor, K: Tensor, c2w: Tensor) -> Tensor:
    """World points ``[H*W, 3]`` of a z-depth map ``[H, W]`` (row-major pixel order)."""
    h, w = depth.shape
    origins, dirs = generate_rays(K, c2w, pixel_grid(h, w, device=depth.device, dtype=depth.dtype))
    return origins + dirs * depth.reshape(-1, 1)


# --------------------------------------------------------------------------------------------------
# Sampling along rays
# --------------------------------------------------------------------------------------------------
def sample_inverse_depth(near: Tensor, far: Tensor, num_samples: int, perturb: bool = False) -> Tensor:
    """Depths ``[R, N]`` uniform in inverse depth between ``near`` and ``far`` (each ``[R]``).

    With ``perturb`` each sample is jittered uniformly inside its bin (stratified sampling).
    Depths are sorted ascending (near first).
    """
    steps = torch.linspace(0.0, 1.0, num_samples, device=near.device, dtype=near.dtype)
    if perturb:
        width = 1.0 / max(num_samples - 1, 1)
        jitter = (torch.rand(near.shape[0], num_samples, device=near.device, dtype=near.dtype) - 0.5) * width
        steps = (steps + jitter).clamp(0.0, 1.0).sort(dim=-1).values
    else:
        steps = steps.expand(near.shape[0], num_samples)
    inv_near, inv_far = 1.0 / near[:, None], 1.0 / far[:, None]
    return 1.0 / (inv_near * (1.0 - steps) + inv_far * steps)


def sample_pdf(depths: Tensor, weights: Tensor, num_samples: int, deterministic: bool = True) -> Tensor:
    """Importance-sample ``num_samples`` depths ``[R, num]`` from per-sample weights ``[R, N]``.

    Bins are the midpoints between the given sorted depths; each bin's probability is proportional to
    the weight of the sample inside it. Returns samples sorted ascending, detached from the graph.
    """
    depths = depths.detach()
    weights = weights.detach() + 1e-5
    mids = 0.5 * (depths[:, 1:] + depths[:, :-1])
    edges = torch.cat([depths[:, :1], mids, depths[:, -1:]], dim=-1)  # [R, N+1]
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], dim=-1).clamp(max=1.0)
    if deterministic:
        u = torch.linspace(0.0, 1.0, num_samples + 2, device=depths.device, dtype=depths.dtype)[1:-1]
        u = u.expand(depths.shape[0], num_samples).contiguous()
    else:
        u = torch.rand(depths.shape[0], num_samples, device=depths.device, dtype=depths.dtype)
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, edges.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    e_lo, e_hi = edges.gather(-1, idx - 1), edges.gather(-1, idx)
    frac = (u - cdf_lo) / (cdf_hi - cdf_lo).clamp_min(1e-8)
    return (e_lo + frac * (e_hi - e_lo)).sort(dim=-1).values


def deg2rad(deg: float) -> float:
    return deg * math.pi / 180.0
