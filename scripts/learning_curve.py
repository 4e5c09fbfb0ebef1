#!/usr/bin/env python3
"""Learning curve of a ``sray-train`` run: validation ray mIoU (and test-room scores) against training rays.

    pip install -e '.[plots]'    # matplotlib
    python scripts/learning_curve.py --run runs/generalize_cpu --baseline models/sray_default.pt \
        --test-eval 0=runs/lc_eval_0/results.json --test-eval 5000=runs/lc_eval_5000/results.json \
        --png models/learning_curve.png --md runs/generalize_cpu/learning_curve.md

* Validation: the run's ``log.jsonl`` records (ray mIoU / accuracy on the fixed rays of its ``val_root``),
  plotted against training rays (step x ``num_rays``). ``--baseline`` scores the run's initial weights on the
  very same validation rays (the run's ``config.yaml`` rebuilds them) as the step-0 point.
* ``--compare LABEL=RUN`` (repeatable): another run's validation curve on the same axes, against training rays
  and, in a third panel, against wall-clock minutes (runs of equal budget, e.g. hierarchical vs depth-guided;
  validate them with the same ``val_sampling``). The table gets one column per run.
* ``--test-eval STEP=results.json``: whole-view scores of a snapshot on the unseen test rooms, from
  ``scripts/eval_depth_guided.py`` (its depth-guided RGB-D row: mIoU and depth AbsRel).
Writes the PNG (two panels, large fonts) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def baseline_validation(run: Path, checkpoint: str) -> dict:
    """Validation metrics of ``checkpoint`` on the run's own validation rays."""
    import torch

    from sray_ros.data.label_sets import load_label_set
    from sray_ros.train.checkpoint import load_checkpoint
    from sray_ros.train.config import TrainConfig
    from sray_ros.train.train_cli import load_scene_arrays, validation_batches
    from sray_ros.train.trainer import Trainer

    cfg = TrainConfig.from_yaml(run / "config.yaml")
    batches = validation_batches(load_scene_arrays(cfg.val_root, cfg, cfg.max_val_scenes), cfg)
    model = load_checkpoint(checkpoint, map_location="cpu").model
    trainer = Trainer(model, load_label_set(cfg.label_set).to_dict(), iter(batches), chunk=cfg.chunk,
                      sampling=cfg.sampling, depth_perturb=cfg.depth_perturb, depth_loss_weight=cfg.depth_loss_weight)
    with torch.no_grad():
        return trainer.evaluate_batches(batches)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="sray-train output_dir (log.jsonl, config.yaml)")
    p.add_argument("--baseline", help="the run's initial checkpoint, scored as step 0 on the same validation rays")
    p.add_argument("--test-eval", action="append", default=[], metavar="STEP=RESULTS_JSON")
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=RUN")
    p.add_argument("--label", default="val rooms (ray mIoU)", help="legend of --run's validation curve")
    p.add_argument("--png", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)

    import yaml

    run = Path(args.run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    rays = int(cfg["num_rays"])
    def read_run(folder: Path) -> tuple[dict, dict]:
        rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
        elapsed = {r["step"]: r["elapsed_s"] for r in rows if "elapsed_s" in r}
        return {r["step"]: r for r in rows if "val_miou" in r}, elapsed

    val, elapsed = read_run(run)
    others = []
    for item in args.compare:
        label, _, folder = item.partition("=")
        o_rays = int(yaml.safe_load((Path(folder) / "config.yaml").read_text())["num_rays"])
        others.append((label, o_rays, *read_run(Path(folder))))
    if args.baseline:
        val[0] = {"step": 0, **baseline_validation(run, args.baseline)}
    test = {}
    for item in args.test_eval:
        step, _, path = item.partition("=")
        data = json.loads(Path(path).read_text())
        row = next((r for r in data["rows"] if r["data"] == "test_rooms" and r["sampling"] == "depth_guided"
                    and r["keyframes"] == "rgbd"), None)
        if row is None:
            raise SystemExit(f"learning_curve: {path} has no test_rooms / depth_guided / rgbd row")
        test[int(step)] = row

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 15})
    panels = 1 + bool(test) + bool(others)
    fig, axes = plt.subplots(1, panels, figsize=(8 * panels, 6.5), squeeze=False)
    axes = list(axes[0])
    a = axes[0]
    b = axes[1] if test else None
    steps = sorted(val)
    a.plot([s * rays / 1e6 for s in steps], [100 * val[s]["val_miou"] for s in steps], "o-", label=args.label)
    for label, o_rays, o_val, _ in others:
        o_steps = sorted(o_val)
        a.plot([s * o_rays / 1e6 for s in o_steps], [100 * o_val[s]["val_miou"] for s in o_steps], "o-", label=label)
    if others:
        c = axes[-1]
        for label, (v, el) in [(args.label, (val, elapsed))] + [(o[0], (o[2], o[3])) for o in others]:
            st = [s for s in sorted(v) if s in el]
            c.plot([el[s] / 60 for s in st], [100 * v[s]["val_miou"] for s in st], "o-", label=label)
        c.set_xlabel("wall-clock minutes")
        c.set_ylabel("validation ray mIoU (%)")
        c.grid(alpha=0.3)
        c.legend()
    if test:
        ts = sorted(test)
        a.plot([s * rays / 1e6 for s in ts], [100 * test[s]["miou"] for s in ts], "s--", ms=9,
               label="test rooms (whole views, mIoU)")
        b.plot([s * rays / 1e6 for s in ts], [test[s]["depth_abs_rel"] for s in ts], "s--", ms=9,
               label="test rooms, RGB-D keyframes")
    a.set_xlabel("training rays of this run (millions)")
    a.set_ylabel("mIoU (%)")
    a.grid(alpha=0.3)
    a.legend()
    if b is not None:
        b.set_xlabel("training rays of this run (millions)")
        b.set_ylabel("depth AbsRel")
        b.grid(alpha=0.3)
        b.legend()
    fig.suptitle(args.title or f"Learning curve: {run.name}")
    fig.tight_layout()
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=100)

    if others:  # one column of validation mIoU per run, by step
        names = [args.label] + [o[0] for o in others]
        vals = [val] + [o[2] for o in others]
        lines = ["| step | " + " | ".join(f"{n}: val ray mIoU (minutes)" for n in names) + " |",
                 "|---|" + "---|" * len(names)]
        times = [elapsed] + [o[3] for o in others]
        for s in sorted(set().union(*vals)):
            cells = [f"{100 * v[s]['val_miou']:.2f} ({t.get(s, float('nan')) / 60:.1f})" if s in v else ""
                     for v, t in zip(vals, times)]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    else:
        lines = ["| step | training rays (M) | val ray mIoU | val ray accuracy | test mIoU | test depth AbsRel |",
                 "|---|---|---|---|---|---|"]
        for s in sorted(set(val) | set(test)):
            v, t = val.get(s), test.get(s)
            lines.append(f"| {s} | {s * rays / 1e6:.2f} | "
                         + (f"{100 * v['val_miou']:.2f} | {100 * v['val_acc']:.2f}" if v else " | ")
                         + (f" | {100 * t['miou']:.2f} | {t['depth_abs_rel']:.3f} |" if t else " |  |  |"))
    Path(args.md).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
