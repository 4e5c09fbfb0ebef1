"""Multi-view consistency checks of a scene's depth, poses, intrinsics and labels (used by tests and
to validate new data): back-project one frame's depth, project into another, compare."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sray_ros.data.scene import Scene
from sray_ros.geometry import backproject_depth, invert_pose, project_with_validity


@dataclass
class ReprojectionStats:
    covisible: int  # pixels of frame a whose depth agrees with frame b within `occlusion_tol`
    projected: int  # valid depth pixels of a that land inside b with valid depth there
    median_depth_error: float  # metres, over `projected` pixels (occlusions included, hence the median)
    label_agreement: float | None  # fraction of co-visible pixels, both labelled, with equal labels


def reprojection_stats(scene: Scene, a: int, b: int, occlusion_tol: float = 0.05) -> ReprojectionStats:
    """Reproject frame ``a``'s depth into frame ``b`` (positions in ``scene.frame_ids``)."""
    da = torch.from_numpy(scene.load_depth(a).astype(np.float64))
    db = scene.load_depth(b)
    Kd = torch.from_numpy(np.asarray(scene.intrinsics_depth, np.float64))
    pa, pb = (torch.from_numpy(scene.poses[i]) for i in (a, b))
    h, w = db.shape
    pts = backproject_depth(da, Kd, pa)
    uv, z, valid = project_with_validity(pts, Kd, invert_pose(pb), h, w)
    valid &= da.reshape(-1) > 0
    cols = uv[:, 0].round().long().clamp(0, w - 1).numpy()
    rows = uv[:, 1].round().long().clamp(0, h - 1).numpy()
    z = z.numpy()
    dz = db[rows, cols]
    proj = valid.numpy() & (dz > 0)
    err = np.abs(dz - z)
    cov = proj & (err < occlusion_tol)
    agreement = None
    if scene.has_labels:
        la = scene.load_labels(a).reshape(-1)
        lb = scene.load_labels(b)[rows, cols]
        ign = scene.label_set.ignore_index
        both = cov & (la != ign) & (lb != ign)
        agreement = float(np.mean(la[both] == lb[both])) if both.any() else None
    return ReprojectionStats(covisible=int(cov.sum()), projected=int(proj.sum()),
                             median_depth_error=float(np.median(err[proj])) if proj.any() else float("nan"),
                             label_agreement=agreement)
