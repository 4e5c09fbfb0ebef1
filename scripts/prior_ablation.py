#!/usr/bin/env python3
"""Equal-budget ablation of the semantic prior's encoder and geometry cues (the model card's table).

Each variant trains ``python -m sray_ros.train.prior`` for the same CPU minutes (one thread) on the same rooms, then
its best checkpoint (selected on the validation rooms) is scored on the unseen test rooms, single view (the
2D prior alone, every ``--test-stride``-th frame at half resolution). Resumable: a variant whose run folder
holds ``done.json`` is not run again.

    python scripts/prior_ablation.py --train DIR --val DIR --test DIR --out runs/prior_ablation --cpu-minutes 6
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VARIANTS = {  # name -> extra arguments of sray_ros.train.prior
    "lite0_frozen_cues": [],
    "lite0_frozen_nocues": ["--no-cues"],
    "lite0_finetuned_cues": ["--finetune-encoder"],
    "resunet_scratch_cues": ["--encoder", "resunet"],
}


def score_on_test(run: Path, test: Path, cache: Path, stride: int) -> dict:
    from sray_ros.data.label_sets import load_label_set
    from sray_ros.model.semantic_prior import SemanticPriorNet
    from sray_ros.train.prior import evaluate, load_frames
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    cfg = best["config"]
    k = len(load_label_set("scannet20").class_names)
    net = SemanticPriorNet(cfg["semantic_prior"], k, cfg["prior_channels"], cfg["prior_geometry_cues"],
                           frozen=cfg["prior_frozen_encoder"], pretrained=False)
    net.load_state_dict(best["net"])
    use_taps = cfg["prior_frozen_encoder"] and cfg["semantic_prior"] != "resunet"
    net.eval()
    frames = load_frames([test], cache, net, use_taps, 320, 240, stride, (0.0, 0.0, 1.0), "scannet20", "test")
    res = evaluate(frames, net, use_taps, k)
    names = load_label_set("scannet20").class_names
    return {"test_miou": res["miou"], "test_acc": res["total_acc"], "val_miou": best["val"]["miou"],
            "best_step": best["step"], "test_iou": dict(zip(names, res["iou"])), "test_frames": len(frames)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu-minutes", type=float, default=6.0,
                    help="training budget of each run in CPU minutes of its process (robust to other load)")
    ap.add_argument("--max-scenes", type=int, default=0, help="first N training scenes only (0 = all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--test-stride", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    for flag, path in (("--train", args.train), ("--val", args.val), ("--test", args.test)):
        if not path.is_dir():
            ap.error(f"{flag} {path}: no such folder")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown --variants {unknown}; known: {', '.join(VARIANTS)}")
    if not args.cpu_minutes > 0 or args.max_scenes < 0 or args.test_stride < 1 or args.threads < 1:
        ap.error("need --cpu-minutes > 0, --max-scenes >= 0, --test-stride >= 1 and --threads >= 1")
    cache = args.out / "cache"
    rows = []
    for name in args.variants:
        for seed in args.seeds:
            run = args.out / f"{name}_seed{seed}"
            done = run / "done.json"
            if not done.is_file():
                cmd = [sys.executable, "-m", "sray_ros.train.prior", "--train", str(args.train), "--val", str(args.val),
                       "--out", str(run), "--cache", str(cache), "--cpu-minutes", str(args.cpu_minutes),
                       "--steps", "100000", "--max-scenes", str(args.max_scenes),
                       "--val-every", "100", "--seed", str(seed), "--threads", str(args.threads), *VARIANTS[name]]
                print("[ablation]", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True, cwd=REPO)
                steps = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["step"]
                result = {"variant": name, "seed": seed, "cpu_minutes": args.cpu_minutes, "steps": int(steps),
                          **score_on_test(run, args.test, cache, args.test_stride)}
                done.write_text(json.dumps(result, indent=1))
            rows.append(json.loads(done.read_text()))
            r = rows[-1]
            print(f"[ablation] {name} seed {seed}: {r['steps']} steps, val {100 * r['val_miou']:.1f}, "
                  f"test {100 * r['test_miou']:.1f} mIoU", flush=True)
    lines = ["| variant | seed | steps in budget | val mIoU | test mIoU (2D) | test acc |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | {r['steps']} | {100 * r['val_miou']:.1f} | "
                     f"{100 * r['test_miou']:.1f} | {100 * r['test_acc']:.1f} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
