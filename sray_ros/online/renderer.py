"""Renderer: owns the model the node renders with and turns a render request into label / colour / depth images.

Plain Python (no rclpy), so tests drive it directly and the node stays thin.

Model swaps are atomic: the current model lives in an immutable :class:`ModelHandle` that a render reads
once at its start, so a render in flight finishes with the weights it started with and never sees
half-updated ones (fine-tuning trains a copy). Keyframe features are encoded once per keyframe *and
model generation*: :meth:`Renderer.encode` is the keyframe buffer's ``encode_fn``; after a swap, features
from the previous generation are re-encoded once, on first use, and cached. A keyframe's label image
(if any) rides along in its encoded views as label-transfer evidence.

Label transfer (Semantic-NeRF-style fusion at render time, :mod:`sray_ros.model.label_transfer`): a labelled
keyframe's labels are first pooled along its own surfaces, as far as its estimated label noise needs
(:mod:`sray_ros.model.label_pooling`, once per keyframe). With ``use_keyframe_labels`` on, the nearest
labelled keyframes' labels are reprojected along each target ray's samples, volume-rendered into per-view
class votes and fused with S-Ray's logits as the prior: by default each keyframe's vote is weighted by its
per-class reliability, estimated from its agreement with the other keyframes at co-visible surfaces (``fusion="reliability"``,
:func:`~sray_ros.model.label_transfer.fuse_reliable`; ``"average"`` is the earlier visibility-weighted
average, :func:`~sray_ros.model.label_transfer.fuse_with_logits`); a pixel without evidence takes S-Ray's
distribution, mixed with the uniform one by a share fitted to the keyframes and reweighted by the classes the
keyframes show in the view, and the confidence is the posterior probability of the label. The geometry
sources supply the labels when any of them is labelled; otherwise the nearest labelled keyframes (up to the
number of sources) do.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sray_ros import geometry
from sray_ros.camera import Camera
from sray_ros.data.label_sets import IGNORE_INDEX, LabelSet, as_label_set
from sray_ros.data.view_selection import select_source_views
from sray_ros.model.feature_net import SourceViews
from sray_ros.model.label_pooling import LabelPoolingConfig, pool_source_labels
from sray_ros.model.label_transfer import LabelTransferConfig
from sray_ros.model.render import near_far_from_sources, render_view
from sray_ros.model.sray import SRay
from sray_ros.online.keyframes import Frame, Keyframe
from sray_ros.train.checkpoint import load_checkpoint, save_checkpoint
from sray_ros.train.config import resolve_device

# A render whose rendered surface is seen by a source in fewer than this fraction of its pixels is
# reported as barely seen (the response's message says so; those pixels are IGNORE_INDEX anyway).
MIN_SOURCE_OVERLAP = 0.5


class RenderError(RuntimeError):
    """A render request that cannot be served; the message says why (returned as the service's reason)."""


class StaleModelError(RuntimeError):
    """A swap conditioned on a model generation found another generation in use (e.g. a checkpoint was
    loaded while fine-tuning ran on the previous model)."""


@dataclass(frozen=True)
class ModelHandle:
    generation: int
    model: SRay
    label_set: LabelSet
    source: str  # checkpoint path or a description
    extra: dict[str, Any]


@dataclass(frozen=True)
class EncodedKeyframe:
    generation: int
    views: SourceViews  # m = 1


@dataclass
class RenderRequest:
    c2w: np.ndarray  # [4, 4] target optical frame in the world frame
    K: np.ndarray  # [3, 3]
    width: int
    height: int
    num_source_views: int = 0  # 0 = renderer default
    notes: tuple[str, ...] = ()  # camera_info fields interpreted or ignored, for the response message

    @classmethod
    def from_camera(cls, camera: Camera, num_source_views: int = 0) -> "RenderRequest":
        """The request for a posed :class:`~sray_ros.camera.Camera` (its notes go to the response message)."""
        if camera.c2w is None:
            raise RenderError("the target camera has no pose")
        return cls(camera.c2w, camera.K, camera.width, camera.height, int(num_source_views), camera.notes)

    @property
    def camera(self) -> Camera:
        """The target as a :class:`~sray_ros.camera.Camera` (raises CameraError for an unusable one)."""
        return Camera(self.K, self.width, self.height, self.c2w)


@dataclass
class RenderResult:
    labels: np.ndarray  # uint8 [H, W], 255 unknown
    raw_labels: np.ndarray  # uint8 [H, W], argmax everywhere (what offline evaluation scores)
    color: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W] metres (NaN where unknown geometry)
    confidence: np.ndarray  # float32 [H, W]
    known: np.ndarray  # bool [H, W]: confident label and geometry, seen by a source
    source_ids: list[int]
    render_time_s: float
    generation: int
    source_distance_m: float = float("nan")  # target camera centre to the nearest chosen source's
    source_overlap: float = float("nan")  # fraction of target pixels whose surface a chosen source sees
    coverage_warning: str = ""  # non-empty when the sources barely see the target (see source_coverage)
    # Label transfer (None / empty when no keyframe label was used): S-Ray alone, masked like ``labels`` with
    # its own confidence; coverage = share of the rendered weight with label evidence in [0, 1]; agreement =
    # max_c evidence_c / mass in [0, 1] (1 = the weighted label views agree), 0 without evidence.
    sray_labels: np.ndarray | None = None  # uint8 [H, W], 255 unknown
    label_coverage: np.ndarray | None = None  # float32 [H, W]
    label_agreement: np.ndarray | None = None  # float32 [H, W]
    label_source_ids: list[int] = field(default_factory=list)
    sampling: str = ""  # the ray sampling used: "depth_guided" or "hierarchical"


def surface_points(result: RenderResult, request: RenderRequest) -> tuple[np.ndarray, np.ndarray]:
    """The rendered surface as world points: ``(points float32 [N, 3], flat pixel indices [N])`` of the pixels
    with a known label and finite depth (:attr:`RenderResult.known`), row-major; back-projected along the target
    camera's rays (:meth:`Camera.rays`) to the rendered z-depth."""
    keep = (result.known & np.isfinite(result.depth)).reshape(-1)
    origins, dirs = request.camera.rays()
    depth = torch.from_numpy(np.nan_to_num(result.depth).astype(np.float32))
    points = (origins + dirs * depth.reshape(-1, 1)).numpy()
    flat = np.flatnonzero(keep)
    return points[flat], flat


class Renderer:
    def __init__(self, device: str = "auto", num_source_views: int = 8, confidence_threshold: float = 0.0,
                 opacity_threshold: float = 0.5, max_pixels: int = 320 * 240, chunk: int | None = None,
                 num_coarse: int | None = None, num_fine: int | None = None, default_near: float | None = None,
                 default_far: float | None = None, sampling: str = "auto", num_surface_samples: int | None = None,
                 surface_semantics: str | None = None, num_threads: int = 1, use_keyframe_labels: bool = True,
                 label_transfer: LabelTransferConfig | None = None, view_scale: int | None = None,
                 label_pooling: LabelPoolingConfig | None = LabelPoolingConfig(),
                 prior_up: tuple[float, float, float] | None = None) -> None:
        """``sampling``: ``"auto"`` (depth-guided sampling around the keyframes' fused depth when the chosen
        keyframes carry depth, hierarchical otherwise), ``"depth_guided"`` (also for RGB-only keyframes:
        around the coarse pass's depth) or ``"hierarchical"`` (``num_coarse`` + ``num_fine``).
        ``num_surface_samples`` (samples per ray around the depth) and ``surface_semantics`` (``"volume"`` or
        ``"surface"``) default to the model config's. Raises ValueError for an unknown sampling mode.

        ``num_threads``: torch intra-op threads of this process on CPU (``torch.set_num_threads``; 0 leaves
        torch's default). Default 1: the per-sample work is many small ops, and when other processes load the
        cores, OpenMP workers wait on each other. Measured on the 2-core development machine under a load
        average of ~11, one 160x120 depth-guided view (8 keyframes): 1 thread 43-45 s, 2 threads 151-192 s;
        2-thread renders were also measured 10-17x slower under load before. On an idle machine 2 threads were
        measured 1.8x faster than 1 (a hierarchical 320x240 view: 241 s vs 134 s), so a robot whose cores are
        reserved for the node may raise it.

        ``view_scale``: fast depth-guided views (:func:`sray_ros.model.render.render_guided_view`): the network
        renders every ``view_scale``-th pixel per axis, the rest is upsampled on the fused keyframe depth; None =
        the model config's (4), 1 = every pixel. Raises ValueError below 1.

        ``use_keyframe_labels``: fuse the label images of labelled keyframes into the rendered labels (module
        docstring). ``label_transfer``: how (default: ``weighting="depth"``, the source-depth visibility test,
        which falls back to untested views for keyframes without depth; it also works for label keyframes
        other than the geometry sources, which the ``"blend"`` weightings cannot: those fall back to
        ``"depth"`` for such renders). ``label_pooling``: each labelled keyframe's labels are pooled along its
        own surfaces once, when its features are encoded (:mod:`sray_ros.model.label_pooling`; as far as the
        keyframe's estimated label noise needs, nothing for clean labels); None = off.

        ``prior_up``: the world frame's up direction for the semantic prior's height cue, set on every model
        this renderer is given (:meth:`swap`); None keeps the model's (+z). Raises ValueError unless it is
        three finite numbers, not all zero."""
        from sray_ros.model.samplers import SAMPLING_MODES

        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        if surface_semantics not in (None, "volume", "surface"):
            raise ValueError(f"surface_semantics must be 'volume' or 'surface', got {surface_semantics!r}")
        if num_surface_samples is not None and int(num_surface_samples) < 2:
            raise ValueError(f"num_surface_samples must be >= 2, got {num_surface_samples}")
        if view_scale is not None and int(view_scale) < 1:
            raise ValueError(f"view_scale must be >= 1 (or None for the model's), got {view_scale}")
        self.view_scale = None if view_scale is None else int(view_scale)
        self.sampling = sampling
        self.num_surface_samples = None if num_surface_samples is None else int(num_surface_samples)
        self.surface_semantics = surface_semantics
        self.device = resolve_device(device)
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = torch's default), got {num_threads}")
        if num_threads > 0 and self.device.type == "cpu":
            torch.set_num_threads(int(num_threads))
        self.num_source_views = int(num_source_views)
        self.confidence_threshold = float(confidence_threshold)
        self.opacity_threshold = float(opacity_threshold)
        self.max_pixels = int(max_pixels)
        self.chunk = chunk  # rays per model call; None = the model code's cache-sized automatic chunks
        self.num_coarse, self.num_fine = num_coarse, num_fine
        self.default_near, self.default_far = default_near, default_far
        self.use_keyframe_labels = bool(use_keyframe_labels)
        self.label_transfer = LabelTransferConfig(weighting="depth") if label_transfer is None else label_transfer
        self.label_pooling = label_pooling
        if prior_up is not None:
            up = tuple(float(v) for v in prior_up)
            if len(up) != 3 or not all(np.isfinite(up)) or sum(v * v for v in up) < 1e-12:
                raise ValueError(f"prior_up must be three finite numbers, not all zero, got {prior_up!r}")
            prior_up = up
        self.prior_up = prior_up
        self._handle: ModelHandle | None = None
        self._generation = 0
        self._swap_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._reencoded: dict[int, EncodedKeyframe] = {}

    # -- model ------------------------------------------------------------------------------------
    @property
    def handle(self) -> ModelHandle | None:
        return self._handle

    def load(self, path: str | Path) -> ModelHandle:
        """Validate and load a checkpoint, then swap it in. On any error (raised as CheckpointError) the
        current model stays in place."""
        checkpoint = load_checkpoint(path, map_location=self.device)
        return self.swap(checkpoint.model, checkpoint.label_set, str(path), checkpoint.extra)

    def configure(self, *, num_source_views: int | None = None, confidence_threshold: float | None = None,
                  opacity_threshold: float | None = None, max_pixels: int | None = None,
                  chunk: int | None | bool = False, use_keyframe_labels: bool | None = None,
                  view_scale: int | None | bool = False) -> None:
        """Change render settings at runtime (the node's writable parameters); renders that start later use
        them. ``chunk``: rays per model call, None = automatic; ``view_scale``: None = the model's; for both the
        default False leaves it unchanged. Raises ValueError (nothing changed) for a view_scale below 1."""
        if view_scale is not False and view_scale is not None and int(view_scale) < 1:
            raise ValueError(f"view_scale must be >= 1 (or None for the model's), got {view_scale}")
        if view_scale is not False:
            self.view_scale = None if view_scale is None else int(view_scale)
        if num_source_views is not None:
            self.num_source_views = int(num_source_views)
        if confidence_threshold is not None:
            self.confidence_threshold = float(confidence_threshold)
        if opacity_threshold is not None:
            self.opacity_threshold = float(opacity_threshold)
        if max_pixels is not None:
            self.max_pixels = int(max_pixels)
        if chunk is not False:
            self.chunk = None if chunk is None else int(chunk)
        if use_keyframe_labels is not None:
            self.use_keyframe_labels = bool(use_keyframe_labels)

    def swap(self, model: SRay, label_set: LabelSet | dict[str, Any], source: str, extra: dict[str, Any] | None = None,
             if_generation: int | None = None) -> ModelHandle:
        """Make ``model`` the one renders use. With ``if_generation``, only while that model generation is
        still current: raises :class:`StaleModelError` (and keeps the current model) otherwise."""
        label_set = as_label_set(label_set)
        current = self._handle
        if current is not None and label_set.class_names != current.label_set.class_names:
            raise ValueError(f"{source}: label set '{label_set.name}' differs from the one in use "
                             f"('{current.label_set.name}'); restart the node to change label sets")
        if self.prior_up is not None and getattr(model.cfg, "semantic_prior", "none") != "none":
            model.cfg.prior_up = self.prior_up  # read when keyframes are encoded (the prior's height cue)
        model = model.to(self.device).eval()
        with self._swap_lock:
            if if_generation is not None and self._generation != if_generation:
                raise StaleModelError(f"model generation {if_generation} was replaced by generation "
                                      f"{self._generation} ({self._handle.source if self._handle else 'none'})")
            self._generation += 1
            handle = ModelHandle(self._generation, model, label_set, source, dict(extra or {}))
            self._handle = handle
        with self._cache_lock:
            self._reencoded.clear()
        return handle

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        handle = self.require_model()
        return save_checkpoint(path, handle.model, handle.label_set.to_dict(), {**handle.extra, **(extra or {})})

    def require_model(self) -> ModelHandle:
        handle = self._handle
        if handle is None:
            raise RenderError("no model loaded: set the 'checkpoint' parameter or call ~/load_checkpoint")
        return handle

    # -- keyframe features --------------------------------------------------------------------------
    @torch.no_grad()
    def _encode_with(self, handle: ModelHandle, frame: Frame, previous: SourceViews | None = None) -> EncodedKeyframe:
        """The keyframe's features with ``handle``'s weights. Its labels are pooled once: with ``previous``
        (the same keyframe encoded by an earlier model generation) the pooled labels are taken from there,
        since pooling reads only the keyframe's own colour, depth and labels, not the weights."""
        image = torch.from_numpy(np.array(frame.rgb)).to(self.device).permute(2, 0, 1).float().div_(255.0)
        K = torch.from_numpy(np.asarray(frame.K, np.float32)).to(self.device)
        c2w = torch.from_numpy(np.asarray(frame.c2w, np.float32)).to(self.device)
        depth = None if frame.depth is None else torch.from_numpy(np.array(frame.depth)).to(self.device)
        labels = None if frame.labels is None else torch.from_numpy(np.array(frame.labels, np.uint8)).to(self.device)
        views = handle.model.encode_sources(image, K, c2w, depth, labels)
        if labels is not None and frame.label_confidence is not None:  # weights the label pixels' votes
            confidence = torch.from_numpy(np.array(frame.label_confidence, np.float32)).to(self.device)
            views = replace(views, label_confidence=confidence[None])
        if labels is not None and self.label_pooling is not None:  # once per keyframe, cached with its features
            if previous is not None and previous.labels is not None:
                views = replace(views, labels=previous.labels.to(self.device),
                                label_confidence=None if previous.label_confidence is None
                                else previous.label_confidence.to(self.device))
            else:
                views = pool_source_labels(views, handle.label_set.num_classes, self.label_pooling)
        return EncodedKeyframe(handle.generation, views)

    def encode(self, frame: Frame) -> EncodedKeyframe | None:
        """``encode_fn`` of the keyframe buffer: features with the current weights (None without a model;
        such keyframes are encoded on first use once a model is loaded)."""
        handle = self._handle
        return None if handle is None else self._encode_with(handle, frame)

    def _features(self, handle: ModelHandle, keyframe: Keyframe) -> SourceViews:
        cached = keyframe.features
        if isinstance(cached, EncodedKeyframe) and cached.generation == handle.generation:
            return cached.views
        with self._cache_lock:
            hit = self._reencoded.get(keyframe.id)
        if hit is not None and hit.generation == handle.generation:
            return hit.views
        previous = cached if isinstance(cached, EncodedKeyframe) else hit
        encoded = self._encode_with(handle, keyframe.frame, None if previous is None else previous.views)
        with self._cache_lock:
            if self._handle is handle:
                self._reencoded[keyframe.id] = encoded
        return encoded.views

    def stored_labels(self, keyframe: Keyframe) -> np.ndarray | None:
        """The labels renders use for ``keyframe`` (pooled once when it was encoded, :mod:`sray_ros.model.
        label_pooling`), ``uint8 [H, W]`` with 255 where it gives no label (unknown, or confidence 0); None for a
        keyframe without labels. Fine-tuning trains on these, so the labels are pooled once, not per job.
        Raises :class:`RenderError` without a model."""
        if keyframe.frame.labels is None:
            return None
        views = self._features(self.require_model(), keyframe)
        if views.labels is None:
            return None
        labels = views.labels[0].long()
        if views.label_confidence is not None:
            labels = torch.where(views.label_confidence[0] > 0, labels, torch.full_like(labels, IGNORE_INDEX))
        return labels.to(torch.uint8).cpu().numpy()

    def forget(self, live_ids: set[int]) -> None:
        """Drop re-encoded features of keyframes that left the buffer."""
        with self._cache_lock:
            for kf_id in [k for k in self._reencoded if k not in live_ids]:
                del self._reencoded[kf_id]

    # -- rendering ----------------------------------------------------------------------------------
    def select_sources(self, keyframes: tuple[Keyframe, ...], c2w: np.ndarray, num_views: int) -> list[Keyframe]:
        poses = np.stack([kf.c2w for kf in keyframes]).astype(np.float64)
        order = select_source_views(np.asarray(c2w, np.float64), poses, num_views)
        return [keyframes[int(i)] for i in order]

    def validate(self, request: RenderRequest) -> None:
        if request.width <= 0 or request.height <= 0:
            raise RenderError(f"render size must be positive, got {request.width}x{request.height}")
        if request.width * request.height > self.max_pixels:
            raise RenderError(f"requested {request.width}x{request.height} = {request.width * request.height} pixels "
                              f"exceeds max_render_pixels={self.max_pixels}")
        if not geometry.is_finite_pose(request.c2w):
            raise RenderError("target pose is not a finite rigid transform")
        problem = geometry.intrinsics_problem(request.K)
        if problem is not None:
            raise RenderError(f"camera_info: {problem}")

    @staticmethod
    def _seen_by_any(points: torch.Tensor, sources: SourceViews) -> torch.Tensor:
        """[P] bool: the world point projects inside at least one source image, in front of its camera."""
        _, _, valid = geometry.project_with_validity(points[None], sources.K, sources.w2c, sources.height,
                                                     sources.width)
        return valid.any(0)

    @staticmethod
    def source_coverage(seen: np.ndarray, target_c2w: np.ndarray, chosen: list[Keyframe]) -> tuple[float, float, str]:
        """How well the chosen sources cover a render: ``(source_distance_m, source_overlap, warning)``.

        ``source_distance_m``: distance in metres from the target camera centre to the nearest source's.
        ``source_overlap``: fraction of target pixels (``seen``, ``bool [H, W]``: the rendered surface
        point projects into at least one source, in front of it) that the sources see. ``warning`` is
        non-empty when the overlap is below ``MIN_SOURCE_OVERLAP``: the render is mostly unknown (255).
        """
        centres = np.stack([np.asarray(kf.c2w, np.float64)[:3, 3] for kf in chosen])
        distance = float(np.linalg.norm(centres - np.asarray(target_c2w, np.float64)[:3, 3], axis=1).min())
        overlap = float(np.mean(seen)) if seen.size else 0.0
        warning = ""
        if overlap < MIN_SOURCE_OVERLAP:
            warning = (f"the source keyframes barely see the target: {100 * overlap:.0f} % of its pixels are seen by a "
                       f"source (nearest source {distance:.2f} m away); unseen pixels are unknown (255). Move the "
                       f"target towards where the robot has been or collect keyframes there")
        return distance, overlap, warning

    @torch.no_grad()
    def render(self, keyframes: tuple[Keyframe, ...], request: RenderRequest) -> RenderResult:
        start = time.perf_counter()
        handle = self.require_model()
        if not keyframes:
            raise RenderError("keyframe buffer is empty: no keyframes received yet, nothing to render from")
        self.validate(request)
        m = request.num_source_views or self.num_source_views
        chosen = self.select_sources(keyframes, request.c2w, max(1, m))
        sources = SourceViews.cat([self._features(handle, kf) for kf in chosen])
        if sources.depths is not None and not bool(geometry.valid_depth(sources.depths).any()):
            sources = replace(sources, depths=None)
        label_sources, label_chosen, transfer = self._label_views(handle, keyframes, chosen, sources, request.c2w)
        if sources.labels is not None and transfer is None:
            sources = replace(sources, labels=None, label_confidence=None)
        model = handle.model
        near, far = near_far_from_sources(sources, self.default_near or model.cfg.default_near,
                                          self.default_far or model.cfg.default_far)
        K = torch.from_numpy(np.asarray(request.K, np.float32))
        c2w = torch.from_numpy(np.asarray(request.c2w, np.float32))
        # No keyframe overlapping the view: probe a coarse grid of rays at a few depths.
        probe_uv = geometry.pixel_grid(6, 8).mul(torch.tensor([request.width / 8, request.height / 6])).add(
            torch.tensor([request.width / 16, request.height / 12]))
        o, d = geometry.generate_rays(K, c2w, probe_uv)
        probe = torch.cat([o + d * t for t in np.linspace(near, far, 5)], 0).to(sources.device)
        if not bool(self._seen_by_any(probe, sources).any()):
            raise RenderError("no keyframe overlaps the requested view (no source camera sees it); move the "
                              "target pose towards where the robot has been")
        view = render_view(model, sources, K, c2w, request.height, request.width, near=near, far=far,
                           chunk=self.chunk, num_coarse=self.num_coarse, num_fine=self.num_fine,
                           sampling=self.sampling, num_surface_samples=self.num_surface_samples,
                           surface_semantics=self.surface_semantics, label_transfer=transfer,
                           label_sources=label_sources, view_scale=self.view_scale)
        depth = view.depth.float()
        _, rays_d = request.camera.rays(device=depth.device)
        points = c2w[:3, 3].to(depth.device) + rays_d * depth.reshape(-1, 1)
        seen = self._seen_by_any(points, sources).view(request.height, request.width)
        known = seen & (view.acc >= self.opacity_threshold) & (view.confidence >= self.confidence_threshold)
        raw_labels = view.labels.to(torch.uint8)
        labels = raw_labels.clone()
        labels[~known] = IGNORE_INDEX
        depth_out = depth.clone()
        depth_out[~(seen & (view.acc >= self.opacity_threshold))] = float("nan")
        color = (view.rgb.clamp(0, 1) * 255).round().to(torch.uint8)
        coverage = self.source_coverage(seen.cpu().numpy(), request.c2w, chosen)
        result = RenderResult(labels.cpu().numpy(), raw_labels.cpu().numpy(), color.cpu().numpy(),
                              depth_out.cpu().numpy(), view.confidence.float().cpu().numpy(), known.cpu().numpy(),
                              [kf.id for kf in chosen], time.perf_counter() - start, handle.generation, *coverage,
                              sampling=view.sampling)
        if view.sray_labels is not None:
            sray_known = seen & (view.acc >= self.opacity_threshold) & (view.sray_confidence >= self.confidence_threshold)
            sray = view.sray_labels.to(torch.uint8)
            sray[~sray_known] = IGNORE_INDEX
            result.sray_labels = sray.cpu().numpy()
            result.label_coverage = view.coverage.float().cpu().numpy()
            result.label_agreement = torch.where(view.coverage > 0, view.agreement.float(),
                                                 torch.zeros_like(view.agreement.float())).cpu().numpy()
            result.label_source_ids = [kf.id for kf in label_chosen]
        return result

    def _label_views(self, handle: ModelHandle, keyframes: tuple[Keyframe, ...], chosen: list[Keyframe],
                     sources: SourceViews, c2w: np.ndarray
                     ) -> tuple[SourceViews | None, list[Keyframe], LabelTransferConfig | None]:
        """Label evidence of a render: ``(label_sources, label keyframes, transfer config)``.

        ``(None, [], None)`` when label transfer is off or no keyframe is labelled; ``(None, labelled chosen
        sources, cfg)`` when a geometry source is labelled (its views' blend weights can be used); else the
        nearest labelled keyframes (as many as there are geometry sources) as separate label views, with a
        ``"blend"`` weighting replaced by ``"depth"`` (blend weights exist only for the geometry sources)."""
        if not self.use_keyframe_labels:
            return None, [], None
        cfg = self.label_transfer
        if sources.labels is not None:
            return None, [kf for kf in chosen if kf.frame.labels is not None], cfg
        labelled = tuple(kf for kf in keyframes if kf.frame.labels is not None)
        if not labelled:
            return None, [], None
        label_chosen = self.select_sources(labelled, c2w, min(len(chosen), len(labelled)))
        views = SourceViews.cat([self._features(handle, kf) for kf in label_chosen])
        if views.depths is not None and not bool(geometry.valid_depth(views.depths).any()):
            views = replace(views, depths=None)
        if cfg.uses_blend:
            cfg = replace(cfg, weighting="depth")
        return views, label_chosen, cfg
