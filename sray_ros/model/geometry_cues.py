"""Geometry cues from a keyframe's depth and pose that do not depend on appearance.

Synthetic and real rooms share geometry far more than texture: a floor is a horizontal surface at the bottom
of the room, a table top a horizontal surface 0.7 m above it, a wall a vertical one. Two per-pixel cues carry
this to the semantic prior (:mod:`sray_ros.model.semantic_prior`):

- **upward normal** ``n . up`` in [-1, 1]: the surface normal (from the back-projected depth, central
  differences, oriented towards the camera) in world coordinates, projected on the up direction: +1 on floors
  and table tops, 0 on walls, -1 on ceilings.
- **height** above the lowest observed surface of the keyframe along ``up``, in metres: the surface point's
  world height minus a low percentile (2 %) of the heights the keyframe sees. A keyframe that sees the floor
  measures from the floor; one that does not, from the lowest thing it sees (a documented limitation: the cue
  is per keyframe so that it can be computed once, when the keyframe arrives).

``up`` is the world's gravity-up unit vector: ``+z`` in REP-103 frames (``map``, ``odom``) and in the
synthetic rooms; :func:`estimate_up` finds it for datasets whose world frame is not z-up.

Shapes: depth ``[m, H, W]`` metres (0 / non-finite = unknown), K ``[m, 3, 3]``, c2w ``[m, 4, 4]`` (OpenCV
optical frame, :mod:`sray_ros.geometry`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sray_ros import geometry

NUM_CUES = 3  # upward normal, height (m), validity
FLOOR_PERCENTILE = 0.02


def camera_points(depth: Tensor, K: Tensor) -> Tensor:
    """Back-project depth ``[m, H, W]`` to camera-frame points ``[m, H, W, 3]`` (integer pixel centres)."""
    m, h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype, device=depth.device),
                          torch.arange(w, dtype=depth.dtype, device=depth.device), indexing="ij")
    fx, fy = K[:, 0, 0].view(m, 1, 1), K[:, 1, 1].view(m, 1, 1)
    cx, cy = K[:, 0, 2].view(m, 1, 1), K[:, 1, 2].view(m, 1, 1)
    return torch.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)


def camera_normals(depth: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Unit surface normals ``[m, H, W, 3]`` in the camera frame, oriented towards the camera, and their
    validity ``[m, H, W]`` bool (the pixel and its four neighbours have valid depth; depth discontinuities of
    more than 10 % are not surfaces and are invalid)."""
    depth = depth.float()
    valid = geometry.valid_depth(depth)
    d = torch.where(valid, depth, torch.zeros_like(depth))
    p = camera_points(d, K.float())
    pad = F.pad(p.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)
    du = pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]
    dv = pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1]
    n = F.normalize(torch.cross(du, dv, dim=-1), dim=-1)
    n = torch.where((n * p).sum(-1, keepdim=True) > 0, -n, n)  # face the camera
    vpad = F.pad(valid[:, None].float(), (1, 1, 1, 1))[:, 0] > 0
    dpad = F.pad(d[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    ok = valid & vpad[:, 1:-1, 2:] & vpad[:, 1:-1, :-2] & vpad[:, 2:, 1:-1] & vpad[:, :-2, 1:-1]
    for nb in (dpad[:, 1:-1, 2:], dpad[:, 1:-1, :-2], dpad[:, 2:, 1:-1], dpad[:, :-2, 1:-1]):
        ok &= (nb - d).abs() <= 0.1 * d
    return n, ok


def cue_maps(depth: Tensor, K: Tensor, c2w: Tensor, up: Tensor | None = None) -> Tensor:
    """Per-pixel cues ``[m, 3, H, W]``: upward normal, height above the keyframe's lowest observed surface
    (metres), validity (1 where the first two are defined, else all three are 0). ``up`` ``[3]`` world
    gravity-up (default ``+z``; normalised here)."""
    m, h, w = depth.shape
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else torch.as_tensor(up, dtype=torch.float32)
    up = F.normalize(up.to(depth.device).float(), dim=0)
    n_cam, ok = camera_normals(depth, K)
    R = c2w[:, :3, :3].float()
    n_world = torch.einsum("mij,mhwj->mhwi", R, n_cam)
    up_normal = (n_world * up).sum(-1)
    p_world = torch.einsum("mij,mhwj->mhwi", R, camera_points(torch.where(geometry.valid_depth(depth.float()),
                                                                          depth.float(), 0.0), K.float()))
    p_world = p_world + c2w[:, None, None, :3, 3].float()
    height = (p_world * up).sum(-1)
    valid_d = geometry.valid_depth(depth.float())
    floor = torch.zeros(m, device=depth.device)
    for i in range(m):  # the lowest observed surface of each keyframe (a low percentile: robust to outliers)
        hv = height[i][valid_d[i]]
        if hv.numel():
            floor[i] = torch.quantile(hv[:: max(1, hv.numel() // 20000)], FLOOR_PERCENTILE)
    height = height - floor.view(m, 1, 1)
    okf = ok.float()
    return torch.stack([up_normal * okf, height * okf, okf], 1)


def estimate_up(c2w: Tensor, depth: Tensor | None = None, K: Tensor | None = None) -> Tensor:
    """World up direction ``[3]`` of a sequence of cameras ``c2w [n, 4, 4]`` held roughly upright.

    First guess: minus the mean of the cameras' image-down (optical ``y``) axes. With depth ``[n, H, W]`` and
    K, refined by the mean of the surface normals within 30 deg of that guess (floors, table tops: horizontal
    surfaces dominate the up-facing normals of indoor scenes).
    """
    guess = F.normalize(-c2w[:, :3, 1].float().mean(0), dim=0)
    if depth is None or K is None:
        return guess
    n_cam, ok = camera_normals(depth, K)
    n_world = torch.einsum("mij,mhwj->mhwi", c2w[:, :3, :3].float(), n_cam)[ok]
    close = n_world[(n_world @ guess) > 0.866]
    return F.normalize(close.mean(0), dim=0) if close.shape[0] > 100 else guess
