"""Label maps (segmenter ids -> the node's classes): exactly the listed ids convert, listed-but-unmapped
source classes become 255, ids the map does not know become 255 and are counted; the shipped maps load
against ScanNet-20 and hold the published class lists (ADE20K-150, COCO-panoptic-133, NYU40)."""

import os
import sys

import numpy as np
import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sray_ros.data.label_map import MAPS_DIR, load_label_map  # noqa: E402
from sray_ros.data.label_sets import load_label_set  # noqa: E402

SCANNET = load_label_set("scannet20").class_names


def test_a_map_converts_exactly_the_listed_ids_and_counts_the_rest(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"source_classes": {0: "wall", 1: "sky", 2: "desk", 7: "bed"},
                                    "map": {"wall": "wall", "desk": "desk", 7: "bed"}}))
    lm = load_label_map(str(path), SCANNET)
    ids = np.array([[0, 1, 2, 7], [3, 300, 0, 7]], np.uint16)
    out = lm.apply(ids)
    expected = np.array([[0, 255, SCANNET.index("desk"), SCANNET.index("bed")], [255, 255, 0, SCANNET.index("bed")]])
    assert np.array_equal(out.labels, expected)
    assert out.unknown_ids == 2 and out.unknown_values == [3, 300]  # sky is known (listed), just unmapped
    assert out.labels.dtype == np.uint8
    # 255 is unknown on the wire already: stays 255, not counted
    assert lm.apply(np.array([[255, 3]], np.uint16)).unknown_ids == 1
    assert lm.apply(np.array([[255]])).labels[0, 0] == 255


@pytest.mark.parametrize("content, match", [
    ({"source_classes": {0: "a"}, "map": {"b": "wall"}}, "not one of its source_classes"),
    ({"source_classes": {0: "a"}, "map": {"a": "spaceship"}}, "not a class of the label set"),
    ({"source_classes": {-1: "a"}, "map": {}}, "integer in"),
    ({"map": {}}, "needs mappings"),
    ({"source_classes": {0: "a"}, "map": {}, "target_label_set": "nyu40"}, "maps to label set"),
])
def test_a_bad_map_is_a_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ValueError, match=match):
        load_label_map(str(path), SCANNET, "scannet20")


def test_an_unknown_map_name_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="ade20k150_to_scannet20"):
        load_label_map("pascal_to_scannet", SCANNET)


def test_shipped_maps_hold_the_published_class_lists_and_map_to_scannet20():
    ade = load_label_map("ade20k150_to_scannet20", SCANNET, "scannet20")
    coco = load_label_map("coco_panoptic133_to_scannet20", SCANNET, "scannet20")
    nyu = load_label_map("nyu40_to_scannet20", SCANNET, "scannet20")
    assert ade.known.sum() == 150 and ade.known[:150].all()
    assert coco.known.sum() == 133 and coco.known[:133].all()
    assert nyu.known.sum() == 40 and nyu.known[1:41].all() and not nyu.known[0]
    src = {n: yaml.safe_load((MAPS_DIR / f"{n}.yaml").read_text())["source_classes"]
           for n in ("ade20k150_to_scannet20", "coco_panoptic133_to_scannet20")}
    # spot checks against the published orders (mmsegmentation ADE20KDataset; detectron2 COCO_CATEGORIES)
    assert [src["ade20k150_to_scannet20"][i] for i in (0, 3, 8, 14, 15, 149)] == \
        ["wall", "floor", "windowpane", "door", "table", "flag"]
    assert [src["coco_panoptic133_to_scannet20"][i] for i in (0, 56, 57, 60, 79, 80, 132)] == \
        ["person", "chair", "couch", "dining table", "toothbrush", "banner", "rug-merged"]
    idx = SCANNET.index
    assert ade.lut[8] == idx("window") and ade.lut[22] == idx("picture") and ade.lut[2] == 255  # sky: unknown
    assert coco.lut[57] == idx("sofa") and coco.lut[0] == 255  # person: not a ScanNet-20 class
    # NYU40 -> ScanNet-20 is the ScanNet benchmark's: the 20 ids keep their class, the other 20 are unknown
    nyu_ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
    assert nyu.lut[nyu_ids].tolist() == list(range(20))
    assert (nyu.lut[[i for i in range(1, 41) if i not in nyu_ids]] == 255).all() and nyu.lut[0] == 255
