#!/usr/bin/env python3
"""The model card's "Labelled keyframes" section: Semantic-NeRF's label tasks on the unseen test rooms.

    python scripts/label_transfer_card.py --data "$SRAY_DATA/sray_synth/test" --out runs/label_card \
        [--checkpoint models/sray_default.pt] [--max-views 2] [--num-sources 8] [--device cuda]

Protocol (``sray-eval``'s): in each room every 10th frame is held out (``split_frames``), ``--max-views`` of
them evenly spaced (``evaluate_scene``'s pick), each rendered from the 8 pool frames ``select_source_views``
picks, at the checkpoint's working resolution, with the scene's near/far. The pool frames' labels are
corrupted per task (``LabelCorruption``, seed ``--seed``; the held-out targets are never corrupted), and the
pool frames carry their depth maps for the depth-test weightings.

One geometry pass per held-out view: the renderer's call to ``transfer_labels`` is intercepted so that every
(task, weighting, window) variant is evaluated on the *same* samples, sample weights and blend weights, and
the S-Ray logits are shared. Methods scored per variant:

* (a) S-Ray alone (identical for every task; equals ``sray-eval``),
* (b) label transfer alone: argmax of the evidence; a pixel without evidence counts as a miss (an extra
  "no evidence" column in the confusion matrix: a false negative of its class, nobody's false positive),
* (c) fused (``fuse_with_logits``) at each ``--betas``.

With ``keep_fraction < 1`` the 8 sources chosen for geometry often carry no label at all, so those tasks are
also scored with *separate label sources* (task name ``+labelled``): the ``--num-sources`` nearest labelled
pool frames give the labels (``render_rays(label_sources=...)``), with the depth weighting (the blend weights
belong to the geometry sources).

Rows (d) fine-tuned on the corrupted labels and (e) fine-tuned + transfer are ``sray-finetune`` runs:
``scripts/label_finetune_card.py``.

Writes ``results.json`` (every number, per room and overall) and ``card.md`` (the table for the card).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sray_ros import geometry
from sray_ros.data.label_noise import SEMANTIC_NERF_TASKS
from sray_ros.data.scannet import list_scannet_scenes, load_scannet_scene
from sray_ros.data.view_selection import select_source_views
from sray_ros.model import render as render_mod
from sray_ros.model.label_transfer import (LabelEvidence, LabelTransferConfig, fuse_with_logits,
                                           label_distribution_maps, transfer_labels)
from sray_ros.train.evaluate import encode_frames, load_model_for_scenes, source_labels, split_frames
from sray_ros.train.metrics import iou_per_class

TASKS = SEMANTIC_NERF_TASKS  # the issue's tasks: name -> corruption of the source keyframes' labels
TARGETS = {"clean": 90, "pixel50": 85, "pixel90": 60, "keep10": 75, "down8": 80}  # issue 12, transfer alone


class Scores:
    """Confusion matrix over K classes plus a "no prediction" column (index K)."""

    def __init__(self, k: int):
        self.k = k
        self.matrix = np.zeros((k, k + 1), np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        keep = gt != 255
        g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
        p = np.where((p >= 0) & (p < self.k), p, self.k)
        self.matrix += np.bincount(g * (self.k + 1) + p, minlength=self.k * (self.k + 1)).reshape(self.k, self.k + 1)

    def add(self, other: "Scores") -> None:
        self.matrix += other.matrix

    def summary(self) -> dict:
        square = np.zeros((self.k + 1, self.k + 1), np.int64)
        square[: self.k] = self.matrix
        ious = iou_per_class(square)[: self.k]  # a "no prediction" pixel is a false negative of its class only
        total = self.matrix.sum()
        return {"miou": float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan"),
                "total_acc": float(np.trace(self.matrix[:, : self.k]) / max(total, 1)),
                "unpredicted": float(self.matrix[:, self.k].sum() / max(total, 1))}


def variants(args) -> list[tuple[str, str, int]]:
    out = [(t, w, win) for t in args.tasks for w in args.weightings for win in args.windows]
    out += [(t + "+labelled", "depth", win) for t in args.tasks if TASKS[t].keep_fraction < 1 for win in args.windows]
    return out


def main(argv: list[str] | None = None) -> int:
    from sray_ros.train.config import resolve_device

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of ScanNet-layout test rooms")
    p.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "models" / "sray_default.pt"))
    p.add_argument("--out", required=True)
    p.add_argument("--rooms", type=int, default=0, help="first N rooms (0 = all complete rooms)")
    p.add_argument("--max-views", type=int, default=2, help="held-out views per room (sray-eval's pick)")
    p.add_argument("--num-sources", type=int, default=8)
    p.add_argument("--holdout-every", type=int, default=10)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--weightings", nargs="+", default=["blend", "depth", "blend_depth"],
                   choices=["blend", "depth", "blend_depth", "uniform"])
    p.add_argument("--windows", nargs="+", type=int, default=[0, 2])
    p.add_argument("--betas", nargs="+", type=float, default=[1.0, 3.0, 10.0])
    p.add_argument("--seed", type=int, default=0, help="label corruption seed")
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    loaded = load_model_for_scenes(args.checkpoint, device, args.width, args.height)
    model, label_set = loaded.checkpoint.model.to(device).eval(), loaded.label_set
    k = label_set.num_classes
    rooms = list_scannet_scenes(args.data)[: args.rooms or None]
    if not rooms:
        print(f"no complete rooms under {args.data}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = variants(args)
    methods = ["sray"] + [f"transfer/{t}/{w}/w{win}" for t, w, win in names] + \
              [f"fused{b:g}/{t}/{w}/w{win}" for b in args.betas for t, w, win in names]
    overall = {m: Scores(k) for m in methods}
    per_room = {}
    stash: list[dict] = []
    real_transfer = transfer_labels

    def all_variants(maps, K, c2w, height, width, points, sample_weights, cfg, blend=None, depths=None):
        """Evaluates every variant on this pass's samples; returns the first for the renderer's own use."""
        chunk = {}
        for (task, weighting, window), (task_maps, lv) in zip(names, current_maps):
            if lv is None:  # the geometry sources' own labels
                ev = real_transfer(task_maps, K, c2w, height, width, points, sample_weights,
                                   LabelTransferConfig(weighting, window=window), blend, depths)
            else:
                ev = real_transfer(task_maps, lv.K, lv.c2w, lv.height, lv.width, points, sample_weights,
                                   LabelTransferConfig(weighting, window=window), None, lv.depths)
            chunk[(task, weighting, window)] = ev
        stash.append(chunk)
        return next(iter(chunk.values()))

    render_mod.transfer_labels = all_variants
    current_maps: list[tuple[torch.Tensor, object]] = []
    started = time.time()
    for folder in rooms:
        scene = load_scannet_scene(folder, loaded.width, loaded.height, label_set=label_set).preload()
        pool, test = split_frames(scene.num_frames, args.holdout_every)
        if args.max_views:
            test = test[np.linspace(0, len(test) - 1, min(args.max_views, len(test))).round().astype(int)]
        pool_views = encode_frames(model, scene, pool, device)
        pool_views = replace(pool_views, depths=torch.from_numpy(scene.depths[pool]).to(device))
        task_labels = {t: torch.from_numpy(source_labels(scene, pool, k, TASKS[t])).to(device) for t in args.tasks}
        room = {m: Scores(k) for m in methods}
        K = torch.from_numpy(scene.intrinsics).float().to(device)
        for t in test:
            chosen = torch.as_tensor(select_source_views(scene.poses[t], scene.poses[pool], args.num_sources),
                                     dtype=torch.long, device=device)
            sources = replace(pool_views.select(chosen), labels=task_labels[args.tasks[0]][chosen])
            current_maps.clear()
            for task, _, window in names:
                if task.endswith("+labelled"):
                    labels = task_labels[task[: -len("+labelled")]]
                    labelled = torch.nonzero((labels != 255).flatten(1).any(1)).flatten().cpu().numpy()
                    near = labelled[select_source_views(scene.poses[t], scene.poses[pool[labelled]],
                                                        min(args.num_sources, len(labelled)))]
                    near = torch.as_tensor(near, dtype=torch.long, device=device)
                    lv = replace(pool_views.select(near), labels=labels[near])
                    current_maps.append((label_distribution_maps(lv.labels, k, window), lv))
                else:
                    current_maps.append((label_distribution_maps(task_labels[task][chosen], k, window), None))
            stash.clear()
            uv = geometry.pixel_grid(scene.height, scene.width, device=device)
            rays_o, rays_d = geometry.generate_rays(K, torch.from_numpy(scene.poses[t]).float().to(device), uv)
            with torch.no_grad():
                best = render_mod.render_rays(model, sources, rays_o, rays_d, scene.near, scene.far, chunk=args.chunk,
                                              coarse_semantics=False,
                                              label_transfer=LabelTransferConfig("blend")).best  # blend computed
            gt = scene.labels[t]
            room["sray"].update(best.logits.argmax(-1).cpu().numpy(), gt.reshape(-1))
            for key in names:
                ev = LabelEvidence(torch.cat([c[key].evidence for c in stash]), torch.cat([c[key].mass for c in stash]))
                t_name = "transfer/{}/{}/w{}".format(*key)
                room[t_name].update(torch.where(ev.mass > 0, ev.evidence.argmax(-1), -1).cpu().numpy(), gt.reshape(-1))
                for b in args.betas:
                    fused = fuse_with_logits(best.logits, ev, best.acc, beta=b)
                    room["fused{:g}/{}/{}/w{}".format(b, *key)].update(fused.labels.cpu().numpy(), gt.reshape(-1))
            print(f"[{time.time() - started:6.0f} s] {scene.name} frame {int(scene.frame_ids[t])}: "
                  f"S-Ray acc {room['sray'].summary()['total_acc']:.3f}", flush=True)
        per_room[scene.name] = {m: s.summary() for m, s in room.items()}
        for m in methods:
            overall[m].add(room[m])
    render_mod.transfer_labels = real_transfer

    summary = {m: s.summary() for m, s in overall.items()}
    report = {"checkpoint": args.checkpoint, "data": args.data, "rooms": [r.name for r in rooms],
              "views_per_room": args.max_views, "num_sources": args.num_sources, "width": loaded.width,
              "height": loaded.height, "seed": args.seed, "device": str(device), "seconds": time.time() - started,
              "tasks": {t: TASKS[t].describe() for t in args.tasks}, "overall": summary, "per_room": per_room}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    lines = [f"{len(rooms)} rooms x {args.max_views} held-out views, {args.num_sources} sources, "
             f"{loaded.width}x{loaded.height}; mIoU / total accuracy (%); S-Ray alone: "
             f"{100 * summary['sray']['miou']:.1f} / {100 * summary['sray']['total_acc']:.1f}", "",
             "| task | weighting | window | transfer alone | unpredicted | " +
             " | ".join(f"fused beta {b:g}" for b in args.betas) + " | target (transfer) |",
             "|" + "---|" * (5 + len(args.betas) + 1)]
    for t, w, win in names:
        tr = summary[f"transfer/{t}/{w}/w{win}"]
        cells = [f"{100 * summary[f'fused{b:g}/{t}/{w}/w{win}']['miou']:.1f} / "
                 f"{100 * summary[f'fused{b:g}/{t}/{w}/w{win}']['total_acc']:.1f}" for b in args.betas]
        desc = TASKS[t.split("+")[0]].describe() + (" (nearest labelled keyframes as label sources)"
                                                    if t.endswith("+labelled") else "")
        lines.append(f"| {desc} | {w} | {win} | {100 * tr['miou']:.1f} / {100 * tr['total_acc']:.1f} | "
                     f"{100 * tr['unpredicted']:.1f} % | " + " | ".join(cells) + f" | {TARGETS.get(t.split('+')[0], '-')} |")
    (out / "card.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
