"""Label sets and the ScanNet raw-id -> NYU40 -> ScanNet-20 mapping (real scannetv2-labels.combined.tsv)."""

from pathlib import Path

import numpy as np
import pytest

from sray_ros.data.label_sets import (NYU40_NAMES, SCANNET20_NYU40_IDS, LabelSet, load_label_set,
                                      raw_to_class_lut, scannet_category_to_nyu40, scannet_raw_to_nyu40,
                                      write_nyu40_label_table)

REPO = Path(__file__).resolve().parents[1]
TSV = REPO.parent / "shared" / "data" / "scannet" / "scannetv2-labels.combined.tsv"


@pytest.fixture(scope="module")
def tsv() -> Path:
    if not TSV.is_file():
        pytest.skip(f"needs the real ScanNet label table at {TSV} (shared/ beside the repository); absent here")
    return TSV


def test_scannet20_definition():
    ls = load_label_set("scannet20")
    assert ls.num_classes == 20 and ls.ignore_index == 255
    assert ls.nyu40_ids == list(SCANNET20_NYU40_IDS)
    lut = ls.nyu40_to_class
    for cls, nyu in enumerate(SCANNET20_NYU40_IDS):
        assert lut[nyu] == cls
    others = [i for i in range(256) if i not in SCANNET20_NYU40_IDS]
    assert np.all(lut[others] == 255)
    assert ls.class_names[14] == "refrigerator" and ls.class_names[19] == "otherfurniture"
    assert ls.colors.shape == (20, 3) and ls.colors.dtype == np.uint8


def test_nyu40_definition():
    ls = load_label_set("nyu40")
    assert ls.num_classes == 40 and ls.class_names == list(NYU40_NAMES)
    assert ls.nyu40_to_class[1] == 0 and ls.nyu40_to_class[40] == 39 and ls.nyu40_to_class[0] == 255


def test_dict_round_trip_and_keys():
    ls = load_label_set("scannet20")
    d = ls.to_dict()
    assert {"name", "class_names", "colors", "ignore_index"} <= set(d)
    assert isinstance(d["colors"][0], list) and len(d["colors"][0]) == 3
    back = LabelSet.from_dict(d)
    assert back.name == ls.name and back.class_names == ls.class_names
    assert np.array_equal(back.colors, ls.colors) and back.nyu40_ids == ls.nyu40_ids
    with pytest.raises(ValueError, match="class_names"):
        LabelSet.from_dict({"name": "x", "colors": [[0, 0, 0]]})


def test_load_by_path_and_unknown_name(tmp_path):
    ls = load_label_set(REPO / "config" / "label_sets" / "scannet20.yaml")
    assert ls.name == "scannet20"
    with pytest.raises(FileNotFoundError, match="no label set 'nope'"):
        load_label_set("nope")


def test_colorize():
    ls = load_label_set("scannet20")
    img = ls.colorize(np.array([[0, 1], [255, 19]], np.uint8))
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == tuple(ls.colors[0]) and tuple(img[1, 0]) == (0, 0, 0)


def test_colorize_ids_is_the_one_label_colouring():
    # the node colours renders from the checkpoint's label-set dict (lists of 0-255 values), the demo from
    # LabelInfo colours (floats * 255): one function for both; 255 and ids without a colour -> ignore colour
    from sray_ros.data.label_sets import IGNORE_INDEX, colorize_ids

    colors = [[10, 20, 30], [40.4, 50.6, 60.0]]
    img = colorize_ids(np.array([[0, 1, 2, IGNORE_INDEX]], np.uint8), colors, ignore_color=(1, 2, 3))
    assert img.tolist() == [[[10, 20, 30], [40, 51, 60], [1, 2, 3], [1, 2, 3]]]
    assert colorize_ids(np.array([[-1, 1, 300]]), colors).tolist() == [[[0, 0, 0], [40, 51, 60], [0, 0, 0]]]
    ls = load_label_set("scannet20")
    labels = np.array([[0, 19, 255]], np.uint8)
    assert np.array_equal(ls.colorize(labels), colorize_ids(labels, ls.to_dict()["colors"]))


# hand-picked raw ScanNet categories -> expected ScanNet-20 class name (None = ignore)
HAND_PICKED = {
    "wall": "wall", "floor": "floor", "kitchen cabinets": "cabinet", "file cabinet": "cabinet", "bed": "bed",
    "chair": "chair", "armchair": "chair", "office chair": "chair", "couch": "sofa", "sofa chair": "chair",
    "coffee table": "table", "table": "table", "door": "door", "window": "window", "bookshelf": "bookshelf",
    "picture": "picture", "kitchen counter": "counter", "desk": "desk", "curtain": "curtain",
    "refrigerator": "refrigerator", "shower curtain": "shower curtain", "toilet": "toilet", "sink": "sink",
    "bathtub": "bathtub", "wardrobe": "otherfurniture", "washing machine": "otherfurniture",
    "ceiling": None, "lamp": None, "pillow": None, "tv": None, "plant": None, "towel": None, "stove": None,
    "mirror": None, "nightstand": None, "whiteboard": None, "box": None,
}


def test_scannet20_from_real_tsv(tsv):
    import csv

    ls = load_label_set("scannet20")
    lut = raw_to_class_lut(tsv, ls)
    rows = {r["raw_category"]: r for r in csv.DictReader(open(tsv, encoding="utf-8"), delimiter="\t")}
    for raw, expected in HAND_PICKED.items():
        assert raw in rows, f"{raw!r} not in the real tsv"
        raw_id = int(rows[raw]["id"])
        got = lut[raw_id]
        want = 255 if expected is None else ls.class_names.index(expected)
        assert got == want, f"{raw!r} (id {raw_id}): got class {got}, want {expected}"
        assert scannet_category_to_nyu40(tsv, raw) == int(rows[raw]["nyu40id"])
    assert lut[0] == 255  # unannotated
    assert scannet_raw_to_nyu40(tsv)[60000] == 0


def test_synthetic_label_table_is_identity(tmp_path):
    p = tmp_path / "scannetv2-labels.combined.tsv"
    write_nyu40_label_table(p)
    lut = scannet_raw_to_nyu40(p)
    assert np.array_equal(lut[1:41], np.arange(1, 41))
    assert lut[0] == 0 and lut[41] == 0
