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


def check_files(scene: Scene) -> None:
    """Read every frame's colour, depth and label image through the scene's loaders, which raise
    :class:`SceneFormatError` naming the first file that is unreadable or of the wrong type or size."""
    for i in range(len(scene)):
        scene.load_color(i)
        if scene.has_depth:
            scene.load_depth(i)
        if scene.has_labels:
            scene.load_labels(i)


def main(argv: list[str] | None = None) -> int:
    """``python -m sray_ros.data.checks ROOT [--gap 5 --pairs 4]``: reprojection stats of every scene under ROOT.

    Every frame's images are read first (unreadable, wrong type or size: an error naming the file). A
    scene that cannot be checked (no depth/, or no more frames than ``--gap``) is reported on stderr
    with the reason and skipped. Exit status: 0 when at least one scene was checked; 2 with a one-line
    error when ROOT holds no scene, a file of a scene is unreadable or of the wrong type/size, or no
    scene could be checked.
    """
    import argparse
    import sys
    from pathlib import Path

    from sray_ros.data.scannet import list_scannet_scenes, load_scannet_scene
    from sray_ros.data.scene import SceneFormatError

    ap = argparse.ArgumentParser(prog="python -m sray_ros.data.checks", description=main.__doc__.split("\n\n")[0])
    ap.add_argument("root", help="a ScanNet-layout scene folder, or a folder of them")
    ap.add_argument("--gap", type=int, default=5, help="frame offset between the two views of a pair")
    ap.add_argument("--pairs", type=int, default=4, help="pairs per scene (evenly spread)")
    args = ap.parse_args(argv)
    if args.gap < 1 or args.pairs < 1:
        ap.error("--gap and --pairs must be >= 1")
    root = Path(args.root)
    if not root.is_dir():
        print(f"checks: {root} is not a folder", file=sys.stderr)
        return 2
    roots = [root] if (root / "pose").is_dir() else list_scannet_scenes(root)
    if not roots:
        print(f"checks: {root} holds no ScanNet-layout scene folder (one with pose/)", file=sys.stderr)
        return 2
    errs, agrees = [], []
    for r in roots:
        try:
            s = load_scannet_scene(r)
            check_files(s)
            if not s.has_depth:
                print(f"checks: {s.name}: skipped: no depth/ images to reproject", file=sys.stderr)
                continue
            if len(s) <= args.gap:
                print(f"checks: {s.name}: skipped: {len(s)} frame(s) with valid poses, a pair --gap {args.gap} "
                      f"apart needs at least {args.gap + 1}", file=sys.stderr)
                continue
            starts = np.linspace(0, len(s) - 1 - args.gap, args.pairs).astype(int)
            rows = [reprojection_stats(s, int(a), int(a) + args.gap) for a in starts]
        except SceneFormatError as exc:
            print(f"checks: {r}: {exc}", file=sys.stderr)
            return 2
        e = float(np.median([x.median_depth_error for x in rows]))
        ag = [x.label_agreement for x in rows if x.label_agreement is not None]
        errs.append(e)
        agrees += ag
        print(f"{s.name}: median depth error {1000 * e:.2f} mm"
              + (f", label agreement {100 * np.mean(ag):.2f} %" if ag else "")
              + f", co-visible {np.mean([x.covisible for x in rows]) / (s.width * s.height):.0%}")
    if not errs:
        print(f"checks: no scene under {root} could be checked (see the reasons above)", file=sys.stderr)
        return 2
    print(f"all {len(errs)} scenes: median depth error {1000 * float(np.median(errs)):.2f} mm (worst "
          f"{1000 * max(errs):.2f} mm)" + (f", label agreement {100 * np.mean(agrees):.2f} % "
                                          f"(worst pair {100 * min(agrees):.2f} %)" if agrees else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
