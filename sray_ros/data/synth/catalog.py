"""Furniture catalogue of the Debian ``sweethome3d-furniture`` package, mapped to NYU40 classes.

Each ``.sh3f`` file under ``/usr/share/sweethome3d/furniture/`` is a zip holding OBJ models and a
``PluginFurnitureCatalog.properties`` (Java properties, Latin-1, ``key#<n>=value``) that gives every
model a name, category, model path and real size in centimetres (``width`` along model x, ``height``
along model y = up, ``depth`` along model z; the model's front faces +z).

Every usable model gets a *role* (what it is in a room: ``bed``, ``nightstand``, ``dining_table``,
...) from an ordered list of name rules; the role fixes its NYU40 class (following ScanNet's own
``scannetv2-labels.combined.tsv`` choices, e.g. wardrobe -> otherfurniture, stool -> otherprop) and
how it is placed. Models that match no rule (vehicles, people, outdoor things, switches) are not used.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


SH3D_FURNITURE_DIR = Path("/usr/share/sweethome3d/furniture")

# role -> (NYU40 id, placement). Placements:
#   wall     on the floor, back against a wall, facing into the room
#   wall_up  mounted on a wall at an elevation (pictures, upper cabinets, mirrors, TVs)
#   opening  door / window: flush with a wall, door on the floor, window at sill height
#   center   free-standing on the floor away from walls
#   near     next to a table / desk (chairs), facing it
#   top      on the top surface of a placed table / desk / cabinet
#   flat     floor covering (rugs, bath mats): may lie under furniture
ROLES: dict[str, tuple[int, str]] = {
    "door": (8, "opening"),
    "window": (9, "opening"),
    "bed": (4, "wall"),
    "nightstand": (32, "wall"),
    "wardrobe": (39, "wall"),
    "dresser": (17, "wall"),
    "cabinet": (3, "wall"),
    "kitchen_cabinet": (3, "wall"),
    "upper_cabinet": (3, "wall_up"),
    "bookshelf": (10, "wall"),
    "shelves": (15, "wall"),
    "sofa": (6, "wall"),
    "armchair": (5, "wall"),
    "chair": (5, "near"),
    "stool": (40, "near"),
    "dining_table": (7, "center"),
    "coffee_table": (7, "center"),
    "desk": (14, "wall"),
    "counter": (12, "wall"),
    "refrigerator": (24, "wall"),
    "stove": (38, "wall"),
    "washing_machine": (39, "wall"),
    "tv_stand": (39, "wall"),
    "television": (25, "top"),
    "wall_tv": (25, "wall_up"),
    "toilet": (33, "wall"),
    "sink": (34, "wall"),
    "wall_sink": (34, "wall_up"),
    "bathtub": (36, "wall"),
    "shower_curtain": (28, "wall"),
    "curtain": (16, "wall"),
    "picture": (11, "wall_up"),
    "mirror": (19, "wall_up"),
    "whiteboard": (30, "wall_up"),
    "towel": (27, "wall_up"),
    "lamp": (35, "wall"),
    "table_lamp": (35, "top"),
    "plant": (40, "wall"),
    "radiator": (39, "wall_up"),
    "otherfurniture": (39, "wall"),
    "prop": (40, "top"),
    "box": (29, "wall"),
    "rug": (20, "flat"),
    "pillow": (18, "top"),
    "books": (23, "top"),
    "clothes": (21, "wall"),
}

# Ordered (regex on the lower-case model name, role); first match wins. Names not matched are unused.
NAME_RULES: list[tuple[str, str]] = [
    (r"^(exterior door|door|double door.*|glass door)$", "door"),
    (r"(window blind|window shutter|garage|elevator|escalator)", ""),
    (r"window", "window"),
    (r"^shower curtain$", "shower_curtain"),
    (r"^curtain$", "curtain"),
    (r"(bedside table|night ?stand)", "nightstand"),
    (r"(changing table|air mattress|sleeping bag|hospital|potty)", ""),
    (r"(^bed$|bunk bed|captain's bed|child bed|iron bed|day bed|mezzanine bed|^futon$|baby bed|^crib$)", "bed"),
    (r"(wardrobe|clothes rack)", "wardrobe"),
    (r"(dresser|dressing table|drawers cabinet|^chest$)", "dresser"),
    (r"(upper cabinet|upper corner cabinet|upper shelves cabinet|small upper cabinet)", "upper_cabinet"),
    (r"(lower cabinet|lower corner cabinet|small lower cabinet|sink cabinet|high cabinet)", "kitchen_cabinet"),
    (r"(filing cabinet|glass door cabinet|cupboard|^cabinet$|locked locker|television cabinet)", "cabinet"),
    (r"(^vanity$|double vanity)", "cabinet"),
    (r"(full bookcase|^bookcase$)", "bookshelf"),
    (r"(^shelves$|vertical shelves)", "shelves"),
    (r"(sofa|couch)", "sofa"),
    (r"(armchair(?! ottoman)|relax chair)", "armchair"),
    (r"(wheelchair|high chair|deck chair|beach chair|child chair|children chair|teck chair|rocking)", ""),
    (r"(chair|^bench$)", "chair"),
    (r"(bar stool|^stool$)", "stool"),
    (r"(coffee table|glass table|^puff$|armchair ottoman)", "coffee_table"),
    (r"(desk table|^desk$|wooden desk)", "desk"),
    (r"(table tennis|table fan|football table|pool table|children table|technical table|trestles|folding table)", ""),
    (r"(table)", "dining_table"),
    (r"(^island$|island extension)", "counter"),
    (r"(refrigerator|fridge|chest freezer)", "refrigerator"),
    (r"(^cooker$|^stove$|large stove|^oven$|double oven|dishwasher)", "stove"),
    (r"(washing machine|dryer machine)", "washing_machine"),
    (r"(tv stand)", "tv_stand"),
    (r"(wall flat tv)", "wall_tv"),
    (r"(^tv$|tv 16:9|^screen$)", "television"),
    (r"(toilets unit|urinal|bidet)", "toilet"),
    (r"(small lavatory|washbasin)", "wall_sink"),
    (r"(^sink$|^basin$)", "sink"),
    (r"(bath$|bathtub|jacuzzi)", "bathtub"),
    (r"(^frame |wall lamp artwork)", "picture"),
    (r"(white board|whiteboard)", "whiteboard"),
    (r"(^towel$)", "towel"),
    (r"(^lamp$|pedestal vase lamp)", "lamp"),
    (r"(desk lamp|little lamp|candle)", "table_lamp"),
    (r"(plant|ficus|yucca|bamboo|bonsai|spathiphyllum|orchids|cactus|flowers|tulips|lily)", "plant"),
    (r"^radiator$", "radiator"),
    (r"(upright piano|grand piano|aquarium|safe|treadmill|fitness tower|indoor bike|dustbin|trashcan|recycling bin|clothes basket|^barrel$)", "otherfurniture"),
    (r"(cardboard box|^box$|^crate$)", "box"),
    (r"(round carpet|oriental rug|bathmat|doormat)", "rug"),
    (r"^book$", "books"),
    (r"(laptop|keyboard|phone|radio|vase|bowl|cup|mug|teapot|toaster|microwave|coffee maker|coffee machine|"
     r"blender|clock|speaker|mini stereo|printer|imac|ibook|tablet|candle|glass$|bottle|bread box|kitchen scale|"
     r"plate|tray|stapler|penbox|letter tray|dvd player|stereo amplifier|video projector|mixer|squeezer)", "prop"),
]

INDOOR_CATEGORIES = {"Living room", "Kitchen", "Bedroom", "Bathroom", "Office", "Miscellaneous", "Lights",
                     "Doors and windows"}


@dataclass(frozen=True)
class FurnitureModel:
    """One catalogue entry. Sizes in metres; ``model_path`` is inside the zip ``archive``."""

    key: str  # unique: "<archive stem>/<catalog id>"
    name: str
    category: str
    role: str
    nyu40: int
    placement: str
    archive: str
    model_path: str
    width: float  # along model x
    depth: float  # along model z (front-back)
    height: float  # along model y (up)
    elevation: float  # metres above the floor (wall-mounted things)
    top_height: float  # height of the surface other things can stand on
    model_rotation: tuple[float, ...] | None  # 3x3 row-major, applied to the raw OBJ first


def _unescape(value: str) -> str:
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value).replace("\\:", ":")


def parse_properties(text: str) -> dict[int, dict[str, str]]:
    """``key#n=value`` lines of a catalogue -> {n: {key: value}}."""
    entries: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        if "#" not in k:
            continue
        key, idx = k.rsplit("#", 1)
        if idx.isdigit():
            entries.setdefault(int(idx), {})[key.strip()] = _unescape(v.strip())
    return entries


def role_of(name: str) -> str:
    n = name.strip().lower()
    for pattern, role in NAME_RULES:
        if re.search(pattern, n):
            return role
    return ""


@lru_cache(maxsize=4)
def load_catalog(furniture_dir: str = str(SH3D_FURNITURE_DIR)) -> tuple[FurnitureModel, ...]:
    """All usable models of every ``.sh3f`` archive in ``furniture_dir``, in a stable order."""
    d = Path(furniture_dir)
    archives = sorted(d.glob("*.sh3f"))
    if not archives:
        raise FileNotFoundError(
            f"no *.sh3f furniture archives in {d}; install the Debian package sweethome3d-furniture "
            "(scripts/install_generator_deps.sh) or pass --furniture-dir")
    models: list[FurnitureModel] = []
    for arc in archives:
        with zipfile.ZipFile(arc) as zf:
            text = zf.read("PluginFurnitureCatalog.properties").decode("latin-1")
        for idx, e in sorted(parse_properties(text).items()):
            if e.get("category") not in INDOOR_CATEGORIES or "model" not in e:
                continue
            role = role_of(e.get("name", ""))
            if not role:
                continue
            is_opening = e.get("doorOrWindow", "false") == "true"
            if (role in ("door", "window")) != is_opening:
                continue
            try:
                w, dp, h = (float(e[k]) / 100.0 for k in ("width", "depth", "height"))
            except (KeyError, ValueError):
                continue
            if min(w, dp, h) <= 0.005 or max(w, dp, h) > 4.0:
                continue
            elevation = float(e.get("elevation", 0.0)) / 100.0
            top = float(e["dropOnTopElevation"]) / 100.0 if "dropOnTopElevation" in e else h
            rot = tuple(float(x) for x in e["modelRotation"].split()) if "modelRotation" in e else None
            nyu40, placement = ROLES[role]
            models.append(FurnitureModel(
                key=f"{arc.stem}/{e.get('id', idx)}", name=e.get("name", ""), category=e["category"],
                role=role, nyu40=nyu40, placement=placement, archive=str(arc),
                model_path=e["model"].lstrip("/"), width=w, depth=dp, height=h, elevation=elevation,
                top_height=min(max(top, 0.0), h), model_rotation=rot,
            ))
    return tuple(models)


def split_catalog(models: tuple[FurnitureModel, ...], seed: int = 0, test_fraction: float = 0.3
                  ) -> dict[str, tuple[FurnitureModel, ...]]:
    """Fixed, seeded partition of the models into ``train`` and ``test`` (disjoint), per role.

    Within every role a hash of ``(seed, model key)`` orders the models; the first
    ``round(test_fraction * n)`` (at least 1 when the role has 2+ models) go to test. A role with a
    single model stays in train only, so test rooms never contain a model seen in training.
    """
    by_role: dict[str, list[FurnitureModel]] = {}
    for m in models:
        by_role.setdefault(m.role, []).append(m)
    train, test = [], []
    for role in sorted(by_role):
        ms = sorted(by_role[role], key=lambda m: hashlib.sha1(f"{seed}:{m.key}".encode()).hexdigest())
        n_test = 0 if len(ms) < 2 else max(1, int(round(test_fraction * len(ms))))
        test += ms[:n_test]
        train += ms[n_test:]
    return {"train": tuple(sorted(train, key=lambda m: m.key)), "test": tuple(sorted(test, key=lambda m: m.key))}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sray_ros" / "sweethome3d"


def extract_model(model: FurnitureModel, cache_dir: Path | None = None) -> Path:
    """Extract the model's folder (OBJ + MTL + textures) from its archive once; return the OBJ path."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache_dir / Path(model.archive).stem
    obj = root / model.model_path
    done = obj.parent / ".extracted"
    if done.exists():
        return obj
    folder = model.model_path.rsplit("/", 1)[0] + "/" if "/" in model.model_path else ""
    with zipfile.ZipFile(model.archive) as zf:
        members = [n for n in zf.namelist() if n.lstrip("/").startswith(folder) and not n.endswith("/")]
        if folder == "":
            members = [model.model_path]
        for n in members:
            target = root / n.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            tmp.write_bytes(zf.read(n))
            os.replace(tmp, target)
    if not obj.exists():
        raise FileNotFoundError(f"model {model.key}: {model.model_path} not found in {model.archive}")
    done.touch()
    return obj
