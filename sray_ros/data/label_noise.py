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

Beside them, :class:`SegmenterNoise` imitates a real 2D segmenter's errors (the labels a robot's own network
would publish): boundary errors, confusions between similar classes, small objects missed and per-frame
flicker (each frame draws its own errors). ``LabelCorruption(segmenter=SegmenterNoise(...))`` applies it
first, before the tasks above.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import cv2
import numpy as np

from sray_ros import geometry
from sray_ros.data.label_sets import IGNORE_INDEX

_TASK_KEEP, _TASK_PIXEL, _TASK_REGION, _TASK_SEGMENTER = 1, 2, 3, 4

# Classes a segmenter confuses with each other (by name, so any label set that has them gets the groups).
SIMILAR_CLASSES: tuple[tuple[str, ...], ...] = (
    ("table", "desk", "counter"),
    ("cabinet", "otherfurniture", "bookshelf"),
    ("curtain", "window", "shower curtain"),
    ("chair", "sofa"),
)


def similar_class_groups(class_names, groups=SIMILAR_CLASSES) -> tuple[tuple[int, ...], ...]:
    """Class-id groups of :data:`SIMILAR_CLASSES` present in ``class_names`` (groups with < 2 members dropped)."""
    index = {str(n).lower(): i for i, n in enumerate(class_names)}
    out = []
    for g in groups:
        ids = tuple(index[n] for n in g if n in index)
        if len(ids) >= 2:
            out.append(ids)
    return tuple(out)


@dataclass(frozen=True)
class SegmenterNoise:
    """Errors of a real 2D segmenter, drawn independently per frame (so they flicker between frames).

    boundary_px: each class present is, with probability 1/2, dilated into its neighbours by 1..boundary_px
        pixels (random order, so a neighbour is eroded by as much): labels bleed over edges;
    confusion: probability that a connected region of a class in a ``groups`` entry (similar classes, e.g.
        table/desk/counter) is labelled as another class of its group;
    small_fraction / miss_small: a region smaller than ``small_fraction`` of the image is, with probability
        ``miss_small``, missed: it takes the most common label on its border (the segmenter sees through it);
    flicker: share of regions relabelled to a random other class (a frame's stray mistakes);
    groups: class-id groups; None = :func:`similar_class_groups` of the ScanNet-20 names when there are 20
        classes, else none.
    Raises ``ValueError`` for values out of range.
    """

    boundary_px: int = 2
    confusion: float = 0.3
    small_fraction: float = 0.003
    miss_small: float = 0.5
    flicker: float = 0.05
    groups: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if int(self.boundary_px) != self.boundary_px or self.boundary_px < 0:
            raise ValueError(f"boundary_px must be an integer >= 0, got {self.boundary_px}")
        for name in ("confusion", "small_fraction", "miss_small", "flicker"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def describe(self) -> str:
        return (f"segmenter-like (boundaries +-{self.boundary_px} px, similar-class confusion "
                f"{100 * self.confusion:g} %, small objects missed {100 * self.miss_small:g} %, flicker "
                f"{100 * self.flicker:g} %)")

    def resolve_groups(self, num_classes: int) -> tuple[tuple[int, ...], ...]:
        if self.groups is not None:
            return tuple(tuple(int(c) for c in g if 0 <= c < num_classes) for g in self.groups)
        if num_classes == 20:
            from sray_ros.data.label_sets import load_label_set
            return similar_class_groups(load_label_set("scannet20").class_names)
        return ()

    def apply_frame(self, labels: np.ndarray, num_classes: int, rng: np.random.Generator,
                    groups: tuple[tuple[int, ...], ...]) -> np.ndarray:
        """One frame ``[H, W]`` with this frame's own draw of every error."""
        out = labels.copy()
        known = out != IGNORE_INDEX
        # boundary errors: some classes bleed into their neighbours (which are eroded by as much)
        if self.boundary_px > 0:
            present = [int(c) for c in np.unique(out[known])]
            for c in rng.permutation(present):
                if rng.random() < 0.5:
                    r = int(rng.integers(1, self.boundary_px + 1))
                    grown = cv2.dilate((out == c).astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
                    out[grown & known] = c
        regions, classes = label_regions(out)
        if not classes:
            return out
        new_class = np.asarray(classes, np.int64)
        sizes = np.bincount(regions[regions >= 0], minlength=len(classes))
        member = {c: g for g in groups for c in g}
        for j, c in enumerate(classes):
            g = member.get(c)
            if g is not None and rng.random() < self.confusion:
                others = [o for o in g if o != c]
                new_class[j] = others[int(rng.integers(len(others)))]
        flick = rng.random(len(classes)) < self.flicker
        new_class[flick] = _other_classes(rng, new_class[flick], num_classes)
        res = out.copy()
        res[regions >= 0] = new_class[regions[regions >= 0]].astype(np.uint8)
        # small objects missed: they take the most common label around them
        small = np.flatnonzero((sizes < self.small_fraction * out.size) & (rng.random(len(classes)) < self.miss_small))
        for j in small:
            mask = (regions == j).astype(np.uint8)
            ring = (cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0) & (mask == 0) & known
            around = res[ring]
            if around.size:
                res[mask > 0] = np.bincount(around, minlength=256).argmax()
        return res



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
    segmenter: SegmenterNoise | None = None

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
        return (self.keep_fraction == 1.0 and self.pixel_noise == 0 and self.region_noise == 0 and self.downscale == 1
                and self.segmenter is None)

    def describe(self) -> str:
        parts = [] if self.segmenter is None else [self.segmenter.describe()]
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
        out = _checked_labels(labels, num_classes, 3, "[frames, H, W]")
        if self.is_identity:
            return out
        f = out.shape[0]
        groups = self.segmenter.resolve_groups(num_classes) if self.segmenter is not None else ()
        for i in range(f):
            out[i] = self._corrupt_frame(out[i], num_classes, i, groups)
        if self.keep_fraction < 1:
            out[~self.kept_frames(f)] = IGNORE_INDEX
        return out

    def apply_frame(self, labels: np.ndarray, num_classes: int, index: int) -> np.ndarray:
        """Frame ``index`` of a sequence corrupted one frame at a time (e.g. while writing a bag): the same result
        as ``apply(sequence)[index]`` except ``keep_fraction``, which needs the whole sequence
        (:meth:`kept_frames`). ``labels`` uint8 ``[H, W]``; the input is never modified."""
        if self.keep_fraction < 1:
            raise ValueError("keep_fraction needs the whole sequence: use apply() or kept_frames()")
        labels = _checked_labels(labels, num_classes, 2, "[H, W]")
        groups = self.segmenter.resolve_groups(num_classes) if self.segmenter is not None else ()
        return self._corrupt_frame(labels, num_classes, int(index), groups)

    def _corrupt_frame(self, out: np.ndarray, num_classes: int, i: int, groups) -> np.ndarray:
        if self.segmenter is not None:
            out = self.segmenter.apply_frame(out, num_classes, np.random.default_rng([self.seed, _TASK_SEGMENTER, i]),
                                             groups)
        if self.downscale > 1:
            out = downscale_labels(out, self.downscale)
        if self.region_noise > 0:
            out = region_noise(out, self.region_noise, num_classes, np.random.default_rng([self.seed, _TASK_REGION, i]))
        if self.pixel_noise > 0:
            out = pixel_noise(out, self.pixel_noise, num_classes, np.random.default_rng([self.seed, _TASK_PIXEL, i]))
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

# Segmenter-like noise (:class:`SegmenterNoise` defaults) as a task beside Semantic-NeRF's.
LABEL_TASKS = {**SEMANTIC_NERF_TASKS, "segmenter": LabelCorruption(segmenter=SegmenterNoise())}


def _checked_labels(labels: np.ndarray, num_classes: int, ndim: int, layout: str) -> np.ndarray:
    """A uint8 copy of ``labels`` after checking its rank (``layout`` names it), ``num_classes`` in [2, 255] and
    every id ``< num_classes`` or 255; raises ``ValueError`` naming what is wrong."""
    labels = np.asarray(labels)
    if labels.ndim != ndim:
        raise ValueError(f"labels must be {layout}, got shape {labels.shape}")
    if num_classes < 2 or num_classes > IGNORE_INDEX:
        raise ValueError(f"num_classes must be in [2, {IGNORE_INDEX}], got {num_classes}")
    bad = (labels != IGNORE_INDEX) & (labels >= num_classes)
    if bad.any():
        raise ValueError(f"label ids must be < {num_classes} or {IGNORE_INDEX}, got {np.unique(labels[bad])[:10]}")
    return labels.astype(np.uint8, copy=True)
