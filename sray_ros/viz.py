"""Pictures of label images that a person can read: class colours with a legend, unknown marked distinctly.

The one place that turns class-id images into figures (the demo's panels and overlays, ``sray-eval``'s
panels, the scripts' panels). Conventions:

- class ``k`` is drawn in ``colors[k]`` (the label set's display colours, RGB uint8, as on the node's
  ``~/semantic_color/image_raw``);
- unknown (255, and any id outside the label set) is drawn as a grey diagonal hatch, which no class colour
  looks like, and the legend lists it as ``unknown``;
- label and rendered images are enlarged by an integer factor with nearest-neighbour interpolation, so every
  rendered pixel stays a visible square block and nothing is invented (:func:`integer_factor`);
- every panel that shows labels carries a legend of the classes it shows (:func:`legend`).

Text is drawn with OpenCV's Hershey font at a size readable at 100 % zoom (about 11 px cap height).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from sray_ros.data.label_sets import IGNORE_INDEX

UNKNOWN_NAME = "unknown"
HATCH_LIGHT = (215, 215, 215)
HATCH_DARK = (110, 110, 110)
HATCH_PERIOD = 8  # px: one light + one dark diagonal stripe
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.55  # ~11 px cap height: readable at 100 % zoom
MIN_TILE_WIDTH = 320  # px: label tiles are enlarged to at least this width


def integer_factor(width: int, min_width: int = MIN_TILE_WIDTH) -> int:
    """Smallest integer ``f >= 1`` with ``width * f >= min_width`` (so upscaled pixels stay square blocks)."""
    if width <= 0:
        raise ValueError(f"image width must be positive, got {width}")
    return max(1, -(-int(min_width) // int(width)))


def hatch(height: int, width: int, period: int = HATCH_PERIOD) -> np.ndarray:
    """``[height, width, 3]`` uint8 RGB diagonal grey stripes: how unknown pixels are drawn."""
    yy, xx = np.mgrid[0:height, 0:width]
    light = ((xx + yy) // max(period // 2, 1)) % 2 == 0
    out = np.empty((height, width, 3), np.uint8)
    out[light] = HATCH_LIGHT
    out[~light] = HATCH_DARK
    return out


def _palette(colors) -> tuple[np.ndarray, int]:
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3).round().clip(0, 255).astype(np.uint8)
    if not 0 < len(colors) <= IGNORE_INDEX:
        raise ValueError(f"need 1..{IGNORE_INDEX} class colours, got {len(colors)}")
    return colors, len(colors)


def _ids(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label image is [H, W] class ids, got shape {labels.shape}")
    if labels.dtype != np.uint8:
        labels = np.where((labels >= 0) & (labels < 256), labels, IGNORE_INDEX).astype(np.uint8)
    return labels


def upscale(image: np.ndarray, width: int, height: int, nearest: bool = True) -> np.ndarray:
    """``image`` resized to ``width x height``: nearest-neighbour for label / rendered images (no invented
    detail), area (shrinking) or linear (enlarging) for a camera image when ``nearest`` is False."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    if nearest:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
    shrink = width < image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def label_tile(labels: np.ndarray, colors, width: int | None = None, height: int | None = None) -> np.ndarray:
    """RGB uint8 ``[height, width, 3]`` picture of a class-id image ``[H, W]`` (default size: ``H x W``).

    The ids are enlarged nearest-neighbour first and coloured after, so the unknown hatch is drawn at the
    picture's resolution. Raises ValueError for a non-2D image or a palette of 0 or more than 255 colours.
    """
    colors, k = _palette(colors)
    ids = _ids(labels)
    width = ids.shape[1] if width is None else int(width)
    height = ids.shape[0] if height is None else int(height)
    ids = upscale(ids, width, height, nearest=True)
    out = hatch(height, width)
    known = ids < k
    out[known] = colors[ids[known]]
    return out


def overlay(rgb: np.ndarray, labels: np.ndarray, colors, alpha: float = 0.55,
            width: int | None = None, height: int | None = None) -> np.ndarray:
    """The camera image ``[H, W, 3]`` (RGB uint8) blended with the label picture (weight ``alpha``), both
    enlarged to ``width x height`` (labels nearest-neighbour); unknown pixels are blended with the hatch."""
    ids = _ids(labels)
    width = ids.shape[1] if width is None else int(width)
    height = ids.shape[0] if height is None else int(height)
    camera = upscale(np.asarray(rgb, np.uint8), width, height, nearest=False).astype(np.float32)
    tile = label_tile(ids, colors, width, height).astype(np.float32)
    return ((1 - alpha) * camera + alpha * tile).round().clip(0, 255).astype(np.uint8)


def present_classes(label_images: Sequence[np.ndarray], num_classes: int) -> tuple[list[int], bool]:
    """Class ids (sorted) that occur in any of ``label_images``, and whether unknown (255 or an id >=
    ``num_classes``) occurs."""
    seen = np.zeros(256, bool)
    for image in label_images:
        seen[np.unique(_ids(image))] = True
    return [k for k in range(num_classes) if seen[k]], bool(seen[num_classes:].any())


def _text_size(text: str) -> tuple[int, int]:
    (w, h), baseline = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    return w, h + baseline


def legend(class_names: Sequence[str], colors, width: int, classes: Sequence[int] | None = None,
           unknown: bool = True, title: str = "classes:") -> np.ndarray:
    """RGB uint8 ``[h, width, 3]`` legend strip: ``title``, then one entry per class of ``classes``
    (default: all) as a colour swatch with its name, and an ``unknown`` entry with the hatch when ``unknown``;
    entries flow left to right and wrap onto as many rows as ``width`` needs."""
    colors, k = _palette(colors)
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names but {k} colours")
    classes = range(k) if classes is None else [int(c) for c in classes]
    swatch, gap, pad, row_h = 18, 14, 8, 26
    entries = [(str(class_names[c]), colors[c]) for c in classes if 0 <= c < k]
    if unknown:
        entries.append((UNKNOWN_NAME, None))
    rows: list[list[tuple[int, str, np.ndarray | None]]] = [[]]
    x = pad + _text_size(title)[0] + gap
    for name, color in entries:
        w = swatch + 6 + _text_size(name)[0]
        if rows[-1] and x + w > width - pad:
            rows.append([])
            x = pad
        rows[-1].append((x, name, color))
        x += w + gap
    out = np.full((pad + row_h * len(rows) + pad // 2, width, 3), 255, np.uint8)
    cv2.putText(out, title, (pad, pad + 15), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    for r, row in enumerate(rows):
        y0 = pad + r * row_h
        for x0, name, color in row:
            box = out[y0:y0 + swatch, x0:x0 + swatch]
            box[:] = hatch(swatch, swatch) if color is None else color
            cv2.rectangle(out, (x0, y0), (x0 + swatch - 1, y0 + swatch - 1), (0, 0, 0), 1)
            cv2.putText(out, name, (x0 + swatch + 6, y0 + 15), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with a white bar above it holding ``text`` (cut with '...' to the tile's width)."""
    bar_h = 26
    while len(text) > 4 and _text_size(text)[0] > image.shape[1] - 8:
        text = text[:-4] + "..."
    bar = np.full((bar_h, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 18), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], 0)


def panel(tiles: Sequence[tuple[np.ndarray, str]], class_names: Sequence[str], colors,
          label_images: Sequence[np.ndarray], separator: int = 4) -> np.ndarray:
    """Captioned tiles side by side (all ``[h, w, 3]`` of one height) above a legend of the classes that
    occur in ``label_images`` (the class-id images the tiles show) plus ``unknown``."""
    if not tiles:
        raise ValueError("a panel needs at least one tile")
    heights = {t.shape[0] for t, _ in tiles}
    if len(heights) != 1:
        raise ValueError(f"panel tiles must share one height, got {sorted(heights)}")
    columns = []
    for n, (tile, text) in enumerate(tiles):
        if n:
            columns.append(np.full((tile.shape[0] + 26, separator, 3), 255, np.uint8))
        columns.append(caption(np.asarray(tile, np.uint8), text))
    row = np.concatenate(columns, 1)
    classes, _ = present_classes(label_images, len(class_names))
    return np.concatenate([row, legend(class_names, colors, row.shape[1], classes, unknown=True)], 0)


COLORMAP_ENDS = {"viridis": ("purple", "yellow"), "turbo": ("blue", "red")}


def colorbar_caption(name: str, low: float, high: float, unit: str, colormap: str) -> str:
    """Caption of a scalar tile naming the colours of its range ends, e.g. ``"depth: blue 0.0 .. red 4.2 m"``
    (``colormap``: a key of ``COLORMAP_ENDS``)."""
    first, last = COLORMAP_ENDS[colormap]
    return f"{name}: {first} {low:.1f} .. {last} {high:.1f}{(' ' + unit) if unit else ''}"


def scalar_tile(values: np.ndarray, low: float, high: float, colormap: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 picture of a float image (e.g. depth in m, confidence in 0..1) mapped linearly from
    ``low..high`` through an OpenCV colormap; non-finite values are drawn with the unknown hatch."""
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    scaled = np.clip((np.nan_to_num(values) - low) / max(high - low, 1e-9), 0, 1)
    image = cv2.applyColorMap((scaled * 255).astype(np.uint8), colormap)[..., ::-1]
    image = upscale(np.ascontiguousarray(image), width, height, nearest=True)
    mask = upscale(finite.astype(np.uint8), width, height, nearest=True).astype(bool)
    out = hatch(height, width)
    out[mask] = image[mask]
    return out
