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


def main(argv: list[str] | None = None) -> int:
    """``python -m sray_ros.data.checks ROOT [--gap 5 --pairs 4]``: reprojection stats of every scene under ROOT."""
    import argparse

    from sray_ros.data.scannet import list_scannet_scenes, load_scannet_scene

    ap = argparse.ArgumentParser(prog="python -m sray_ros.data.checks", description=main.__doc__)
    ap.add_argument("root", help="a ScanNet-layout scene folder, or a folder of them")
    ap.add_argument("--gap", type=int, default=5, help="frame offset between the two views of a pair")
    ap.add_argument("--pairs", type=int, default=4, help="pairs per scene (evenly spread)")
    args = ap.parse_args(argv)
    from pathlib import Path

    root = Path(args.root)
    roots = [root] if (root / "pose").is_dir() else list_scannet_scenes(root)
    errs, agrees = [], []
    for r in roots:
        s = load_scannet_scene(r)
        if not s.has_depth or len(s) <= args.gap:
            continue
        starts = np.linspace(0, len(s) - 1 - args.gap, args.pairs).astype(int)
        rows = [reprojection_stats(s, int(a), int(a) + args.gap) for a in starts]
        e = float(np.median([x.median_depth_error for x in rows]))
        ag = [x.label_agreement for x in rows if x.label_agreement is not None]
        errs.append(e)
        agrees += ag
        print(f"{s.name}: median depth error {1000 * e:.2f} mm"
              + (f", label agreement {100 * np.mean(ag):.2f} %" if ag else "")
              + f", co-visible {np.mean([x.covisible for x in rows]) / (s.width * s.height):.0%}")
    if errs:
        print(f"all {len(errs)} scenes: median depth error {1000 * float(np.median(errs)):.2f} mm (worst "
              f"{1000 * max(errs):.2f} mm)" + (f", label agreement {100 * np.mean(agrees):.2f} % "
                                              f"(worst pair {100 * min(agrees):.2f} %)" if agrees else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
