"""The legend helper: class colours, the unknown hatch, nearest-neighbour enlargement, legends and panels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sray_ros import viz
from sray_ros.data.label_sets import load_label_set

COLORS = np.array([[200, 0, 0], [0, 180, 0], [10, 10, 10]], np.uint8)  # class 2 is nearly black
NAMES = ["wall", "floor", "dark"]


def _count(image: np.ndarray, color) -> int:
    return int((image.reshape(-1, 3) == np.asarray(color, np.uint8)).all(1).sum())


def _has(image: np.ndarray, color) -> bool:
    return _count(image, color) > 0


def test_integer_factor():
    assert viz.integer_factor(160, 320) == 2
    assert viz.integer_factor(320, 320) == 1
    assert viz.integer_factor(640, 320) == 1
    assert viz.integer_factor(100, 320) == 4  # 3 x 100 = 300 < 320
    assert viz.integer_factor(160, 480) == 3
    with pytest.raises(ValueError, match="positive"):
        viz.integer_factor(0)


def test_label_tile_colours_classes_and_hatches_unknown():
    labels = np.array([[0, 1], [255, 7]], np.uint8)  # 7: outside the 3-class set -> unknown as well
    tile = viz.label_tile(labels, COLORS, 40, 40)
    assert tile.shape == (40, 40, 3) and tile.dtype == np.uint8
    # nearest-neighbour: each label pixel is a solid 20 x 20 block of its class colour
    assert (tile[:20, :20] == COLORS[0]).all() and (tile[:20, 20:] == COLORS[1]).all()
    for block in (tile[20:, :20], tile[20:, 20:]):
        values = {tuple(v) for v in block.reshape(-1, 3)}
        assert values == {viz.HATCH_LIGHT, viz.HATCH_DARK}  # both stripes, nothing else
    # the unknown hatch looks like no class, also not the nearly black one
    hatch_values = {viz.HATCH_LIGHT, viz.HATCH_DARK}
    assert not hatch_values & {tuple(c) for c in COLORS}


def test_label_tile_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        viz.label_tile(np.zeros((2, 2, 3), np.uint8), COLORS)
    with pytest.raises(ValueError, match="class colours"):
        viz.label_tile(np.zeros((2, 2), np.uint8), np.zeros((0, 3)))


def test_label_tile_int_labels_out_of_range_are_unknown():
    tile = viz.label_tile(np.array([[-1, 300, 2]]), COLORS, 3, 1)
    assert tuple(tile[0, 2]) == tuple(COLORS[2])
    assert {tuple(tile[0, 0]), tuple(tile[0, 1])} <= {viz.HATCH_LIGHT, viz.HATCH_DARK}


def test_overlay_blends_camera_and_labels():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    out = viz.overlay(rgb, np.zeros((2, 2), np.uint8), COLORS, alpha=0.5, width=4, height=4)
    assert out.shape == (4, 4, 3)
    assert (out == np.array([150, 50, 50], np.uint8)).all()  # (100 + 200) / 2, (100 + 0) / 2


def test_present_classes():
    classes, unknown = viz.present_classes([np.array([[2, 0]], np.uint8), np.array([[0, 255]], np.uint8)], 3)
    assert classes == [0, 2] and unknown
    assert viz.present_classes([np.array([[1]], np.uint8)], 3) == ([1], False)


def test_legend_lists_the_given_classes_and_unknown():
    strip = viz.legend(NAMES, COLORS, 600, classes=[0, 2])
    assert strip.shape[1] == 600
    assert _has(strip, COLORS[0]) and _has(strip, COLORS[2]) and not _has(strip, COLORS[1])
    # the unknown swatch: half of its 16 x 16 inside is dark stripe (text anti-aliasing adds a few grey pixels)
    without = viz.legend(NAMES, COLORS, 600, classes=[0, 2], unknown=False)
    assert _count(strip, viz.HATCH_DARK) - _count(without, viz.HATCH_DARK) >= 100
    with pytest.raises(ValueError, match="class names"):
        viz.legend(NAMES[:2], COLORS, 600)


def test_legend_wraps_onto_more_rows_when_narrow():
    label_set = load_label_set("scannet20")
    wide = viz.legend(label_set.class_names, label_set.colors, 3000)
    narrow = viz.legend(label_set.class_names, label_set.colors, 400)
    assert narrow.shape[0] > 3 * wide.shape[0] // 2
    for c in label_set.colors:  # every class still has its swatch
        assert _has(narrow, c)


def test_panel_captions_tiles_and_adds_the_legend_of_shown_classes():
    labels = np.array([[0, 0], [255, 2]], np.uint8)
    tile = viz.label_tile(labels, COLORS, 320, 320)
    camera = np.full((320, 320, 3), 90, np.uint8)
    image = viz.panel([(camera, "camera"), (tile, "labels")], NAMES, COLORS, [labels])
    assert image.shape[1] == 320 + 4 + 320
    legend_part = image[26 + 320:]
    assert legend_part.shape[0] > 20
    assert _has(legend_part, COLORS[0]) and _has(legend_part, COLORS[2]) and not _has(legend_part, COLORS[1])
    with pytest.raises(ValueError, match="one height"):
        viz.panel([(camera, "a"), (camera[:10], "b")], NAMES, COLORS, [labels])


def test_scalar_tile_maps_range_and_hatches_non_finite():
    values = np.array([[0.0, 1.0, np.nan]])
    out = viz.scalar_tile(values, 0.0, 1.0, cv2.COLORMAP_VIRIDIS, 3, 1)
    lut = cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]
    assert tuple(out[0, 0]) == tuple(lut[0, 0]) and tuple(out[0, 1]) == tuple(lut[0, 1])
    assert tuple(out[0, 2]) in (viz.HATCH_LIGHT, viz.HATCH_DARK)
    assert viz.colorbar_caption("depth", 0, 4.2, "m", "turbo") == "depth: blue 0.0 .. red 4.2 m"


def test_eval_panel_tiles_are_at_least_320_px_with_legend():
    from sray_ros.train.evaluate import panel

    label_set = load_label_set("scannet20")
    labels = np.zeros((60, 80), np.uint8)
    labels[:, 40:] = 255
    image = panel(np.zeros((60, 80, 3), np.uint8), labels, labels, np.ones((60, 80)), np.ones((60, 80)), label_set)
    assert image.shape[1] == 5 * 320 + 4 * 4  # 80 px enlarged 4x (nearest), 4 px separators
    assert image.shape[0] > 26 + 240 + 20  # caption bar + tile + legend
    assert _has(image[26 + 240:], label_set.colors[0])
