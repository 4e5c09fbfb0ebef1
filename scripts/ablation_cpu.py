#!/usr/bin/env python3
"""The CPU attention ablation: full CRA vs none vs radial only vs cross-view only, two seeds each.

    python scripts/ablation_cpu.py [--config config/train/ablation_cpu.yaml] [--out runs/ablation_cpu]
                                   [--seeds 0 1] [--variants cra none radial cross]

Every run is one ``sray-train`` command (printed before it starts) from scratch with the config's settings
and step count, differing only in ``model.attention`` and ``seed``; each is scored by its final validation
record (ray mIoU / accuracy on the config's held-out rooms). Runs that already reached ``max_steps`` are not
repeated and an interrupted one resumes from its ``last.pt``, so the script can be stopped and restarted.
Writes ``results.json`` and ``results.md`` (per run, and mean / spread per variant) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def final_validation(run: Path, max_steps: int) -> dict | None:
    log = run / "log.jsonl"
    if not log.exists():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    vals = [r for r in rows if "val_miou" in r and r["step"] == max_steps]
    timed = [r for r in rows if "elapsed_s" in r]
    if not vals:
        return None
    return {**vals[-1], "train_seconds": timed[-1]["elapsed_s"] if timed else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "config/train/ablation_cpu.yaml"))
    p.add_argument("--out", default="runs/ablation_cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=["cra", "none", "radial", "cross"])
    args = p.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    max_steps = int(cfg["max_steps"])
    out = Path(args.out).resolve()
    args.config = str(Path(args.config).resolve())
    out.mkdir(parents=True, exist_ok=True)
    model = dict(cfg.get("model") or {})
    results = []
    for seed in args.seeds:
        for variant in args.variants:
            run = out / f"{variant}_seed{seed}"
            record = final_validation(run, max_steps)
            if record is None:
                cmd = [sys.executable, "-m", "sray_ros.train.train_cli", "--config", args.config,
                       "--output-dir", str(run), "--set", f"seed={seed}",
                       "--set", "model=" + json.dumps({**model, "attention": variant})]
                print(f"[ablation {time.strftime('%H:%M:%S')}] " + " ".join(cmd), flush=True)
                run.mkdir(parents=True, exist_ok=True)
                with (run / "train.log").open("a") as logf:
                    rc = subprocess.call(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
                if rc != 0:
                    raise SystemExit(f"ablation: {run} failed (rc {rc}); see {run / 'train.log'}")
                record = final_validation(run, max_steps)
                if record is None:
                    raise SystemExit(f"ablation: {run} ended without a final validation record")
            results.append({"variant": variant, "seed": seed, **record})
            print(f"[ablation] {variant} seed {seed}: val mIoU {100 * record['val_miou']:.2f}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = [f"Attention ablation: {max_steps} steps each from scratch ({args.config}); final validation on fixed "
             "rays of the held-out rooms.", "",
             "| attention | seed | val ray mIoU | val ray accuracy | val loss | minutes (last segment) |", "|---|---|---|---|---|---|"]
    for r in results:
        minutes = "" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f}"
        lines.append(f"| {r['variant']} | {r['seed']} | {100 * r['val_miou']:.2f} | {100 * r['val_acc']:.2f} | "
                     f"{r['val_loss']:.4f} | {minutes} |")
    lines += ["", "| attention | mean mIoU | seed spread (max - min) |", "|---|---|---|"]
    for variant in args.variants:
        v = [100 * r["val_miou"] for r in results if r["variant"] == variant]
        lines.append(f"| {variant} | {statistics.mean(v):.2f} | {max(v) - min(v):.2f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
