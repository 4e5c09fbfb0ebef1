"""Room layouts: room shape, furniture choice per room type and collision-free placement (no rendering).

World frame: z up, floor at z = 0, metres. A room is a rectangle ``[0, size_x] x [0, size_y]``,
optionally L-shaped by a solid corner block (walls on all its room-facing sides). Furniture is
placed as axis-aligned 3D boxes (yaw in multiples of 90 deg), so "no interpenetration" is an exact
box-overlap test: two items may share a footprint only when their height ranges are disjoint
(a picture above a sofa, an upper cabinet above a counter) or when one stands *on* the other.

An item's model front faces world -y at yaw 0; yaw turns it about +z, so the front is
``(sin yaw, -cos yaw)``. Against a wall with inward normal ``n`` the yaw is ``atan2(n_x, -n_y)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sray_ros.data.synth.catalog import ROLES, FurnitureModel

WALL_T = 0.1  # wall / floor / ceiling slab thickness (m)


@dataclass
class Wall:
    """A straight wall segment; ``normal`` points into the room."""

    p0: np.ndarray  # [2]
    p1: np.ndarray  # [2]
    normal: np.ndarray  # [2]

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.p1 - self.p0))

    @property
    def direction(self) -> np.ndarray:
        return (self.p1 - self.p0) / max(self.length, 1e-9)

    @property
    def yaw(self) -> float:
        return math.atan2(self.normal[0], -self.normal[1])


@dataclass
class Item:
    """A placed object. ``model`` is None for procedural objects (``proc`` names the generator)."""

    role: str
    nyu40: int
    center: np.ndarray  # [3] centre of the bottom face (world)
    size: np.ndarray  # [3] width, depth, height in the item's own frame
    yaw: float
    model: FurnitureModel | None = None
    proc: str = ""
    params: dict = field(default_factory=dict)
    support: int = -1  # index of the item it stands on (-1: floor / wall)

    def bounds(self) -> np.ndarray:
        """World AABB ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` (yaw is a multiple of 90 deg)."""
        c, s = abs(math.cos(self.yaw)), abs(math.sin(self.yaw))
        ex = 0.5 * (self.size[0] * c + self.size[1] * s)
        ey = 0.5 * (self.size[0] * s + self.size[1] * c)
        lo = np.array([self.center[0] - ex, self.center[1] - ey, self.center[2]])
        hi = np.array([self.center[0] + ex, self.center[1] + ey, self.center[2] + self.size[2]])
        return np.stack([lo, hi])


@dataclass
class RoomLayout:
    room_type: str
    size: np.ndarray  # [3] x extent, y extent, ceiling height
    walls: list[Wall]
    blocks: list[np.ndarray]  # solid corner blocks, each [[x0, y0], [x1, y1]]
    items: list[Item]
    clearances: list[np.ndarray]  # floor boxes kept free (door swing), [[x0,y0,z0],[x1,y1,z1]]


ROOM_TYPES = ("bedroom", "living_room", "office", "kitchen", "bathroom")

# room type -> (size range x, size range y) in metres
ROOM_SIZES = {
    "bedroom": ((3.2, 5.0), (3.0, 4.5)),
    "living_room": ((4.0, 6.5), (3.6, 5.5)),
    "office": ((3.2, 6.0), (3.0, 5.0)),
    "kitchen": ((3.0, 5.0), (2.8, 4.2)),
    "bathroom": ((2.4, 3.6), (2.2, 3.2)),
}

# room type -> list of (role, min count, max count); chairs and "top" things are added around them.
RECIPES: dict[str, list[tuple[str, int, int]]] = {
    "bedroom": [("door", 1, 1), ("window", 1, 2), ("bed", 1, 1), ("nightstand", 0, 2), ("wardrobe", 0, 1),
                ("dresser", 0, 1), ("desk", 0, 1), ("bookshelf", 0, 1), ("shelves", 0, 1), ("cabinet", 0, 1),
                ("lamp", 0, 1), ("plant", 0, 1), ("rug", 0, 1), ("radiator", 0, 1), ("box", 0, 1),
                ("armchair", 0, 1), ("otherfurniture", 0, 1)],
    "living_room": [("door", 1, 1), ("window", 1, 3), ("sofa", 1, 2), ("armchair", 0, 2),
                    ("coffee_table", 1, 1), ("tv_stand", 0, 1), ("wall_tv", 0, 1), ("bookshelf", 0, 2),
                    ("shelves", 0, 1), ("cabinet", 0, 1), ("lamp", 0, 2), ("plant", 0, 2), ("rug", 0, 1),
                    ("dining_table", 0, 1), ("otherfurniture", 0, 1), ("radiator", 0, 1), ("desk", 0, 1)],
    "office": [("door", 1, 1), ("window", 1, 2), ("desk", 1, 3), ("bookshelf", 1, 2), ("cabinet", 0, 2),
               ("shelves", 0, 1), ("whiteboard", 0, 1), ("plant", 0, 2), ("lamp", 0, 1), ("box", 0, 2),
               ("otherfurniture", 0, 1), ("sofa", 0, 1), ("dining_table", 0, 1), ("radiator", 0, 1)],
    "kitchen": [("door", 1, 1), ("window", 1, 2), ("kitchen_cabinet", 2, 4), ("refrigerator", 1, 1),
                ("stove", 1, 1), ("sink", 0, 1), ("upper_cabinet", 1, 3), ("dining_table", 0, 1),
                ("counter", 0, 1), ("washing_machine", 0, 1), ("cabinet", 0, 1), ("plant", 0, 1)],
    "bathroom": [("door", 1, 1), ("window", 0, 1), ("toilet", 1, 1), ("bathtub", 0, 1), ("wall_sink", 1, 2),
                 ("cabinet", 0, 1), ("towel", 0, 2), ("rug", 0, 1), ("radiator", 0, 1),
                 ("washing_machine", 0, 1), ("otherfurniture", 0, 1)],
}

# procedural objects added per room type: (proc name, min, max)
PROC_RECIPES: dict[str, list[tuple[str, int, int]]] = {
    "bedroom": [("picture", 1, 3), ("curtain", 0, 2)],
    "living_room": [("picture", 1, 4), ("curtain", 0, 2)],
    "office": [("picture", 0, 2), ("curtain", 0, 1)],
    "kitchen": [("picture", 0, 1), ("curtain", 0, 1)],
    "bathroom": [("picture", 0, 1), ("mirror", 1, 1), ("shower_curtain", 0, 1)],
}

SURFACE_ROLES = {"dining_table", "coffee_table", "desk", "nightstand", "dresser", "cabinet", "kitchen_cabinet",
                 "counter", "tv_stand"}
MAX_TRIES = 40


def _overlap(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
    return bool(np.all(a[0] < b[1] - margin) and np.all(b[0] < a[1] - margin))


class _Placer:
    def __init__(self, layout: RoomLayout, rng: np.random.Generator):
        self.layout = layout
        self.rng = rng
        self.obstacles: list[np.ndarray] = []
        h = layout.size[2]
        for blk in layout.blocks:
            self.obstacles.append(np.array([[blk[0][0], blk[0][1], -1.0], [blk[1][0], blk[1][1], h + 1.0]]))

    def free(self, box: np.ndarray, ignore: tuple[int, ...] = ()) -> bool:
        sx, sy, h = self.layout.size
        eps = 1e-3
        if box[0, 0] < -eps or box[0, 1] < -eps or box[1, 0] > sx + eps or box[1, 1] > sy + eps:
            return False
        if box[1, 2] > h - 0.02:
            return False
        if any(_overlap(box, o) for o in self.obstacles):
            return False
        if any(_overlap(box, c) for c in self.layout.clearances):
            return False
        for i, it in enumerate(self.layout.items):
            if i in ignore or it.proc == "rug" or it.role == "rug":
                continue
            if _overlap(box, it.bounds()):
                return False
        return True

    def add(self, item: Item) -> int:
        self.layout.items.append(item)
        return len(self.layout.items) - 1

    # -- placements ---------------------------------------------------------------------------------
    def against_wall(self, role: str, size: np.ndarray, elevation: float, model=None, proc: str = "",
                     params=None, inset: float = 0.0, walls: list[int] | None = None,
                     along: float | None = None) -> int:
        """Back against a random wall at ``elevation``; ``inset`` pushes it into the wall (doors)."""
        walls_idx = walls if walls is not None else list(range(len(self.layout.walls)))
        for _ in range(MAX_TRIES):
            wi = int(self.rng.choice(walls_idx))
            wall = self.layout.walls[wi]
            if wall.length < size[0] + 0.1:
                continue
            half = 0.5 * size[0]
            t = along if along is not None else self.rng.uniform(half + 0.05, wall.length - half - 0.05)
            p = wall.p0 + wall.direction * t + wall.normal * (0.5 * size[1] - inset + 0.005)
            item = Item(role=role, nyu40=ROLES.get(role, (39, ""))[0] if model is None else model.nyu40,
                        center=np.array([p[0], p[1], elevation]), size=np.asarray(size, float), yaw=wall.yaw,
                        model=model, proc=proc, params=dict(params or {}))
            box = item.bounds()
            if inset > 0:  # doors / windows sit half inside the wall: test only their in-room part
                box[0, :2] = np.maximum(box[0, :2], 0.0)
                box[1, :2] = np.minimum(box[1, :2], self.layout.size[:2])
            if self.free(box):
                item.params["wall"] = wi
                return self.add(item)
        return -1

    def in_center(self, role: str, size: np.ndarray, model=None, margin: float = 0.6) -> int:
        sx, sy, _ = self.layout.size
        for _ in range(MAX_TRIES):
            yaw = float(self.rng.integers(0, 4)) * 0.5 * math.pi
            c = np.array([self.rng.uniform(margin, sx - margin), self.rng.uniform(margin, sy - margin), 0.0])
            item = Item(role=role, nyu40=model.nyu40 if model else ROLES[role][0], center=c,
                        size=np.asarray(size, float), yaw=yaw, model=model)
            grown = item.bounds().copy()
            grown[0, :2] -= 0.35  # keep walking space (and room for chairs) around tables
            grown[1, :2] += 0.35
            if self.free(grown):
                return self.add(item)
        return -1

    def next_to(self, support_idx: int, role: str, size: np.ndarray, model, max_count: int) -> list[int]:
        """Chairs around a table / in front of a desk, facing it."""
        sup = self.layout.items[support_idx]
        b = sup.bounds()
        cx, cy = 0.5 * (b[0, 0] + b[1, 0]), 0.5 * (b[0, 1] + b[1, 1])
        sides = []
        for nx, ny in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            if sup.params.get("wall") is not None:
                front = (math.sin(sup.yaw), -math.cos(sup.yaw))
                if (nx, ny) != (round(front[0]), round(front[1])):
                    continue
            sides.append((nx, ny))
        self.rng.shuffle(sides)
        placed = []
        for nx, ny in sides[:max_count]:
            gap = 0.03 + 0.5 * size[1]
            px = cx + nx * ((b[1, 0] - b[0, 0]) * 0.5 + gap) if nx else cx + self.rng.uniform(-0.2, 0.2)
            py = cy + ny * ((b[1, 1] - b[0, 1]) * 0.5 + gap) if ny else cy + self.rng.uniform(-0.2, 0.2)
            yaw = math.atan2(-nx, ny)  # front (sin, -cos) points back at the support
            item = Item(role=role, nyu40=model.nyu40, center=np.array([px, py, 0.0]), size=np.asarray(size, float),
                        yaw=yaw, model=model)
            if self.free(item.bounds()):
                placed.append(self.add(item))
        return placed

    def on_top(self, support_idx: int, role: str, size: np.ndarray, model) -> int:
        sup = self.layout.items[support_idx]
        b = sup.bounds()
        top_h = sup.params.get("top_height", sup.size[2])
        z = sup.center[2] + top_h
        for _ in range(12):
            yaw = sup.yaw + float(self.rng.integers(0, 4)) * 0.5 * math.pi
            item = Item(role=role, nyu40=model.nyu40, center=np.zeros(3), size=np.asarray(size, float), yaw=yaw,
                        model=model, support=support_idx)
            ib = item.bounds()
            hx, hy = 0.5 * (ib[1, 0] - ib[0, 0]), 0.5 * (ib[1, 1] - ib[0, 1])
            if b[1, 0] - b[0, 0] < 2 * hx + 0.04 or b[1, 1] - b[0, 1] < 2 * hy + 0.04:
                return -1
            item.center = np.array([self.rng.uniform(b[0, 0] + hx + 0.02, b[1, 0] - hx - 0.02),
                                    self.rng.uniform(b[0, 1] + hy + 0.02, b[1, 1] - hy - 0.02), z])
            if self.free(item.bounds(), ignore=(support_idx,)):
                return self.add(item)
        return -1


def _room_shape(room_type: str, rng: np.random.Generator) -> tuple[np.ndarray, list[Wall], list[np.ndarray]]:
    (x0, x1), (y0, y1) = ROOM_SIZES[room_type]
    sx, sy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    h = rng.uniform(2.4, 3.0)
    blocks: list[np.ndarray] = []
    if room_type != "bathroom" and rng.random() < 0.35:  # L-shape: a solid block in one corner
        bw, bd = rng.uniform(0.8, 0.4 * sx), rng.uniform(0.8, 0.4 * sy)
        corner = int(rng.integers(0, 4))
        bx0 = 0.0 if corner in (0, 3) else sx - bw
        by0 = 0.0 if corner in (0, 1) else sy - bd
        blocks.append(np.array([[bx0, by0], [bx0 + bw, by0 + bd]]))
    # Polygon (counter-clockwise) of the free floor; inward normal of edge (p0 -> p1) is its left normal.
    if blocks:
        pts = _l_polygon(sx, sy, blocks[0])
    else:
        pts = [(0.0, 0.0), (sx, 0.0), (sx, sy), (0.0, sy)]
    walls = []
    for i in range(len(pts)):
        p0, p1 = np.array(pts[i], float), np.array(pts[(i + 1) % len(pts)], float)
        d = (p1 - p0) / np.linalg.norm(p1 - p0)
        walls.append(Wall(p0=p0, p1=p1, normal=np.array([-d[1], d[0]])))
    return np.array([sx, sy, h]), walls, blocks


def _l_polygon(sx: float, sy: float, block: np.ndarray) -> list[tuple[float, float]]:
    """Counter-clockwise outline of the rectangle ``[0,sx]x[0,sy]`` minus a corner block."""
    (bx0, by0), (bx1, by1) = block
    if bx0 <= 1e-9 and by0 <= 1e-9:  # bottom-left
        return [(bx1, 0.0), (sx, 0.0), (sx, sy), (0.0, sy), (0.0, by1), (bx1, by1)]
    if by0 <= 1e-9:  # bottom-right
        return [(0.0, 0.0), (bx0, 0.0), (bx0, by1), (sx, by1), (sx, sy), (0.0, sy)]
    if bx0 <= 1e-9:  # top-left
        return [(0.0, 0.0), (sx, 0.0), (sx, sy), (bx1, sy), (bx1, by0), (0.0, by0)]
    return [(0.0, 0.0), (sx, 0.0), (sx, by0), (bx0, by0), (bx0, sy), (0.0, sy)]  # top-right


def _pick(pool: dict[str, list[FurnitureModel]], role: str, rng: np.random.Generator) -> FurnitureModel | None:
    ms = pool.get(role) or []
    return ms[int(rng.integers(0, len(ms)))] if ms else None


def _model_size(m: FurnitureModel) -> np.ndarray:
    return np.array([m.width, m.depth, m.height])


def make_layout(room_type: str, models: tuple[FurnitureModel, ...], rng: np.random.Generator) -> RoomLayout:
    """A furnished room of ``room_type`` using only ``models`` (the split's part of the catalogue)."""
    size, walls, blocks = _room_shape(room_type, rng)
    layout = RoomLayout(room_type=room_type, size=size, walls=walls, blocks=blocks, items=[], clearances=[])
    pl = _Placer(layout, rng)
    pool: dict[str, list[FurnitureModel]] = {}
    for m in models:
        pool.setdefault(m.role, []).append(m)
    chair_model = _pick(pool, "chair", rng)

    for role, lo, hi in RECIPES[room_type]:
        count = int(rng.integers(lo, hi + 1))
        for _ in range(count):
            m = _pick(pool, role, rng)
            if m is None:
                break
            sz = _model_size(m)
            if role == "door":
                idx = pl.against_wall(role, sz, 0.0, model=m, inset=0.5 * m.depth)
                if idx >= 0:  # keep the door's swing area free
                    it = layout.items[idx]
                    n = layout.walls[it.params["wall"]].normal
                    b = it.bounds().copy()
                    far = b.copy()
                    far[0, :2] = np.minimum(b[0, :2], b[0, :2] + n * 0.9)
                    far[1, :2] = np.maximum(b[1, :2], b[1, :2] + n * 0.9)
                    layout.clearances.append(far)
                continue
            if role == "window":
                elev = m.elevation if 0.3 <= m.elevation <= 1.2 else rng.uniform(0.8, 1.0)
                if elev + m.height > size[2] - 0.1:
                    elev = max(0.05, size[2] - 0.15 - m.height)
                pl.against_wall(role, sz, elev, model=m, inset=0.5 * m.depth)
                continue
            placement = ROLES[role][1]
            if placement == "center" or (role == "dining_table" and rng.random() < 0.8):
                idx = pl.in_center(role, sz, model=m)
            elif placement == "flat":
                sz = np.array([m.width, m.depth, min(m.height, 0.02)])
                idx = pl.in_center(role, sz, model=m, margin=0.3)
            elif placement == "wall_up":
                elev = m.elevation
                if role == "upper_cabinet":
                    elev = rng.uniform(1.4, 1.6)
                elif role in ("wall_tv",):
                    elev = rng.uniform(1.0, 1.4)
                elif role == "towel" and elev < 0.5:
                    elev = rng.uniform(0.9, 1.3)
                idx = pl.against_wall(role, sz, elev, model=m)
            else:
                idx = pl.against_wall(role, sz, 0.0, model=m)
            if idx < 0:
                continue
            layout.items[idx].params["top_height"] = m.top_height
            if role in ("dining_table", "desk") and chair_model is not None:
                n_ch = 1 if role == "desk" else int(rng.integers(2, 5))
                pl.next_to(idx, "chair", _model_size(chair_model), chair_model, n_ch)

    # counter tops on runs of kitchen cabinets
    for idx in range(len(layout.items)):
        it = layout.items[idx]
        if it.role == "kitchen_cabinet" and it.size[2] < 1.2:
            # the worktop overhangs 3 cm at the front only, so it never enters the wall or a neighbour
            front = np.array([math.sin(it.yaw), -math.cos(it.yaw)])
            c = it.center[:2] + 0.015 * front
            top = Item(role="counter", nyu40=12, center=np.array([c[0], c[1], it.center[2] + it.size[2]]),
                       size=np.array([it.size[0], it.size[1] + 0.03, 0.04]), yaw=it.yaw, proc="counter",
                       params={"seed": int(rng.integers(1 << 30))}, support=idx)
            if pl.free(top.bounds(), ignore=(idx,)):
                it.params["has_top"] = True  # things stand on the worktop, not on the cabinet
                layout.items.append(top)
    # things standing on surfaces: lamps, TVs, props
    for idx in range(len(layout.items)):
        it = layout.items[idx]
        if it.role not in SURFACE_ROLES or it.params.get("has_top") or (it.support >= 0 and it.proc != "counter"):
            continue
        wanted = []
        if it.role == "tv_stand":
            wanted.append("television")
        if it.role in ("nightstand", "desk") and rng.random() < 0.6:
            wanted.append("table_lamp")
        wanted += ["prop"] * int(rng.integers(0, 3))
        if it.role in ("desk", "coffee_table", "dining_table") and rng.random() < 0.3:
            wanted.append("books")
        for role in wanted:
            m = _pick(pool, role, rng)
            if m is not None and m.height < 1.0:
                pl.on_top(idx, role, _model_size(m), m)

    # procedural objects: these are generated, not catalogue models, so they appear in both splits
    for proc, lo, hi in PROC_RECIPES[room_type]:
        for _ in range(int(rng.integers(lo, hi + 1))):
            if proc == "picture":
                w, hgt = rng.uniform(0.3, 1.2), rng.uniform(0.25, 0.9)
                elev = rng.uniform(1.1, 1.7 - 0.5 * hgt)
                pl.against_wall("picture", np.array([w, 0.03, hgt]), elev, proc="picture",
                                params={"seed": int(rng.integers(1 << 30))})
            elif proc == "mirror":
                w, hgt = rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.9)
                pl.against_wall("mirror", np.array([w, 0.02, hgt]), rng.uniform(1.0, 1.3), proc="mirror",
                                params={"seed": int(rng.integers(1 << 30))})
            elif proc in ("curtain", "shower_curtain"):
                w = rng.uniform(0.8, 1.8)
                hgt = min(size[2] - 0.1, rng.uniform(1.8, 2.3)) if proc == "shower_curtain" else size[2] - 0.1
                elev = size[2] - 0.05 - hgt if proc == "curtain" else 0.15
                if proc == "shower_curtain":
                    hgt = min(hgt, size[2] - 0.25)
                pl.against_wall(proc, np.array([w, 0.12, hgt]), elev, proc=proc,
                                params={"seed": int(rng.integers(1 << 30))})
    return layout
