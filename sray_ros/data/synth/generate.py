"""Synthetic labelled rooms in the ScanNet export layout (offline CPU rendering, pyrender over EGL).

    python -m sray_ros.data.synth.generate --out DIR --scenes N --frames F --split train|test --seed S \\
        [--width 320 --height 240]
    python -m sray_ros.data.synth.generate --out DIR --preset benchmark   # DIR/train (40) + DIR/test (10)
    python -m sray_ros.data.synth.generate --out DIR --preset large       # DIR/val (10) + DIR/train (LARGE)

Each scene ``<split>_<index>`` gets ``color/<i>.jpg``, ``depth/<i>.png`` (uint16 mm),
``label-filt/<i>.png`` (uint16 raw ids), ``pose/<i>.txt`` (camera-to-world, OpenCV frame),
``intrinsic/{intrinsic,extrinsic}_{color,depth}.txt`` and ``meta.json`` (room type, models used,
NYU40 pixel histogram). The raw ids are NYU40 ids; the output folder gets a
``scannetv2-labels.combined.tsv`` saying so (raw id == nyu40id), so the ScanNet reader loads the
scenes unchanged. A scene is written to ``<name>.partial`` and renamed when complete: a rerun skips
finished scenes (resumable). Deterministic per ``(seed, split, scene index)``.

Train and test rooms use disjoint furniture models: a fixed partition of the catalogue
(:func:`catalog.split_catalog`, seeded by ``--catalog-seed``, default 0). Procedural objects
(pictures, mirrors, curtains, counter tops) are generated per room and appear in both splits.
``val`` rooms are rooms of their own (seed stream ``(seed, 3, index)``) furnished from the *train*
models: a held-out set of training-split rooms for model selection, never the test rooms.

``--randomize-appearance`` (on in the ``large`` preset, off in ``benchmark``) gives every furniture
instance its own colours / materials and varies lighting and exposure per room
(:class:`render.AppearanceConfig`); it draws from a separate random stream ``(seed, split code,
index, 7)``, so a room's layout, camera poses, depth and labels are the same with and without it.
The ``large`` preset also cycles through room types with kitchens and bathrooms (where toilets,
sinks, bathtubs, counters, refrigerators and shower curtains live) twice per cycle and renders more
frames in them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

SPLIT_CODES = {"train": 1, "test": 2, "val": 3}
CATALOG_PART = {"train": "train", "val": "train", "test": "test"}  # which furniture partition a split uses
APPEARANCE_STREAM = 7  # 4th entry of the appearance generator's seed sequence
BENCHMARK = {"train": 40, "test": 10, "frames": 100, "width": 320, "height": 240, "seed": 0}
# Large training set. Seed 1: rooms other than the benchmark's (whose train rooms use seed 0).
# Room types cycle with kitchens and bathrooms twice (rare classes live there) and those get more frames.
LARGE_ROOM_CYCLE = ("bedroom", "kitchen", "living_room", "bathroom", "office", "kitchen", "bathroom")
LARGE = {"train": 210, "val": 10, "width": 320, "height": 240, "seed": 1, "randomize_appearance": True,
         "frames": {"bedroom": 50, "living_room": 50, "office": 50, "kitchen": 70, "bathroom": 70},
         "val_frames": 50}
HFOV_DEG = 60.0


def synth_intrinsics(width: int, height: int, hfov_deg: float = HFOV_DEG) -> np.ndarray:
    """3x3 pinhole intrinsics, square pixels, principal point at the image centre (integer-centre pixels)."""
    f = 0.5 * width / math.tan(math.radians(hfov_deg) * 0.5)
    return np.array([[f, 0.0, (width - 1) * 0.5], [0.0, f, (height - 1) * 0.5], [0.0, 0.0, 1.0]])


def scene_name(split: str, index: int) -> str:
    return f"{split}_{index:04d}"


def _write_matrix(path: Path, m: np.ndarray) -> None:
    np.savetxt(path, m, fmt="%.8f")


def write_dataset_files(out: Path) -> None:
    from sray_ros.data.label_sets import write_nyu40_label_table

    out.mkdir(parents=True, exist_ok=True)
    tsv = out / "scannetv2-labels.combined.tsv"
    if not tsv.exists():
        write_nyu40_label_table(tsv)


def room_type_of(index: int, seed: int, room_cycle: tuple[str, ...] | None = None) -> str:
    """Room type of scene ``index``: ``room_cycle[(index + seed) % len(room_cycle)]`` (default: all types once)."""
    from sray_ros.data.synth.layout import ROOM_TYPES

    cycle = tuple(room_cycle) if room_cycle else ROOM_TYPES
    unknown = sorted(set(cycle) - set(ROOM_TYPES))
    if unknown:
        raise ValueError(f"unknown room type(s) {unknown}; expected some of {list(ROOM_TYPES)}")
    return cycle[(index + seed) % len(cycle)]


def generate_scene(out: Path, split: str, index: int, frames: int, width: int, height: int, seed: int,
                   catalog_seed: int = 0, furniture_dir: str | None = None, cache_dir: str | None = None,
                   progress=None, randomize_appearance: bool = False,
                   room_cycle: tuple[str, ...] | None = None) -> Path:
    """Render one room into ``out/<split>_<index>`` (skipped when already complete). Returns its folder.

    ``randomize_appearance`` changes colours, lights and exposure only (see the module docstring);
    ``room_cycle`` picks the room type (:func:`room_type_of`). Raises ``ValueError`` for an unknown split.
    """
    import cv2

    from sray_ros.data.synth.catalog import SH3D_FURNITURE_DIR, load_catalog, split_catalog
    from sray_ros.data.synth.layout import make_layout
    from sray_ros.data.synth.render import AppearanceConfig, RoomScene
    from sray_ros.data.synth.trajectory import handheld_trajectory

    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}")
    room_type = room_type_of(index, seed, room_cycle)
    name = scene_name(split, index)
    final = out / name
    if (final / "meta.json").exists():
        return final
    tmp = out / f"{name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("color", "depth", "label-filt", "pose", "intrinsic"):
        (tmp / sub).mkdir(parents=True)

    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    models = split_catalog(load_catalog(str(furniture_dir or SH3D_FURNITURE_DIR)),
                           seed=catalog_seed)[CATALOG_PART[split]]
    layout = make_layout(room_type, models, rng)
    poses = handheld_trajectory(layout, frames, rng)
    K = synth_intrinsics(width, height)
    appearance = AppearanceConfig() if randomize_appearance else None
    arng = np.random.default_rng([seed, SPLIT_CODES[split], index, APPEARANCE_STREAM]) if appearance else None
    room = RoomScene(layout, rng, cache_dir=cache_dir, appearance=appearance, appearance_rng=arng)
    K4 = np.eye(4)
    K4[:3, :3] = K
    for f in ("intrinsic_color.txt", "intrinsic_depth.txt"):
        _write_matrix(tmp / "intrinsic" / f, K4)
    for f in ("extrinsic_color.txt", "extrinsic_depth.txt"):
        _write_matrix(tmp / "intrinsic" / f, np.eye(4))
    hist = np.zeros(41, np.int64)
    try:
        for i, c2w in enumerate(poses):
            color, depth, labels = room.render(K, c2w, width, height)
            cv2.imwrite(str(tmp / "color" / f"{i}.jpg"), color[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            depth_mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
            cv2.imwrite(str(tmp / "depth" / f"{i}.png"), depth_mm)
            cv2.imwrite(str(tmp / "label-filt" / f"{i}.png"), labels.astype(np.uint16))
            _write_matrix(tmp / "pose" / f"{i}.txt", c2w)
            hist += np.bincount(labels.reshape(-1), minlength=256)[:41]
            if progress is not None:
                progress.update(1)
    finally:
        room.close()
    meta = {
        "scene": name, "split": split, "index": index, "seed": seed, "catalog_seed": catalog_seed,
        "room_type": room_type, "room_size_m": [round(float(v), 3) for v in layout.size],
        "l_shaped": bool(layout.blocks), "frames": frames, "width": width, "height": height,
        "hfov_deg": HFOV_DEG, "depth_scale": 1000.0, "label_ids": "nyu40 (raw id == nyu40id)",
        "models": sorted({it.model.key for it in layout.items if it.model is not None}),
        "procedural": sorted({it.proc for it in layout.items if it.model is None}),
        "nyu40_pixel_counts": {str(i): int(c) for i, c in enumerate(hist) if c > 0},
    }
    if room_cycle:  # keys only when used: benchmark rooms' meta.json stays as it was
        meta["room_cycle"] = list(room_cycle)
    if appearance is not None:
        meta["appearance"] = {"config": dataclasses.asdict(appearance), **room.appearance_record}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def class_histogram(roots: list[Path], label_set_name: str = "scannet20") -> list[tuple[str, float]]:
    """Pixel fraction per class of ``label_set_name`` over every finished scene under ``roots``."""
    from sray_ros.data.label_sets import load_label_set

    ls = load_label_set(label_set_name)
    counts = np.zeros(256, np.int64)
    for root in roots:
        for meta in sorted(Path(root).glob("*/meta.json")):
            for nyu, c in json.loads(meta.read_text())["nyu40_pixel_counts"].items():
                counts[ls.nyu40_to_class[int(nyu)]] += c
    total = max(int(counts.sum()), 1)
    rows = [(n, counts[k] / total) for k, n in enumerate(ls.class_names)]
    rows.append(("(ignore)", counts[ls.ignore_index] / total))
    return rows


def format_histogram(rows: list[tuple[str, float]]) -> str:
    return "\n".join(f"{name:16s} {100 * frac:6.2f} %" for name, frac in rows)


def summary(roots: list[Path], label_set_name: str = "scannet20") -> str:
    """Scene / frame counts and the class histogram (pixel %) per root and over all, as a text table."""
    cols = [(str(r), class_histogram([r], label_set_name)) for r in roots]
    if len(roots) > 1:
        cols.append(("all", class_histogram(roots, label_set_name)))
    counts = []
    for r in roots:
        metas = [json.loads(m.read_text()) for m in sorted(Path(r).glob("*/meta.json"))]
        counts.append(f"{r}: {len(metas)} scenes, {sum(m['frames'] for m in metas)} frames")
    head = f"{'class':16s}" + "".join(f" {Path(name).name:>8s}" for name, _ in cols)
    lines = [head]
    for k, (cls, _) in enumerate(cols[0][1]):
        lines.append(f"{cls:16s}" + "".join(f" {100 * rows[k][1]:7.2f}%" for _, rows in cols))
    return "\n".join(counts + lines)


def _run_split(out: Path, split: str, scenes: int, frames: int | dict[str, int], width: int, height: int,
               seed: int, catalog_seed: int, furniture_dir, cache_dir, start: int = 0,
               randomize_appearance: bool = False, room_cycle: tuple[str, ...] | None = None) -> None:
    """Generate scenes ``start .. start + scenes - 1``; ``frames`` may be a dict room type -> frame count."""
    from tqdm import tqdm

    def n_frames(i: int) -> int:
        return frames[room_type_of(i, seed, room_cycle)] if isinstance(frames, dict) else frames

    write_dataset_files(out)
    todo = [i for i in range(start, start + scenes) if not (out / scene_name(split, i) / "meta.json").exists()]
    done = scenes - len(todo)
    with tqdm(total=sum(n_frames(i) for i in todo), desc=f"{split} ({done}/{scenes} scenes already done)",
              unit="frame", dynamic_ncols=True) as bar:
        for i in todo:
            bar.set_postfix_str(scene_name(split, i))
            generate_scene(out, split, i, n_frames(i), width, height, seed, catalog_seed, furniture_dir, cache_dir,
                           progress=bar, randomize_appearance=randomize_appearance, room_cycle=room_cycle)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sray_ros.data.synth.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (with --preset: holds train/ and test/)")
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--split", choices=sorted(SPLIT_CODES), default="train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="index of the first scene")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--catalog-seed", type=int, default=0, help="seed of the train/test furniture partition")
    ap.add_argument("--furniture-dir", default=None, help="folder of *.sh3f (default /usr/share/sweethome3d/furniture)")
    ap.add_argument("--cache-dir", default=None, help="where models are extracted (default ~/.cache/sray_ros)")
    ap.add_argument("--randomize-appearance", action="store_true",
                    help="per-instance colours/materials, varied lights and exposure (labels, depth, poses unchanged)")
    ap.add_argument("--preset", choices=["benchmark", "large"], default=None,
                    help="benchmark: 40 train + 10 test rooms, 100 frames, 320x240, seed 0; "
                         f"large: {LARGE['val']} val + {LARGE['train']} train rooms (no test rooms), "
                         "randomised appearance, 50-70 frames per room, 320x240, seed 1")
    ap.add_argument("--summary-only", action="store_true", help="only print counts and the class histogram")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.summary_only:
        roots = {"benchmark": [args.out / "train", args.out / "test"],
                 "large": [args.out / "train", args.out / "val"]}.get(args.preset, [args.out])
        print(summary([r for r in roots if r.is_dir()]))
        return 0
    if args.preset == "benchmark":
        b = BENCHMARK
        roots = [args.out / "train", args.out / "test"]
        for split, root in zip(("train", "test"), roots):
            _run_split(root, split, b[split], b["frames"], b["width"], b["height"], b["seed"], args.catalog_seed,
                       args.furniture_dir, args.cache_dir)
    elif args.preset == "large":
        b = LARGE
        roots = [args.out / "train", args.out / "val"]
        # val first: it is small and model selection needs it early
        _run_split(args.out / "val", "val", b["val"], b["val_frames"], b["width"], b["height"], b["seed"],
                   args.catalog_seed, args.furniture_dir, args.cache_dir, randomize_appearance=True)
        _run_split(args.out / "train", "train", b["train"], b["frames"], b["width"], b["height"], b["seed"],
                   args.catalog_seed, args.furniture_dir, args.cache_dir, randomize_appearance=True,
                   room_cycle=LARGE_ROOM_CYCLE)
    else:
        roots = [args.out]
        _run_split(args.out, args.split, args.scenes, args.frames, args.width, args.height, args.seed,
                   args.catalog_seed, args.furniture_dir, args.cache_dir, start=args.start,
                   randomize_appearance=args.randomize_appearance)
    print(f"done in {time.time() - t0:.0f} s; ScanNet-20 pixel histogram (ignore = NYU40 classes outside it):")
    print(summary(roots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
