"""Imperfect labels as a first-class input: Semantic-NeRF's label tasks as deterministic corruptions.

Semantic-NeRF (Zhi et al., ICCV 2021, Sec. 4.2-4.4) measures how a scene field copes with sparse, noisy and
low-resolution labels. :class:`LabelCorruption` reproduces those tasks on the label maps of *source / training*
keyframes (callers never pass held-out targets: their labels are the ground truth), deterministically per seed
(every random choice comes from ``numpy.random.default_rng([seed, task, frame])``):

* ``downscale S``: labels given at ``1/S`` resolution (``round(W/S) x round(H/S)``, at least 1 pixel), nearest
  neighbour down and nearest neighbour back up (Semantic-NeRF's "dense" super-resolution labels);
* ``region_noise P``: per frame, the connected same-class regions (4-connectivity, ``cv2.connectedComponents``)
  are listed and ``round(P * regions)`` of them, chosen at random, are relabelled to one random *other* class
  each (Semantic-NeRF flips chosen object instances of Replica in a fraction of the frames; the synthetic and
  ScanNet-layout rooms here carry no instance maps, so connected regions stand in for instances);
* ``pixel_noise P``: per frame, ``round(P * labelled pixels)`` of the labelled (non-255) pixels, chosen at
  random, get a random *other* class each (Semantic-NeRF draws from all classes, so some of its "noisy"
  pixels keep their label; here exactly the stated fraction is wrong);
* ``keep_fraction F``: only ``round(F * frames)`` frames (at least one when ``F > 0``), chosen at random,
  keep labels; the others become all 255 (Semantic-NeRF's sparse-label task).

They apply in that order, so noise lands only on the frames and resolution the robot would have had.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import cv2
import numpy as np

from sray_ros import geometry
from sray_ros.data.label_sets import IGNORE_INDEX

_TASK_KEEP, _TASK_PIXEL, _TASK_REGION = 1, 2, 3


def _other_classes(rng: np.random.Generator, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """A uniformly random class different from each entry of ``labels``."""
    return ((labels.astype(np.int64) + rng.integers(1, num_classes, size=labels.shape)) % num_classes).astype(labels.dtype)


@dataclass(frozen=True)
class LabelCorruption:
    """Semantic-NeRF's label tasks (module docstring). Defaults are the identity (clean, dense labels).

    keep_fraction, pixel_noise, region_noise in [0, 1] (keep 0: no frame labelled); downscale: integer >= 1;
    seed: any non-negative integer. Raises ``ValueError`` for values out of range.
    """

    keep_fraction: float = 1.0
    pixel_noise: float = 0.0
    region_noise: float = 0.0
    downscale: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("keep_fraction", "pixel_noise", "region_noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if int(self.downscale) != self.downscale or self.downscale < 1:
            raise ValueError(f"downscale must be an integer >= 1, got {self.downscale}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed}")

    @property
    def is_identity(self) -> bool:
        return self.keep_fraction == 1.0 and self.pixel_noise == 0 and self.region_noise == 0 and self.downscale == 1

    def describe(self) -> str:
        parts = []
        if self.keep_fraction < 1:
            parts.append(f"{100 * self.keep_fraction:g} % of keyframes labelled")
        if self.pixel_noise:
            parts.append(f"pixel noise {100 * self.pixel_noise:g} %")
        if self.region_noise:
            parts.append(f"region noise {100 * self.region_noise:g} %")
        if self.downscale > 1:
            parts.append(f"labels at 1/{self.downscale}")
        return ", ".join(parts) or "clean dense labels"

    def kept_frames(self, num_frames: int) -> np.ndarray:
        """Bool ``[F]``: which frames keep their labels under ``keep_fraction``."""
        keep = np.zeros(num_frames, bool)
        count = int(round(self.keep_fraction * num_frames))
        if self.keep_fraction > 0:
            count = max(count, 1)
        rng = np.random.default_rng([self.seed, _TASK_KEEP, num_frames])
        keep[rng.permutation(num_frames)[:count]] = True
        return keep

    def apply(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """Corrupted copy of ``labels`` (uint8 ``[F, H, W]`` class ids, 255 = unknown) for a ``num_classes`` set.

        Raises ``ValueError`` for a wrong shape, fewer than 2 classes (no "other" class) or ids ``>= num_classes``
        other than 255. The input is never modified.
        """
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise ValueError(f"labels must be [frames, H, W], got shape {labels.shape}")
        if num_classes < 2 or num_classes > IGNORE_INDEX:
            raise ValueError(f"num_classes must be in [2, {IGNORE_INDEX}], got {num_classes}")
        bad = (labels != IGNORE_INDEX) & (labels >= num_classes)
        if bad.any():
            raise ValueError(f"label ids must be < {num_classes} or {IGNORE_INDEX}, got {np.unique(labels[bad])[:10]}")
        out = labels.astype(np.uint8, copy=True)
        if self.is_identity:
            return out
        f, h, w = out.shape
        for i in range(f):
            if self.downscale > 1:
                out[i] = downscale_labels(out[i], self.downscale)
            if self.region_noise > 0:
                out[i] = region_noise(out[i], self.region_noise, num_classes,
                                      np.random.default_rng([self.seed, _TASK_REGION, i]))
            if self.pixel_noise > 0:
                out[i] = pixel_noise(out[i], self.pixel_noise, num_classes,
                                     np.random.default_rng([self.seed, _TASK_PIXEL, i]))
        if self.keep_fraction < 1:
            out[~self.kept_frames(f)] = IGNORE_INDEX
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LabelCorruption":
        """From the options of :func:`add_label_corruption_args`."""
        return cls(args.label_keep_fraction, args.label_pixel_noise, args.label_region_noise, args.label_downscale,
                   args.label_noise_seed)

    def to_args(self) -> list[str]:
        """The command-line options of :func:`add_label_corruption_args` that give this corruption."""
        return ["--label-keep-fraction", repr(float(self.keep_fraction)), "--label-pixel-noise",
                repr(float(self.pixel_noise)), "--label-region-noise", repr(float(self.region_noise)),
                "--label-downscale", str(int(self.downscale)),
                "--label-noise-seed", str(int(self.seed))]


def downscale_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """``[H, W]`` labels at ``1/factor`` resolution, nearest neighbour both ways (never mixes ids)."""
    h, w = labels.shape
    small = geometry.resize_nearest(labels, max(1, round(w / factor)), max(1, round(h / factor)))
    return geometry.resize_nearest(small, w, h)


def pixel_noise(labels: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``round(fraction * n)`` of the ``n`` labelled pixels of ``[H, W]`` set to a random other class."""
    out = labels.copy()
    flat = out.reshape(-1)
    idx = np.flatnonzero(flat != IGNORE_INDEX)
    pick = rng.permutation(idx.size)[: int(round(fraction * idx.size))]
    flat[idx[pick]] = _other_classes(rng, flat[idx[pick]], num_classes)
    return out


def label_regions(labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Connected same-class regions of ``[H, W]`` labels (4-connectivity; 255 is no region).

    Returns a region id map ``int32 [H, W]`` (-1 on unknown pixels, else 0..R-1) and each region's class.
    """
    regions = np.full(labels.shape, -1, np.int32)
    classes: list[int] = []
    for c in np.unique(labels):
        if c == IGNORE_INDEX:
            continue
        count, comp = cv2.connectedComponents((labels == c).astype(np.uint8), connectivity=4)
        mask = comp > 0
        regions[mask] = comp[mask] - 1 + len(classes)
        classes.extend([int(c)] * (count - 1))
    return regions, classes


def region_noise(labels: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``round(fraction * R)`` of the ``R`` connected same-class regions relabelled, each to a random other class."""
    regions, classes = label_regions(labels)
    if not classes:
        return labels.copy()
    pick = rng.permutation(len(classes))[: int(round(fraction * len(classes)))]
    new_class = np.asarray(classes, np.int64)
    new_class[pick] = _other_classes(rng, new_class[pick], num_classes)
    out = labels.copy()
    known = regions >= 0
    out[known] = new_class[regions[known]].astype(np.uint8)
    return out


def add_label_corruption_args(parser: argparse.ArgumentParser) -> None:
    """``--label-keep-fraction/-pixel-noise/-region-noise/-downscale/-noise-seed`` (Semantic-NeRF's tasks),
    applied to source / training keyframes only; read them back with :meth:`LabelCorruption.from_args`."""
    g = parser.add_argument_group("label corruption (source/training keyframes only, never held-out targets)")
    g.add_argument("--label-keep-fraction", type=float, default=1.0, metavar="F",
                   help="fraction of keyframes that keep labels; the rest are unlabelled (255)")
    g.add_argument("--label-pixel-noise", type=float, default=0.0, metavar="P",
                   help="fraction of labelled pixels per keyframe set to a random other class")
    g.add_argument("--label-region-noise", type=float, default=0.0, metavar="P",
                   help="fraction of connected same-class regions per keyframe relabelled to a random other class")
    g.add_argument("--label-downscale", type=int, default=1, metavar="S",
                   help="labels given at 1/S resolution (nearest down, nearest up)")
    g.add_argument("--label-noise-seed", type=int, default=0, metavar="N", help="seed of every random choice")


# The label tasks of Semantic-NeRF (Zhi et al., ICCV 2021, Sec. 5) as the model card scores them, by name.
SEMANTIC_NERF_TASKS = {
    "clean": LabelCorruption(),
    "keep10": LabelCorruption(keep_fraction=0.1),
    "pixel50": LabelCorruption(pixel_noise=0.5),
    "pixel90": LabelCorruption(pixel_noise=0.9),
    "region30": LabelCorruption(region_noise=0.3),
    "down8": LabelCorruption(downscale=8),
}
