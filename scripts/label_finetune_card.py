#!/usr/bin/env python3
"""Rows (d) and (e) of the model card's "Labelled keyframes" section: fine-tuning on corrupted labels.

    python scripts/label_finetune_card.py --data "$SRAY_DATA/sray_synth/test" --out runs/label_ft \
        [--rooms test_0000 test_0005] [--tasks clean pixel50 ...] [--eval-at 0,100,1000]

For every (room, task) one ``sray-finetune`` run (printed before it starts): the room's pool frames (all but
every 10th) with their labels corrupted per task (the held-out frames never are) train a copy of the
checkpoint; at each ``--eval-at`` step the held-out views are rendered with label transfer from the same
corrupted labels and scored fused (row e) and from the fine-tuned field alone (row d). Step 0 repeats rows
(a) and (c). A run whose ``curve.json`` already holds every step is not repeated, so the script resumes.
Writes ``results.json`` and ``card.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sray_ros.data.label_noise import SEMANTIC_NERF_TASKS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of ScanNet-layout test rooms")
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", default=str(ROOT / "models/sray_default.pt"))
    p.add_argument("--rooms", nargs="+", default=["test_0000"])
    p.add_argument("--tasks", nargs="+", default=list(SEMANTIC_NERF_TASKS), choices=list(SEMANTIC_NERF_TASKS))
    p.add_argument("--eval-at", default="0,100,1000")
    p.add_argument("--num-rays", type=int, default=512)
    p.add_argument("--max-views", type=int, default=2)
    p.add_argument("--label-transfer", default="depth", choices=["blend", "depth", "blend_depth", "uniform"])
    args = p.parse_args(argv)
    steps = sorted(int(s) for s in args.eval_at.split(","))
    out, data, checkpoint = Path(args.out).resolve(), Path(args.data).resolve(), str(Path(args.checkpoint).resolve())
    results = []
    for room in args.rooms:
        for task in args.tasks:
            run = out / f"{room}_{task}"
            curve_file = run / "curve.json"
            curve = json.loads(curve_file.read_text())["curve"] if curve_file.exists() else []
            done = [c["step"] for c in curve] == steps and all("without_transfer" in c for c in curve)
            if not done:
                cmd = [sys.executable, "-m", "sray_ros.train.finetune", "--checkpoint", checkpoint,
                       "--scene", str(data / room), "--out", str(run), "--steps", str(steps[-1]),
                       "--eval-at", args.eval_at, "--num-rays", str(args.num_rays), "--max-views",
                       str(args.max_views), "--train-sampling", "depth_guided", "--depth-loss-weight", "0.1",
                       "--label-transfer", args.label_transfer, *SEMANTIC_NERF_TASKS[task].to_args()]
                print(f"[label-ft {time.strftime('%H:%M:%S')}] " + " ".join(cmd), flush=True)
                run.mkdir(parents=True, exist_ok=True)
                start = time.monotonic()
                with (run / "finetune.log").open("w") as logf:
                    rc = subprocess.call(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
                if rc != 0:
                    raise SystemExit(f"label-ft: {run} failed (rc {rc}); see {run / 'finetune.log'}")
                print(f"[label-ft] {room} {task}: {time.monotonic() - start:.0f} s", flush=True)
            for c in json.loads(curve_file.read_text())["curve"]:
                alone = c["without_transfer"]
                if None in (c["miou"], alone["miou"]):
                    raise SystemExit(f"label-ft: {curve_file} step {c['step']} has no mIoU (no labelled held-out pixel)")
                results.append({"room": room, "task": task, "step": c["step"], "fused_miou": c["miou"],
                                "fused_acc": c["total_acc"], "alone_miou": alone["miou"],
                                "alone_acc": alone["total_acc"]})
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = [f"Fine-tuning on corrupted labels ({', '.join(args.rooms)}; {args.max_views} held-out views per room; "
             f"label transfer '{args.label_transfer}'). mIoU / accuracy in %.", "",
             "| task | room | steps | (d) fine-tuned alone mIoU | acc | (e) fine-tuned + transfer mIoU | acc |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {SEMANTIC_NERF_TASKS[r['task']].describe()} | {r['room']} | {r['step']} | "
                     f"{100 * r['alone_miou']:.1f} | {100 * r['alone_acc']:.1f} | {100 * r['fused_miou']:.1f} | "
                     f"{100 * r['fused_acc']:.1f} |")
    (out / "card.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
