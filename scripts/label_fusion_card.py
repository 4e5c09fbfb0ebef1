#!/usr/bin/env python3
"""Model card, "Label fusion": the node's default (per-keyframe label pooling + reliability-weighted fusion)
vs. the earlier rules on the unseen test rooms, with calibration.

Two stages, so that fusion variants are compared on *identical* geometry (one S-Ray pass per held-out view):

    # 1. geometry: per held-out view, the rendered samples, their weights, S-Ray's logits and opacity
    python scripts/label_fusion_card.py geometry --data "$SRAY_DATA/sray_synth/test" --cache runs/fusion_geom \
        --max-views 2 [--checkpoint models/sray_default.pt] [--threads 2]
    # 2. fusion: every task x fusion rule from the cache (seconds per view), table + ECE + reliability diagram
    python scripts/label_fusion_card.py fuse --data "$SRAY_DATA/sray_synth/test" --cache runs/fusion_geom \
        --out runs/fusion_card

Protocol (``scripts/label_transfer_card.py``'s, ``sray-eval``'s): every 10th frame of a room is held out
(``split_frames``), ``--max-views`` of them evenly spaced, each rendered from the 8 pool frames
``select_source_views`` picks, at the checkpoint's resolution and the scene's near/far, hierarchical
sampling. The pool frames' labels are corrupted per task (seed ``--seed``); held-out labels are never
corrupted. Label evidence is gathered at the cached samples from the same 8 sources (depth test against the
sources' depth), so only the fusion rule differs between rows. The default pools each source keyframe's
corrupted labels first (``sray_ros.model.label_pooling``, as the node does when it stores a keyframe). No
training anywhere; defaults only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def geometry_stage(args) -> int:
    from sray_ros import geometry
    from sray_ros.data.scannet import list_scannet_scenes, load_scannet_scene
    from sray_ros.data.view_selection import select_source_views
    from sray_ros.model import render as render_mod
    from sray_ros.model.label_transfer import LabelEvidence, LabelTransferConfig
    from sray_ros.train.config import resolve_device
    from sray_ros.train.evaluate import encode_frames, load_model_for_scenes, split_frames

    device = resolve_device(args.device)
    loaded = load_model_for_scenes(args.checkpoint, device)
    model, k = loaded.checkpoint.model.to(device).eval(), loaded.label_set.num_classes
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rooms = list_scannet_scenes(args.data)[: args.rooms or None]
    stash: list[tuple] = []
    real = render_mod.transfer_labels

    def capture(maps, K, c2w, height, width, points, sample_weights, cfg, blend=None, depths=None):
        stash.append((points.detach().cpu(), sample_weights.detach().cpu()))
        r = points.shape[0]
        return LabelEvidence(torch.zeros(r, k, device=points.device), torch.zeros(r, device=points.device))

    render_mod.transfer_labels = capture
    started = time.time()
    try:
        for folder in rooms:
            scene = None
            pool, test = split_frames(100, args.holdout_every)
            test = test[np.linspace(0, len(test) - 1, min(args.max_views, len(test))).round().astype(int)]
            todo = [t for t in test if not (cache / f"{folder.name}_{int(t):03d}.pt").exists()]
            if not todo:
                continue
            scene = load_scannet_scene(folder, loaded.width, loaded.height, label_set=loaded.label_set).preload()
            pool, _ = split_frames(scene.num_frames, args.holdout_every)
            pool_views = encode_frames(model, scene, pool, device)
            pool_views = replace(pool_views, depths=torch.from_numpy(scene.depths[pool]).to(device))
            K = torch.from_numpy(scene.intrinsics).float().to(device)
            for t in todo:
                chosen = select_source_views(scene.poses[t], scene.poses[pool], args.num_sources)
                sources = replace(pool_views.select(torch.as_tensor(chosen, dtype=torch.long, device=device)),
                                  labels=torch.zeros(len(chosen), scene.height, scene.width, dtype=torch.uint8,
                                                     device=device))
                uv = geometry.pixel_grid(scene.height, scene.width, device=device)
                rays_o, rays_d = geometry.generate_rays(K, torch.from_numpy(scene.poses[t]).float().to(device), uv)
                stash.clear()
                with torch.no_grad():
                    best = render_mod.render_rays(model, sources, rays_o, rays_d, scene.near, scene.far,
                                                  chunk=args.chunk, coarse_semantics=False,
                                                  label_transfer=LabelTransferConfig("depth")).best
                torch.save({"points": torch.cat([s[0] for s in stash]).half() if args.half else torch.cat([s[0] for s in stash]),
                            "weights": torch.cat([s[1] for s in stash]), "logits": best.logits.cpu(),
                            "acc": best.acc.cpu(), "sources": torch.as_tensor(pool[chosen]),
                            "target": int(t), "room": folder.name}, cache / f"{folder.name}_{int(t):03d}.pt")
                print(f"[{time.time() - started:6.0f} s] {folder.name} frame {int(t)}", flush=True)
    finally:
        render_mod.transfer_labels = real
    return 0


class Calibration:
    """Confidence histogram for ECE and the reliability diagram (``bins`` equal-width bins on [0, 1])."""

    def __init__(self, bins: int = 15):
        self.bins = bins
        self.count = np.zeros(bins, np.int64)
        self.correct = np.zeros(bins, np.float64)
        self.conf = np.zeros(bins, np.float64)

    def update(self, conf: np.ndarray, correct: np.ndarray) -> None:
        b = np.clip((conf * self.bins).astype(np.int64), 0, self.bins - 1)
        self.count += np.bincount(b, minlength=self.bins)
        self.correct += np.bincount(b, weights=correct.astype(np.float64), minlength=self.bins)
        self.conf += np.bincount(b, weights=conf.astype(np.float64), minlength=self.bins)

    def add(self, other: "Calibration") -> None:
        self.count += other.count
        self.correct += other.correct
        self.conf += other.conf

    def summary(self) -> dict:
        n = max(int(self.count.sum()), 1)
        acc = self.correct / np.maximum(self.count, 1)
        conf = self.conf / np.maximum(self.count, 1)
        return {"ece": float((self.count / n * np.abs(acc - conf)).sum()),
                "mean_confidence": float(self.conf.sum() / n), "accuracy": float(self.correct.sum() / n),
                "bins": {"count": self.count.tolist(), "accuracy": acc.tolist(), "confidence": conf.tolist()}}


METHODS = {  # name -> (fusion, transfer alone?, extra fuse_reliable arguments); "pooled" rows pool labels first
    "earlier rule (average, fused beta 10)": ("average", False, {}),
    "earlier rule, transfer alone": ("average", True, {}),
    "reliability, no pooling": ("reliability", False, {}),
    "pooling + reliability (default)": ("reliability", False, {"pooled": True}),
}
DEFAULT = "pooling + reliability (default)"
ABLATIONS = {"default, S-Ray's distribution as it is": ("reliability", False, {"pooled": True, "sray_mixture": False}),
             "default without class prior": ("reliability", False, {"pooled": True, "class_prior": False}),
             "default, 0 EM steps": ("reliability", False, {"pooled": True, "iterations": 0}),
             "default, 1 EM step": ("reliability", False, {"pooled": True, "iterations": 1}),
             "default, 5 EM steps": ("reliability", False, {"pooled": True, "iterations": 5})}


def fuse_stage(args) -> int:
    import importlib.util

    from sray_ros.data.label_noise import LABEL_TASKS
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.model.label_pooling import LabelPoolingConfig, pool_labels
    from sray_ros.model.label_transfer import (LabelEvidence, LabelTransferConfig, fuse_reliable, fuse_with_logits,
                                               label_distribution_maps, transfer_labels)
    from sray_ros.train.evaluate import load_model_for_scenes, split_frames

    pooling = LabelPoolingConfig()

    spec = importlib.util.spec_from_file_location("ltc", Path(__file__).with_name("label_transfer_card.py"))
    ltc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ltc)
    Scores = ltc.Scores

    loaded = load_model_for_scenes(args.checkpoint, "cpu")
    k = loaded.label_set.num_classes
    _, test = split_frames(100, args.holdout_every)
    picked = set(int(i) for i in test[np.linspace(0, len(test) - 1, min(args.max_views, len(test))).round().astype(int)])
    files = sorted(f for f in Path(args.cache).glob("*.pt") if int(f.stem.rsplit("_", 1)[1]) in picked)
    by_room: dict[str, list[Path]] = {}
    for f in files:
        by_room.setdefault(f.name.rsplit("_", 1)[0], []).append(f)
    if args.rooms:
        by_room = dict(list(by_room.items())[: args.rooms])
    tasks = args.tasks
    cfg = LabelTransferConfig("depth")
    keys = [(t, m) for t in tasks for m in METHODS]
    overall = {key: Scores(k) for key in keys}
    calib = {key: Calibration() for key in keys}
    per_room: dict = {}
    reliab: dict = {t: [] for t in tasks}
    started = time.time()
    parts_dir = Path(args.out) / "rooms"
    parts_dir.mkdir(parents=True, exist_ok=True)
    thresholds = (0.3, 0.5, 0.7, 0.9)
    kept = {key: np.zeros((len(thresholds), 2)) for key in keys}  # [kept pixels, kept correct]
    for room, views in by_room.items():
        part = parts_dir / f"{room}_{len(views)}.pt"
        if part.exists():  # a room already scored with these views (the stage resumes)
            saved = torch.load(part, weights_only=False)
            if set(saved["keys"]) == set(keys):
                for key in keys:
                    overall[key].matrix += saved["matrix"][key]
                    for n in ("count", "correct", "conf"):
                        getattr(calib[key], n).__iadd__(saved["calib"][key][n])
                    kept[key] += saved["kept"][key]
                per_room[room] = saved["summary"]
                if "reliability" in saved:
                    for t in tasks:
                        reliab[t].extend(saved["reliability"].get(t, []))
                continue
        room_calib = {key: Calibration() for key in keys}
        room_kept = {key: np.zeros((len(thresholds), 2)) for key in keys}
        room_reliab: dict = {t: [] for t in tasks}
        room_radius: dict = {t: [] for t in tasks}
        scene = load_scannet_scene(Path(args.data) / room, loaded.width, loaded.height,
                                   label_set=loaded.label_set).preload()
        pool, _ = split_frames(scene.num_frames, args.holdout_every)
        K = torch.from_numpy(scene.intrinsics).float()
        task_labels = {t: torch.from_numpy(LABEL_TASKS[t].__class__(**{**LABEL_TASKS[t].__dict__, "seed": args.seed})
                                           .apply(scene.labels[pool], k)) for t in tasks}
        pooled_labels: dict = {}  # task -> {pool index: (labels, confidence)}: each keyframe pooled once, as stored
        if any(extra.get("pooled") for _, _, extra in METHODS.values()):
            used = sorted({int(i) for f in views for i in np.searchsorted(pool, torch.load(f)["sources"].numpy())})
            images = torch.from_numpy(scene.colors[pool[used]]).permute(0, 3, 1, 2).float() / 255.0
            src_depths = torch.from_numpy(scene.depths[pool[used]]).float()
            for t in tasks:
                out = pool_labels(task_labels[t][used], images, src_depths, k, cfg=pooling)
                pooled_labels[t] = {u: (out.labels[j], out.confidence[j]) for j, u in enumerate(used)}
                room_radius[t].extend(out.radius.tolist())
        room_scores = {key: Scores(k) for key in keys}
        for f in views:
            c = torch.load(f)
            frames = c["sources"].numpy()  # scene frame indices of the 8 sources
            local = np.searchsorted(pool, frames)
            c2w = torch.from_numpy(scene.poses[frames]).float()
            depths = torch.from_numpy(scene.depths[frames]).float()
            gt = scene.labels[c["target"]].reshape(-1)
            points, weights, logits, acc = c["points"].float(), c["weights"], c["logits"], c["acc"]
            for t in tasks:
                evidence = {}
                for pooled in sorted({bool(extra.get("pooled")) for _, _, extra in METHODS.values()}):
                    if pooled:
                        maps = label_distribution_maps(torch.stack([pooled_labels[t][int(i)][0] for i in local]), k,
                                                       confidence=torch.stack([pooled_labels[t][int(i)][1]
                                                                               for i in local]))
                    else:
                        maps = label_distribution_maps(task_labels[t][local], k)
                    parts = [transfer_labels(maps, K.expand(len(frames), 3, 3), c2w, scene.height, scene.width,
                                             points[i:i + args.chunk], weights[i:i + args.chunk], cfg, None, depths)
                             for i in range(0, points.shape[0], args.chunk)]
                    evidence[pooled] = LabelEvidence(*(torch.cat([getattr(p_, n) for p_ in parts]) for n in
                                                       ("evidence", "mass", "view_votes", "view_mass")))
                for m, (fusion, alone, extra) in METHODS.items():
                    extra = dict(extra)
                    ev = evidence[bool(extra.pop("pooled", False))]
                    if fusion == "average":
                        fused = fuse_with_logits(logits, ev, acc, cfg.beta, cfg.eps, cfg.full_coverage)
                        if alone:
                            pred = torch.where(ev.mass > 0, ev.evidence.argmax(-1), -1).numpy()
                            conf = ev.agreement().numpy()
                        else:
                            pred, conf = fused.labels.numpy(), fused.confidence.numpy()
                    else:
                        fused = fuse_reliable(logits, ev, acc, cfg.full_coverage,
                                              **{"iterations": cfg.em_iterations, **extra})
                        pred, conf = fused.labels.numpy(), fused.confidence.numpy()
                        if m == DEFAULT:
                            room_reliab[t].append(fused.reliability.tolist())
                    room_scores[(t, m)].update(pred, gt)
                    keep = gt != 255
                    correct = pred[keep] == gt[keep]
                    room_calib[(t, m)].update(conf[keep], correct)
                    for j, thr in enumerate(thresholds):
                        sel = conf[keep] >= thr
                        room_kept[(t, m)][j] += (sel.sum(), correct[sel].sum())
            print(f"[{time.time() - started:6.0f} s] {room} frame {c['target']}", flush=True)
        per_room[room] = {f"{t} | {m}": s_.summary() for (t, m), s_ in room_scores.items()}
        per_room[room]["pooling_radius"] = {t: room_radius[t] for t in tasks}
        for key in keys:
            overall[key].add(room_scores[key])
            calib[key].add(room_calib[key])
            kept[key] += room_kept[key]
        for t in tasks:
            reliab[t].extend(room_reliab[t])
        torch.save({"keys": keys, "matrix": {key: room_scores[key].matrix for key in keys},
                    "calib": {key: {n: getattr(room_calib[key], n) for n in ("count", "correct", "conf")} for key in keys},
                    "kept": room_kept, "summary": per_room[room], "reliability": room_reliab}, part)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for key in keys:
        total = max(int(calib[key].count.sum()), 1)
        summary[f"{key[0]} | {key[1]}"] = {
            **overall[key].summary(), "calibration": calib[key].summary(),
            "confidence_threshold": {f"{thr:g}": {"kept": kept[key][j, 0] / total,
                                                  "accuracy_kept": kept[key][j, 1] / max(kept[key][j, 0], 1)}
                                     for j, thr in enumerate(thresholds)}}
    n_views = sum(len(v) for v in by_room.values())
    report = {"rooms": list(by_room), "views": n_views, "seed": args.seed, "tasks": {t: LABEL_TASKS[t].describe()
              for t in tasks}, "overall": summary, "per_room": per_room, "reliability": reliab,
              "seconds": time.time() - started}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    lines = [f"{len(by_room)} rooms, {n_views} held-out views, 8 sources, {loaded.width}x{loaded.height}; "
             "mIoU / pixel accuracy / ECE (%)", "",
             "| task | " + " | ".join(METHODS) + " | target |", "|" + "---|" * (len(METHODS) + 2)]
    targets = {"clean": 96, "pixel50": 90, "pixel90": 60, "region30": 85, "segmenter": 85}
    for t in tasks:
        cells = []
        for m in METHODS:
            s_ = summary[f"{t} | {m}"]
            cells.append(f"{100 * s_['miou']:.1f} / {100 * s_['total_acc']:.1f} / {100 * s_['calibration']['ece']:.1f}")
        lines.append(f"| {LABEL_TASKS[t].describe()} | " + " | ".join(cells) + f" | {targets.get(t, '-')} |")
    (out / "card.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.plot:
        plot_reliability(summary, tasks, out / "reliability_diagram.png")
    return 0


def plot_reliability(summary: dict, tasks: list[str], path: Path) -> None:
    """Reliability diagram: accuracy against confidence per bin, one panel per task, today's rule vs
    reliability fusion (the diagonal is perfect calibration); bar shading = share of pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4.4), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        for m, colour in (("earlier rule (average, fused beta 10)", "tab:orange"),
                          ("pooling + reliability (default)", "tab:blue")):
            cal = summary[f"{t} | {m}"]["calibration"]
            b = cal["bins"]
            cnt = np.asarray(b["count"])
            x = np.asarray(b["confidence"])[cnt > 0]
            y = np.asarray(b["accuracy"])[cnt > 0]
            ax.plot(x, y, "o-", color=colour, label=f"{m.split(' (')[0]}: ECE {100 * cal['ece']:.1f} %")
        ax.set_title(t, fontsize=12)
        ax.set_xlabel("confidence", fontsize=11)
        ax.set_ylabel("pixel accuracy", fontsize=11)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=9, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["geometry", "fuse"])
    p.add_argument("--data", default=os.path.join(os.environ.get("SRAY_DATA", "data"), "sray_synth", "test"),
                   help="the unseen test rooms (default: $SRAY_DATA/sray_synth/test, SRAY_DATA defaulting to data)")
    p.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "models" / "sray_default.pt"))
    p.add_argument("--cache", required=True)
    p.add_argument("--out")
    p.add_argument("--rooms", type=int, default=0)
    p.add_argument("--max-views", type=int, default=2)
    p.add_argument("--num-sources", type=int, default=8)
    p.add_argument("--holdout-every", type=int, default=10)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--half", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="+", default=["clean", "pixel50", "pixel90", "region30", "segmenter"])
    p.add_argument("--plot", action="store_true", help="write reliability_diagram.png (needs matplotlib)")
    p.add_argument("--ablations", action="store_true", help="also score " + ", ".join(ABLATIONS))
    args = p.parse_args(argv)
    if args.ablations:
        METHODS.update(ABLATIONS)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage == "geometry":
        return geometry_stage(args)
    return fuse_stage(args)


if __name__ == "__main__":
    sys.exit(main())
