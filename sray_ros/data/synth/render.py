"""Offline rendering of a :class:`RoomLayout` with pyrender + trimesh over EGL (Mesa llvmpipe, no GPU).

Per view we render colour + z-depth (one pass) and a label pass (``RenderFlags.SEG``, flat colours
per node, no lighting). Labels are read back from the red channel of the segmentation image (the
NYU40 id of the node's object); green and blue hold a scrambled copy of it, so a pixel whose colour
is not an exact node colour (edge blending would show up this way; none was measured) is set to 0
(unannotated) instead of being read as a wrong class.

Camera conventions: poses are OpenCV camera-to-world (``sray_ros.geometry``); pyrender uses the
OpenGL camera frame, so its pose is ``c2w @ diag(1, -1, -1, 1)``. pyrender's ``IntrinsicsCamera``
maps a camera point to window coordinates ``fx X/Z + cx`` where the window's pixel *centres* sit at
``j + 0.5``; with our integer-centre convention we therefore hand it ``cx + 0.5`` and ``cy + 0.5``.

Appearance randomisation (:class:`AppearanceConfig`, opt-in; the benchmark rooms are rendered without
it): every catalogue-model instance gets its own copy of its materials with a hue / saturation / value
jitter, sometimes a colour tint, sometimes a procedural texture instead of its own; lights and
exposure vary per room. It draws only from its own random generator and changes colours only: no
geometry, no alpha (so no draw order), hence depth and labels are those of the unrandomised room.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pyrender  # noqa: E402
import trimesh  # noqa: E402

from sray_ros.data.synth import textures  # noqa: E402
from sray_ros.data.synth.catalog import FurnitureModel, extract_model  # noqa: E402
from sray_ros.data.synth.layout import WALL_T, Item, RoomLayout  # noqa: E402

_GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])
_MODEL_CACHE: dict[str, pyrender.Mesh] = {}


def _seg_color(label: int) -> tuple[int, int, int]:
    # red = the NYU40 id; green/blue = a scrambled copy, so a blend of two ids cannot pass as a third
    return int(label), int(_SEG_CHECK[label, 0]), int(_SEG_CHECK[label, 1])


_SEG_CHECK = np.stack([(np.arange(256) * 97 + 31) % 256, 255 - np.arange(256)], 1).astype(np.uint8)


def _yaw_pose(center: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    pose = np.eye(4)
    pose[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    pose[:3, 3] = center
    return pose


def _texture(img: np.ndarray) -> pyrender.Texture:
    return pyrender.Texture(source=img, source_channels="RGB",
                            sampler=pyrender.Sampler(wrapS=pyrender.constants.GLTF.REPEAT,
                                                     wrapT=pyrender.constants.GLTF.REPEAT))


def _material(img: np.ndarray, double_sided: bool = False, rough: float = 0.8) -> pyrender.MetallicRoughnessMaterial:
    return pyrender.MetallicRoughnessMaterial(baseColorTexture=_texture(img), metallicFactor=0.0,
                                              roughnessFactor=rough, doubleSided=double_sided)


def textured_box(lo: np.ndarray, hi: np.ndarray, img: np.ndarray, tile: float = 1.0,
                 origin: np.ndarray | None = None) -> pyrender.Mesh:
    """Axis-aligned box ``[lo, hi]`` with outward faces and UVs in metres / ``tile`` (repeating texture).

    Vertices are stored relative to ``origin`` (the node is then posed at ``origin``); UVs stay in
    the unshifted coordinates so textures continue across adjacent boxes.
    """
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    shift = np.zeros(3) if origin is None else np.asarray(origin, float)
    verts, uvs, faces = [], [], []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        for side, val in ((0, lo[axis]), (1, hi[axis])):
            quad = []
            for ca, cb in ((0, 0), (1, 0), (1, 1), (0, 1)):
                p = np.zeros(3)
                p[axis] = val
                p[a] = lo[a] if ca == 0 else hi[a]
                p[b] = lo[b] if cb == 0 else hi[b]
                quad.append(p)
                uvs.append([p[a] / tile, p[b] / tile])
            base = len(verts)
            verts += quad
            n = np.cross(quad[1] - quad[0], quad[3] - quad[0])
            outward = (1.0 if side == 1 else -1.0)
            if n[axis] * outward > 0:
                faces += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
            else:
                faces += [[base, base + 2, base + 1], [base, base + 3, base + 2]]
    verts = np.array(verts) - shift
    prim = pyrender.Primitive(positions=verts.astype(np.float32), texcoord_0=np.array(uvs, np.float32),
                              indices=np.array(faces, np.uint32), material=_material(img))
    prim.normals = trimesh.Trimesh(verts, np.array(faces), process=False).vertex_normals.astype(np.float32)
    return pyrender.Mesh(primitives=[prim])


def _sheet(width: float, height: float, depth: float, folds: int, img: np.ndarray) -> pyrender.Mesh:
    """A pleated vertical sheet (curtain) in the item frame: x across, y (-depth/2..depth/2) waves, z up."""
    n = max(8, folds * 8)
    xs = np.linspace(-0.5 * width, 0.5 * width, n + 1)
    ys = 0.5 * depth * np.sin(np.linspace(0.0, 2 * math.pi * folds, n + 1)) * 0.8
    verts, uvs = [], []
    for z in (0.0, height):
        for i, (x, y) in enumerate(zip(xs, ys)):
            verts.append([x, y, z])
            uvs.append([i / n * folds, z / max(height, 1e-3)])
    faces = []
    for i in range(n):
        a, b, c, d = i, i + 1, n + 1 + i + 1, n + 1 + i
        faces += [[a, b, c], [a, c, d]]
    mesh = trimesh.Trimesh(np.array(verts), np.array(faces), process=False)
    prim = pyrender.Primitive(positions=np.array(verts, np.float32), texcoord_0=np.array(uvs, np.float32),
                              normals=mesh.vertex_normals.astype(np.float32), indices=np.array(faces, np.uint32),
                              material=_material(img, double_sided=True))
    return pyrender.Mesh(primitives=[prim])


def load_model_mesh(model: FurnitureModel, cache_dir=None) -> pyrender.Mesh:
    """The model as a pyrender mesh in the item frame: bottom centre at the origin, z up, front -y,
    scaled to the catalogue's width x depth x height. Cached per process."""
    if model.key in _MODEL_CACHE:
        return _MODEL_CACHE[model.key]
    obj = extract_model(model, cache_dir)
    loaded = trimesh.load(str(obj), force="scene", process=False)
    meshes = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]
    if not meshes:
        raise ValueError(f"model {model.key}: {obj} has no triangles")
    # model frame (y up, front +z) -> item frame (z up, front -y): (x, y, z) -> (x, -z, y)
    to_item = np.array([[1.0, 0, 0, 0], [0, 0, -1.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])
    if model.model_rotation is not None and len(model.model_rotation) == 9:
        rot = np.eye(4)
        rot[:3, :3] = np.array(model.model_rotation).reshape(3, 3)
        to_item = to_item @ rot
    all_v = np.concatenate([m.vertices for m in meshes]) @ to_item[:3, :3].T
    lo, hi = all_v.min(0), all_v.max(0)
    ext = np.maximum(hi - lo, 1e-6)
    target = np.array([model.width, model.depth, model.height])
    scale = target / ext
    shift = -np.array([0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]), lo[2]]) * scale
    xf = np.eye(4)
    xf[:3, :3] = np.diag(scale) @ to_item[:3, :3]
    xf[:3, 3] = shift
    prims = []
    for m in meshes:
        m = m.copy()
        m.apply_transform(xf)
        if np.linalg.det(xf[:3, :3]) < 0:
            m.invert()
        try:
            pm = pyrender.Mesh.from_trimesh(m, smooth=False)
        except Exception:  # noqa: BLE001 - broken texture/material: keep the geometry, plain colour
            m.visual = trimesh.visual.ColorVisuals(m, face_colors=[180, 180, 180, 255])
            pm = pyrender.Mesh.from_trimesh(m, smooth=False)
        for p in pm.primitives:
            mat = p.material
            if mat is None:
                continue
            mat.doubleSided = True  # some catalogue models have inconsistent winding
            if p.texcoord_0 is None and getattr(mat, "baseColorTexture", None) is not None:
                # a textured material on a part without UVs: keep its mean colour instead
                tex = mat.baseColorTexture.source
                mean = np.asarray(tex, np.float32).reshape(-1, np.asarray(tex).shape[-1]).mean(0) / 255.0
                mat.baseColorTexture = None
                mat.baseColorFactor = np.concatenate([mean[:3], [1.0]]).astype(np.float32)
        prims += pm.primitives
    mesh = pyrender.Mesh(primitives=prims, name=model.key)
    _MODEL_CACHE[model.key] = mesh
    return mesh


@dataclass(frozen=True)
class AppearanceConfig:
    """Per-room appearance randomisation (domain randomisation of colours and lighting).

    Ranges are uniform unless stated; ``*_scale`` ranges are sampled log-uniformly.
    Per catalogue-model instance: hue shift (degrees) and saturation / value scales shared by all of
    the instance's materials; with ``tint_prob`` a multiplicative colour tint of strength
    ``tint_strength``; with ``swap_prob`` its opaque textured parts get one procedural texture (wood,
    fabric, stone, paint, carpet, concrete) and its opaque untextured parts one random colour.
    Per room: ambient light, every light's intensity scaled by ``light_scale``, point-light colour
    temperature, with ``extra_light_prob`` one extra point light (anywhere, 0.5 m up to the ceiling),
    and an exposure (``colour = 255 (gain c / 255) ** gamma``, ``gain = 2 ** exposure_ev``) on the image.
    """

    hue_shift_deg: float = 30.0
    saturation_scale: tuple[float, float] = (0.5, 1.6)
    value_scale: tuple[float, float] = (0.65, 1.35)
    tint_prob: float = 0.3
    tint_strength: tuple[float, float] = (0.3, 0.8)
    swap_prob: float = 0.25
    ambient: tuple[float, float] = (0.15, 0.55)
    light_scale: tuple[float, float] = (0.5, 1.8)
    light_warmth: tuple[float, float] = (0.7, 1.0)
    extra_light_prob: float = 0.4
    exposure_ev: tuple[float, float] = (-0.6, 0.6)
    gamma: tuple[float, float] = (0.85, 1.15)


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))


@dataclass(frozen=True)
class _ColourJitter:
    """One instance's colour change: HSV jitter, then an optional tint (RGB multipliers in [0, 1])."""

    hue_deg: float
    sat: float
    val: float
    tint: np.ndarray | None  # [3] or None

    @staticmethod
    def draw(rng: np.random.Generator, cfg: AppearanceConfig) -> "_ColourJitter":
        hue = float(rng.uniform(-cfg.hue_shift_deg, cfg.hue_shift_deg))
        sat, val = _log_uniform(rng, cfg.saturation_scale), _log_uniform(rng, cfg.value_scale)
        tint = None
        if rng.random() < cfg.tint_prob:
            colour = textures.random_color(rng, sat=(0.3, 0.9), val=(0.8, 1.0)) / 255.0
            a = rng.uniform(*cfg.tint_strength)
            tint = (1.0 - a) + a * colour / max(float(colour.max()), 1e-6)
        return _ColourJitter(hue, sat, val, tint)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Jitter float RGB in [0, 1], shape ``[..., 3]`` (returns float32 in [0, 1], same shape)."""
        shape = rgb.shape
        flat = np.ascontiguousarray(rgb, np.float32).reshape(-1, 1, 3)
        hsv = cv2.cvtColor(flat, cv2.COLOR_RGB2HSV)  # H in [0, 360), S and V in [0, 1]
        hsv[..., 0] = np.mod(hsv[..., 0] + self.hue_deg, 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * self.sat, 0.0, 1.0)
        hsv[..., 2] = np.clip(hsv[..., 2] * self.val, 0.0, 1.0)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if self.tint is not None:
            out = out * self.tint.astype(np.float32)
        return np.clip(out, 0.0, 1.0).reshape(shape)


_SWAP_TEXTURES = (textures.wood_planks, textures.fabric, textures.stone, textures.paint, textures.carpet,
                  textures.concrete)


def _jitter_texture(tex: pyrender.Texture, jitter: _ColourJitter) -> pyrender.Texture:
    src = np.asarray(tex.source)
    if src.ndim == 2:
        src = src[..., None]
    if src.shape[-1] < 3:  # luminance (+ alpha) texture: jitter its grey as RGB, keep its channel layout
        rgb = np.repeat(src[..., :1], 3, axis=-1).astype(np.float32) / 255.0
        grey = cv2.cvtColor(jitter.apply(rgb), cv2.COLOR_RGB2GRAY)[..., None]
        out = np.concatenate([np.round(grey * 255.0), src[..., 1:]], axis=-1).astype(np.uint8)
    else:
        rgb = jitter.apply(src[..., :3].astype(np.float32) / 255.0)
        out = np.concatenate([np.round(rgb * 255.0).astype(np.uint8), src[..., 3:]], axis=-1)
    return pyrender.Texture(name=tex.name, sampler=tex.sampler, source_channels=tex.source_channels,
                            source=out.squeeze(-1) if out.shape[-1] == 1 else out)


def _clone_material(mat: pyrender.MetallicRoughnessMaterial, **changes) -> pyrender.MetallicRoughnessMaterial:
    fields = dict(name=mat.name, normalTexture=mat.normalTexture, occlusionTexture=mat.occlusionTexture,
                  emissiveTexture=mat.emissiveTexture, emissiveFactor=mat.emissiveFactor, alphaMode=mat.alphaMode,
                  alphaCutoff=mat.alphaCutoff, doubleSided=mat.doubleSided, smooth=mat.smooth, wireframe=mat.wireframe,
                  baseColorFactor=mat.baseColorFactor, baseColorTexture=mat.baseColorTexture,
                  metallicFactor=mat.metallicFactor, roughnessFactor=mat.roughnessFactor,
                  metallicRoughnessTexture=mat.metallicRoughnessTexture)
    fields.update(changes)
    return pyrender.MetallicRoughnessMaterial(**fields)


def randomize_mesh_appearance(mesh: pyrender.Mesh, rng: np.random.Generator, cfg: AppearanceConfig
                              ) -> pyrender.Mesh:
    """A copy of ``mesh`` (one catalogue-model instance) with randomised colours; ``mesh`` is untouched.

    Geometry (positions, normals, UVs, indices) is shared; every primitive gets a new material whose
    base colour factor, base colour texture and vertex colours are jittered (:class:`AppearanceConfig`).
    Alpha values, alpha mode and texture channel layout are kept, so each primitive stays exactly as
    transparent as before: pyrender sorts transparent meshes (base-colour-factor or vertex alpha < 1;
    texture alpha does not count) after opaque ones and writes depth for both, so the depth and label
    passes are unchanged. The procedural texture swap only replaces textures of parts pyrender draws as
    opaque. Materials other than ``MetallicRoughnessMaterial`` are left as they are.
    """
    jitter = _ColourJitter.draw(rng, cfg)
    swap = rng.random() < cfg.swap_prob
    swap_img = _SWAP_TEXTURES[int(rng.integers(0, len(_SWAP_TEXTURES)))](rng) if swap else None
    swap_rgb = textures.random_color(rng, sat=(0.05, 0.8), val=(0.25, 0.95)) / 255.0 if swap else None
    swap_tex = _texture(swap_img) if swap else None
    prims = []
    for p in mesh.primitives:
        mat = p.material
        colour = p.color_0
        if isinstance(mat, pyrender.MetallicRoughnessMaterial):
            opaque = not p.is_transparent
            factor = np.asarray(mat.baseColorFactor, np.float32).copy()
            changes = {}
            if swap and opaque and mat.baseColorTexture is not None and p.texcoord_0 is not None:
                changes["baseColorTexture"] = swap_tex
            elif swap and opaque and mat.baseColorTexture is None and colour is None:
                factor[:3] = swap_rgb
            elif mat.baseColorTexture is not None:
                changes["baseColorTexture"] = _jitter_texture(mat.baseColorTexture, jitter)
            else:
                factor[:3] = jitter.apply(factor[:3])
            changes["baseColorFactor"] = factor
            mat = _clone_material(mat, **changes)
            if colour is not None:
                colour = np.asarray(colour, np.float32).copy()
                colour[:, :3] = jitter.apply(colour[:, :3])
        prims.append(pyrender.Primitive(positions=p.positions, normals=p.normals, tangents=p.tangents,
                                        texcoord_0=p.texcoord_0, texcoord_1=p.texcoord_1, color_0=colour,
                                        joints_0=p.joints_0, weights_0=p.weights_0, indices=p.indices,
                                        material=mat, mode=p.mode, targets=p.targets, poses=p.poses))
    return pyrender.Mesh(primitives=prims, name=mesh.name, is_visible=mesh.is_visible)


def _proc_mesh(item: Item) -> pyrender.Mesh:
    rng = np.random.default_rng(item.params.get("seed", 0))
    w, d, h = item.size
    if item.proc == "picture":
        return textured_box([-w / 2, -d / 2, 0], [w / 2, d / 2, h], textures.artwork(rng), tile=max(w, h) * 1.01)
    if item.proc == "mirror":
        return textured_box([-w / 2, -d / 2, 0], [w / 2, d / 2, h], textures.mirror(rng), tile=max(w, h) * 1.01)
    if item.proc == "counter":
        return textured_box([-w / 2, -d / 2, 0], [w / 2, d / 2, h], textures.stone(rng), tile=0.8)
    if item.proc in ("curtain", "shower_curtain"):
        img = textures.fabric(rng)
        if item.proc == "shower_curtain":
            img = np.clip(img.astype(np.int32) // 2 + 120, 0, 255).astype(np.uint8)
        return _sheet(w, h, d, int(rng.integers(3, 8)), img)
    raise ValueError(f"unknown procedural object {item.proc!r}")


class _OrderedScene(pyrender.Scene):
    """pyrender scene whose mesh and light nodes iterate in name order, not set (memory-address) order.

    The renderer binds lights in iteration order (the shader sums their contributions in that order,
    so the float rounding and hence +-1 colour levels depended on it) and breaks distance ties between
    opaque meshes by iteration order. Naming nodes in insertion order makes both reproducible.
    """

    @property
    def mesh_nodes(self):
        return sorted(self._mesh_nodes, key=lambda n: n.name or "")

    @property
    def light_nodes(self):
        nodes = self._point_light_nodes | self._spot_light_nodes | self._directional_light_nodes
        return sorted(nodes, key=lambda n: n.name or "")


class RoomScene:
    """A pyrender scene of one room with its label map; render views with :meth:`render`.

    ``rng`` draws the room's surfaces and lights exactly as without randomisation. With ``appearance``
    set, ``appearance_rng`` (a generator of its own, so that ``rng`` is consumed identically) draws the
    per-instance colours, light changes and exposure; :attr:`appearance_record` lists the per-room draws.
    """

    def __init__(self, layout: RoomLayout, rng: np.random.Generator, cache_dir=None,
                 appearance: AppearanceConfig | None = None, appearance_rng: np.random.Generator | None = None):
        if appearance is not None and appearance_rng is None:
            raise ValueError("appearance randomisation needs its own appearance_rng (None given)")
        self.layout = layout
        self.appearance = appearance
        app, arng = appearance, appearance_rng
        sx, sy, h = layout.size
        ambient = rng.uniform(0.25, 0.45)
        light_scale, self.gain, self.gamma = 1.0, 1.0, 1.0
        if app is not None:
            ambient = arng.uniform(*app.ambient)
            light_scale = _log_uniform(arng, app.light_scale)
            self.gain = 2.0 ** arng.uniform(*app.exposure_ev)
            self.gamma = arng.uniform(*app.gamma)
        self.scene = _OrderedScene(ambient_light=np.full(3, ambient), bg_color=np.zeros(4))
        self.labels: dict[pyrender.Node, int] = {}
        room_type = layout.room_type
        wall_fn = textures.tiles if room_type == "bathroom" and rng.random() < 0.7 else \
            textures.WALLS[int(rng.integers(0, len(textures.WALLS)))]
        floor_fn = textures.tiles if room_type in ("bathroom", "kitchen") and rng.random() < 0.6 else \
            textures.FLOORS[int(rng.integers(0, len(textures.FLOORS)))]
        wall_img, floor_img, ceil_img = wall_fn(rng), floor_fn(rng), textures.paint(rng)
        t = WALL_T
        self._add_box([-t, -t, -t], [sx + t, sy + t, 0.0], floor_img, rng.uniform(0.8, 2.0), 2)
        self._add_box([-t, -t, h], [sx + t, sy + t, h + t], ceil_img, 2.0, 22)
        wall_tile = rng.uniform(1.0, 2.5)
        for wall in layout.walls:
            p0, p1, n = wall.p0, wall.p1, wall.normal
            a = p0 - wall.direction * t
            b = p1 + wall.direction * t
            o = -n * t
            pts = np.stack([a, b, a + o, b + o])
            lo2, hi2 = pts.min(0), pts.max(0)
            self._add_box([lo2[0], lo2[1], 0.0], [hi2[0], hi2[1], h], wall_img, wall_tile, 1)
        for blk in layout.blocks:  # the solid corner block: walls all round (hidden top)
            self._add_box([blk[0][0], blk[0][1], 0.0], [blk[1][0], blk[1][1], h], wall_img, wall_tile, 1)
        self.skipped: list[str] = []
        for item in layout.items:
            try:
                mesh = _proc_mesh(item) if item.model is None else load_model_mesh(item.model, cache_dir)
                if app is not None and item.model is not None:
                    mesh = randomize_mesh_appearance(mesh, arng, app)
            except Exception as exc:  # noqa: BLE001 - one unreadable catalogue model must not stop a dataset
                warnings.warn(f"skipping {item.model.key if item.model else item.proc}: {exc}")
                self.skipped.append(item.model.key if item.model else item.proc)
                continue
            pose = _yaw_pose(item.center, item.yaw)
            if item.model is not None and item.role == "rug":
                pose[:3, :3] = pose[:3, :3] @ np.diag([1.0, 1.0, item.size[2] / max(item.model.height, 1e-6)])
            self._add(mesh, item.nyu40, pose)
        # lights: ceiling point lights + one soft directional light
        warm = rng.uniform(0.85, 1.0)
        if app is not None:
            warm = arng.uniform(*app.light_warmth)
        n_point = int(rng.integers(1, 4))
        for _ in range(n_point):
            pos = np.eye(4)
            pos[:3, 3] = [rng.uniform(0.25, 0.75) * sx, rng.uniform(0.25, 0.75) * sy, h - 0.3]
            light = pyrender.PointLight(color=np.array([1.0, warm, warm ** 2]),
                                        intensity=rng.uniform(4.0, 12.0) * light_scale)
            self.scene.add(light, pose=pos, name=f"light{len(self.scene.light_nodes):02d}")
        extra = app is not None and arng.random() < app.extra_light_prob
        if extra:  # pyrender binds at most 4 point lights; the base room has 1-3
            pos = np.eye(4)
            pos[:3, 3] = [arng.uniform(0.1, 0.9) * sx, arng.uniform(0.1, 0.9) * sy, arng.uniform(0.5, h - 0.3)]
            w2 = arng.uniform(*app.light_warmth)
            light = pyrender.PointLight(color=np.array([1.0, w2, w2 ** 2]),
                                        intensity=arng.uniform(2.0, 8.0) * light_scale)
            self.scene.add(light, pose=pos, name=f"light{len(self.scene.light_nodes):02d}")
        d = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(1.0, 2.0)])
        d /= np.linalg.norm(d)
        dl = np.eye(4)
        zc = -d  # pyrender directional lights shine along their -z axis
        xc = np.cross([0.0, 0.0, 1.0], zc)
        xc = xc / max(np.linalg.norm(xc), 1e-9) if np.linalg.norm(xc) > 1e-6 else np.array([1.0, 0, 0])
        dl[:3, :3] = np.stack([xc, np.cross(zc, xc), zc], 1)
        self.scene.add(pyrender.DirectionalLight(intensity=rng.uniform(0.8, 2.5) * light_scale), pose=dl,
                       name=f"light{len(self.scene.light_nodes):02d}")
        self.appearance_record = None if app is None else {
            "ambient": round(float(ambient), 4), "light_scale": round(float(light_scale), 4),
            "light_warmth": round(float(warm), 4), "extra_light": bool(extra), "exposure_gain": round(self.gain, 4),
            "gamma": round(float(self.gamma), 4)}
        self.seg_map = {node: _seg_color(lab) for node, lab in self.labels.items()}
        self._renderer: pyrender.OffscreenRenderer | None = None
        self._cam_node: pyrender.Node | None = None

    def _add_box(self, lo, hi, img: np.ndarray, tile: float, nyu40: int) -> None:
        # Each node posed at its own centre: pyrender draws opaque nodes sorted by the distance of
        # their origin to the camera, and equal distances would leave the order (hence which of two
        # touching surfaces wins a depth tie) to set iteration, i.e. to memory addresses.
        centre = 0.5 * (np.asarray(lo, float) + np.asarray(hi, float))
        pose = np.eye(4)
        pose[:3, 3] = centre
        self._add(textured_box(lo, hi, img, tile=tile, origin=centre), nyu40, pose)

    def _add(self, mesh: pyrender.Mesh, nyu40: int, pose: np.ndarray | None = None) -> None:
        node = self.scene.add(mesh, pose=np.eye(4) if pose is None else pose, name=f"mesh{len(self.labels):05d}")
        self.labels[node] = int(nyu40)

    def render(self, K: np.ndarray, c2w: np.ndarray, width: int, height: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB uint8 ``[H, W, 3]``, z-depth float32 metres ``[H, W]`` (0 = nothing), NYU40 ids uint8 ``[H, W]``."""
        if self._renderer is None or self._renderer.viewport_width != width or self._renderer.viewport_height != height:
            if self._renderer is not None:
                self._renderer.delete()
            self._renderer = pyrender.OffscreenRenderer(width, height)
        cam = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5,
                                        znear=0.02, zfar=50.0)
        if self._cam_node is not None:
            self.scene.remove_node(self._cam_node)
        self._cam_node = self.scene.add(cam, pose=c2w @ _GL_FROM_CV)
        color, depth = self._renderer.render(self.scene)
        seg, _ = self._renderer.render(self.scene, flags=pyrender.RenderFlags.SEG, seg_node_map=self.seg_map)
        labels = seg[..., 0].copy()
        check = _SEG_CHECK[labels]
        exact = (seg[..., 1] == check[..., 0]) & (seg[..., 2] == check[..., 1])
        labels[~exact | (depth <= 0)] = 0
        color = np.ascontiguousarray(color[..., :3])
        if self.appearance is not None:  # exposure: the camera's gain and response curve vary per room
            lin = (color.astype(np.float32) / 255.0 * self.gain).clip(0.0, 1.0) ** self.gamma
            color = np.round(lin * 255.0).astype(np.uint8)
        return color, depth.astype(np.float32), labels

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.delete()
            self._renderer = None
