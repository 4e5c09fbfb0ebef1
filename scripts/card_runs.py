#!/usr/bin/env python3
"""The runs behind models/MODEL_CARD.md, sized to fit a time-limited GPU lease.

    # a copy of the benchmark rooms at the working resolution (travels in < 45 MB):
    python -m sray_ros.data.resize /data/sray_synth/train data/sray160/train --width 160 --height 120 --stride 2
    python -m sray_ros.data.resize /data/sray_synth/test  data/sray160/test  --width 160 --height 120
    # 1. train the default model and the attention ablations at one equal step budget; evaluate the ablations
    python scripts/card_runs.py train --data data/sray160 --out runs/card --budget-s 540
    # 2. evaluate the default model, fine-tuning curves on two test rooms, GPU benchmark
    python scripts/card_runs.py evaluate --data data/sray160 --checkpoint models/sray_default.pt --out runs/card_eval

``train`` first runs every job for 30 steps side by side to measure the step rates it will see, then sets
the step counts from the remaining budget: the four ablations (full CRA, no CRA, radial only, cross-view only)
share one step count, so their comparison is at equal budget; the default model trains for the whole
remaining time (from ``--init``), with its learning-rate decay fitted to the steps it can make and
``--max-minutes`` as a hard stop. Every job is an ordinary ``sray-train`` / ``sray-eval`` / ``sray-finetune``
command, printed before it starts, so each number on the card can be re-made by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = ("cra", "none", "radial", "cross")
MODEL = "{num_coarse: 16, num_fine: 16, attention: %s}"


def log(msg: str) -> None:
    print(f"[card {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start(cmd: list[str], logfile: Path) -> subprocess.Popen:
    log(" ".join(cmd) + f"  > {logfile}")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(cmd, stdout=logfile.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def wait_all(procs: dict[str, tuple[subprocess.Popen, Path]], what: str) -> None:
    failed = []
    for name, (proc, logfile) in procs.items():
        if proc.wait() != 0:
            failed.append(name)
            print(f"--- {name} ({what}) failed, rc={proc.returncode}; last lines of {logfile}:", flush=True)
            print("\n".join(logfile.read_text(errors="replace").splitlines()[-40:]), flush=True)
    if failed:
        raise SystemExit(f"card_runs: {what} failed for {failed}")


def train_cmd(args, data: Path, out: Path, attention: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "sray_ros.train.train_cli", "--config", str(ROOT / "config/train/gpu_default.yaml"),
            "--device", args.device, "--output-dir", str(out), "--set", f"train_root={data / 'train'}",
            "--set", "model=" + MODEL % attention, *[x for kv in args.set for x in ("--set", kv)], *extra]


def size_args(size: str) -> list[str]:
    if not size:
        return []
    w, h = size.lower().split("x")
    return ["--width", w, "--height", h]


def seconds_per_step(logfile: Path) -> float:
    rows = [json.loads(line) for line in logfile.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "elapsed_s" in r]
    if len(rows) < 2:
        raise SystemExit(f"card_runs: {logfile} has too few records to time the steps")
    a, b = rows[1], rows[-1]  # skip the first window (warm-up, cudnn autotune)
    return (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])


def cmd_train(args) -> int:
    t0 = time.monotonic()
    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = {"default": ("cra", ["--init", str(Path(args.init).resolve())] if args.init else [])}
    jobs.update({f"ablation_{a}": (a, []) for a in ABLATIONS})

    # 1. calibration: every job side by side for a few steps (throw-away output)
    calib = {}
    n = max(3, args.calibration_steps)
    for name, (attention, extra) in jobs.items():
        d = out / "calibration" / name
        calib[name] = (start(train_cmd(args, data, d, attention, extra + ["--max-steps", str(n), "--fresh",
                                                                            "--set", f"log_every={n // 3}"]),
                             out / f"calibration_{name}.log"), out / f"calibration_{name}.log")
    wait_all(calib, "calibration")
    rate = {name: seconds_per_step(out / "calibration" / name / "log.jsonl") for name in jobs}
    log("seconds per step side by side: " + ", ".join(f"{k} {v:.3f}" for k, v in rate.items()))

    # 2. budget: ablations stop early enough to be evaluated while the default model keeps training
    left = args.budget_s - (time.monotonic() - t0)
    t_default = left - args.reserve_s
    t_ablation = t_default - args.eval_s
    if t_ablation < 30:
        raise SystemExit(f"card_runs: only {left:.0f} s left after calibration; give a larger --budget-s")
    abl_steps = int(t_ablation / max(rate[f"ablation_{a}"] for a in ABLATIONS))
    # once the ablations stop the default model runs alone and faster; --max-minutes is the hard stop
    default_steps = int(t_default / rate["default"] * args.default_speedup)
    plan = {"seconds_per_step_side_by_side": rate, "ablation_steps": abl_steps, "default_steps": default_steps,
            "default_max_s": t_default, "ablation_window_s": t_ablation}
    log(f"plan: {plan}")

    procs = {}
    name, (attention, extra) = "default", jobs["default"]
    procs[name] = start(train_cmd(args, data, out / name, attention,
                                  extra + ["--fresh", "--max-steps", str(default_steps),
                                           "--max-minutes", f"{t_default / 60:.3f}"]), out / f"{name}.log")
    ablations = {}
    for a in ABLATIONS:
        name = f"ablation_{a}"
        ablations[name] = (start(train_cmd(args, data, out / name, a, ["--fresh", "--max-steps", str(abl_steps)]),
                                 out / f"{name}.log"), out / f"{name}.log")
    wait_all(ablations, "ablation training")
    evals = {}
    for a in ABLATIONS:
        name = f"ablation_{a}"
        evals[name] = (start([sys.executable, "-m", "sray_ros.train.evaluate", "--checkpoint",
                              str(out / name / "last.pt"), "--data", str(data / "test"), "--out",
                              str(out / f"eval_{name}"), "--max-views", str(args.max_views), "--num-panels", "1",
                              "--device", args.device, *size_args(args.eval_size)], out / f"eval_{name}.log"),
                        out / f"eval_{name}.log")
    wait_all(evals, "ablation evaluation")
    wait_all({"default": (procs["default"], out / "default.log")}, "default training")
    plan["wall_s"] = time.monotonic() - t0
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    return pack(out, args.export, keep=["default/last.pt"])


def cmd_evaluate(args) -> int:
    t0 = time.monotonic()
    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = str(Path(args.checkpoint).resolve())
    if args.bench:
        bench = start([sys.executable, str(ROOT / "benchmarks/bench_model.py"), "--device", args.device, "--threads", "8",
                       "--view-rays", "0", "--small-view-rays", "0", "--machine", args.machine, "--section",
                       "bench_model_gpu", "--out", str(out / "bench_gpu.md")], out / "bench.log")
        wait_all({"bench": (bench, out / "bench.log")}, "benchmark")  # alone on the GPU: its timings are reported
    jobs = {
        "eval_all_views": [sys.executable, "-m", "sray_ros.train.evaluate", "--checkpoint", ckpt, "--data",
                           str(data / "test"), "--out", str(out / "eval_all_views"), "--max-views", "0",
                           "--num-panels", "1", "--device", args.device],
        "eval_2_views": [sys.executable, "-m", "sray_ros.train.evaluate", "--checkpoint", ckpt, "--data",
                         str(data / "test"), "--out", str(out / "eval_2_views"), "--max-views", "2",
                         "--num-panels", "1", "--device", args.device],
    }
    for room in args.finetune_rooms.split(","):
        jobs[f"finetune_{room}"] = [sys.executable, "-m", "sray_ros.train.finetune", "--checkpoint", ckpt, "--scene",
                                    str(data / "test" / room), "--out", str(out / f"finetune_{room}"), "--steps",
                                    "1000", "--eval-at", "0,100,300,1000", "--device", args.device]
    procs = {name: (start(cmd, out / f"{name}.log"), out / f"{name}.log") for name, cmd in jobs.items()}
    wait_all(procs, "evaluation")
    (out / "wall.json").write_text(json.dumps({"wall_s": time.monotonic() - t0}))
    return pack(out, args.export, keep=[])


def pack(out: Path, export: str | None, keep: list[str]) -> int:
    """Everything small in one archive (checkpoints of throw-away runs left out), ``keep`` copied beside it."""
    if not export:
        return 0
    dest = Path(export)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest / "results.tar.gz", "w:gz") as tar:
        for path in sorted(out.rglob("*")):
            if path.is_file() and path.suffix != ".pt":
                tar.add(path, arcname=str(path.relative_to(out)))
    for rel in keep:
        shutil.copy2(out / rel, dest / rel.replace("/", "_"))
    log(f"exported to {dest}: {sorted(p.name for p in dest.iterdir())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True, help="folder with train/ and test/ ScanNet-layout rooms")
    t.add_argument("--out", required=True)
    t.add_argument("--init", default=str(ROOT / "models/sray_default.pt"), help="weights the default model starts from")
    t.add_argument("--budget-s", type=float, default=540.0, help="wall time for the whole command")
    t.add_argument("--reserve-s", type=float, default=25.0, help="kept free at the end (packing the results)")
    t.add_argument("--eval-s", type=float, default=100.0, help="time left for evaluating the ablations")
    t.add_argument("--default-speedup", type=float, default=1.15,
                   help="expected speed-up of the default run once the ablations stop (sizes its LR decay)")
    t.add_argument("--calibration-steps", type=int, default=30)
    t.add_argument("--max-views", type=int, default=5, help="held-out views per test room for the ablations")
    t.add_argument("--device", default="cuda")
    t.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                   help="extra sray-train override for every run (e.g. a cheap dry run: --set num_rays=32)")
    t.add_argument("--eval-size", default="", help="WxH of the evaluation renders (default: training size)")
    t.add_argument("--export", help="folder that receives results.tar.gz and the default checkpoint")
    e = sub.add_parser("evaluate")
    e.add_argument("--data", required=True)
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--finetune-rooms", default="test_0000,test_0001")
    e.add_argument("--bench", action="store_true", help="also run benchmarks/bench_model.py first")
    e.add_argument("--machine", default="GPU")
    e.add_argument("--device", default="cuda")
    e.add_argument("--export")
    args = p.parse_args(argv)
    return cmd_train(args) if args.command == "train" else cmd_evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
