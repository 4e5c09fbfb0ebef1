"""Volume rendering, chunked ray rendering and whole-view rendering.

Depth convention: ray directions have camera-z = 1 (:func:`geometry.generate_rays`), so sample
parameters ``t`` are z-depths and the rendered depth is a z-depth map like a sensor's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sray_ros import geometry
from sray_ros.model.feature_net import SourceViews
from sray_ros.model.label_transfer import LabelEvidence, LabelTransferConfig, fuse_reliable, fuse_with_logits, \
    label_distribution_maps, transfer_labels
from sray_ros.model.sray import SRay, contextual_space
from sray_ros.model.surface import SurfaceConfig, SurfaceDepth, surface_from_sources
from sray_ros.model.upsample import anchor_axes, joint_weights, refine_mask, upsample


@dataclass
class RenderOutput:
    """Per-ray rendering of one pass. rgb ``[R, 3]``, depth ``[R]`` (expected z-depth, sum_k w_k t_k,
    not divided by opacity), acc ``[R]`` (sum of weights), logits ``[R, K]`` or None (coarse pass at
    inference), optionally the per-sample weights/depths ``[R, N]``, and with label transfer the rendered
    label evidence ``[R, K]`` and its mass ``[R]``, and for reliability fusion each label view's votes
    ``[R, m, K]`` and mass ``[R, m]`` (:mod:`sray_ros.model.label_transfer`)."""

    rgb: Tensor
    depth: Tensor
    acc: Tensor
    logits: Tensor | None
    weights: Tensor | None = None
    depths: Tensor | None = None
    label_evidence: Tensor | None = None
    label_mass: Tensor | None = None
    label_view_votes: Tensor | None = None
    label_view_mass: Tensor | None = None


@dataclass
class RayRenderResult:
    """Coarse and fine passes of hierarchical sampling; a depth-guided render has only ``fine``
    (``coarse`` None)."""

    coarse: RenderOutput | None
    fine: RenderOutput | None

    @property
    def best(self) -> RenderOutput:
        """The fine output when there is one, else the coarse one."""
        return self.fine if self.fine is not None else self.coarse


def volume_render(sigma: Tensor, depths: Tensor, rgb: Tensor, logits: Tensor | None, ray_norm: Tensor | None = None,
                  last_delta: float = 1e10) -> RenderOutput:
    """Alpha compositing with ``alpha_k = 1 - exp(-sigma_k delta_k)``.

    sigma, depths ``[R, N]`` (depths ascending), rgb ``[R, N, 3]``, logits ``[R, N, K]``; ``delta_k`` is the
    gap to the next depth (``last_delta`` for the last sample) times the ray direction norm
    ``ray_norm [R]`` (metric length; 1 if None). Semantic logits, colour and depth share the weights.
    """
    deltas = depths[:, 1:] - depths[:, :-1]
    deltas = torch.cat([deltas, torch.full_like(depths[:, :1], last_delta)], -1)
    if ray_norm is not None:
        deltas = deltas * ray_norm[:, None]
    alpha = 1.0 - torch.exp(-sigma * deltas)
    trans = torch.cumprod(1.0 - alpha + 1e-10, dim=-1)
    trans = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], -1)
    weights = alpha * trans
    out_rgb = (weights[..., None] * rgb).sum(-2)
    out_depth = (weights * depths).sum(-1)
    acc = weights.sum(-1)
    out_logits = None if logits is None else (weights[..., None] * logits).sum(-2)
    return RenderOutput(out_rgb, out_depth, acc, out_logits, weights, depths)


def _pass(model: SRay, sources: SourceViews, rays_o: Tensor, rays_d: Tensor, depths: Tensor, fine: bool,
          semantics: bool, surface_logits: bool = False, label_maps: Tensor | None = None,
          label_transfer: LabelTransferConfig | None = None, label_sources: SourceViews | None = None) -> RenderOutput:
    """Evaluate the field at ``depths [R, N]`` along the rays and volume-render. With ``surface_logits`` the
    semantic logits are those of each ray's max-weight sample (GSNeRF's semantics at the surface) instead of
    the weighted sum. With ``label_maps`` ``[m', H*W, K]`` of ``label_sources`` (default: ``sources``) also the
    label evidence rendered with this pass's samples and weights."""
    points = rays_o[:, None, :] + rays_d[:, None, :] * depths[..., None]
    ctx = contextual_space(sources, points, rays_d)
    transfer = label_maps is not None and label_transfer is not None
    out = model.field(fine)(ctx, semantics=semantics, blend=transfer and label_transfer.uses_blend,
                            prior_weight=model.cfg.prior_weight)
    logits = None if out.logits is None else out.logits.float()
    result = volume_render(out.sigma.float(), depths, out.rgb.float(), logits, rays_d.norm(dim=-1), model.cfg.last_delta)
    if surface_logits and logits is not None:
        idx = result.weights.argmax(-1)
        result.logits = logits[torch.arange(idx.shape[0], device=idx.device), idx]
    if transfer:
        lv = sources if label_sources is None else label_sources
        ev = transfer_labels(label_maps, lv.K, lv.c2w, lv.height, lv.width, points,
                             result.weights, label_transfer, None if out.blend is None else out.blend.float(),
                             lv.depths)
        result.label_evidence, result.label_mass = ev.evidence, ev.mass
        result.label_view_votes, result.label_view_mass = ev.view_votes, ev.view_mass
    return result


def _as_ray_tensor(value: float | Tensor, like: Tensor) -> Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return t.expand(like.shape[0]) if t.dim() == 0 else t.reshape(-1)


def auto_chunk(device: torch.device, num_views: int, num_samples: int) -> int:
    """Rays per chunk. On CPU the per-entry tensors ``[R, N, m, 32..64]`` should stay cache-sized
    (~32k entries: measured 2x faster than 1024-ray chunks at 8 views x 64 samples on a 32 MiB-L3 CPU);
    on CUDA larger chunks (~2M entries) amortise kernel launches."""
    entries = 32_768 if device.type == "cpu" else 2_097_152
    return max(1, entries // max(1, num_views * num_samples))


def coarse_depth(model: SRay, sources: SourceViews, rays_o: Tensor, rays_d: Tensor, near: Tensor, far: Tensor,
                 num_coarse: int | None = None, perturb: bool = False) -> Tensor:
    """Expected z-depth ``[R]`` of the geometry-only coarse pass (no semantics), divided by its opacity and
    clamped to ``[near, far]``: the target depth where no keyframe depth is known. Detached."""
    sampler = model.cfg.hierarchical_sampler(num_coarse, 0)
    with torch.no_grad():
        out = _pass(model, sources, rays_o, rays_d, sampler.coarse(near, far, perturb), fine=False, semantics=False)
    est = out.depth / out.acc.clamp_min(1e-6)
    return torch.minimum(torch.maximum(est, near), far)


def render_rays(model: SRay, sources: SourceViews, rays_o: Tensor, rays_d: Tensor, near: float | Tensor,
                far: float | Tensor, chunk: int | None = None, num_coarse: int | None = None, num_fine: int | None = None,
                perturb: bool = False, coarse_semantics: bool | None = None, keep_weights: bool = False,
                sampling: str | None = None, target_depth: Tensor | None = None,
                target_confidence: Tensor | None = None, num_surface_samples: int | None = None,
                surface_semantics: str | None = None, label_transfer: LabelTransferConfig | None = None,
                label_sources: SourceViews | None = None) -> RayRenderResult:
    """Render any number of rays ``[R, 3]`` (origins, directions with camera-z = 1) in chunks of ``chunk``
    rays (default :func:`auto_chunk` for the fine pass size; memory is bounded by the chunk).

    ``sampling`` (default ``cfg.sampling``; see :mod:`sray_ros.model.samplers`):

    * ``"hierarchical"``: coarse samples uniform in inverse depth in ``[near, far]`` (scalars or ``[R]``),
      stratified when ``perturb``; fine samples importance-sampled from the coarse weights and, when
      ``cfg.fine_includes_coarse``, merged with the coarse ones. ``coarse_semantics`` (default: the model's
      training flag) decides whether the coarse pass also computes semantic logits; at inference it is
      skipped since only its density is needed.
    * ``"depth_guided"``: one pass of the fine field on ``num_surface_samples`` (default
      ``cfg.num_surface_samples``) samples around ``target_depth [R]`` (metres, z-depth) with band width from
      ``target_confidence [R]`` (default 1). Rays whose target depth is invalid (0 / non-finite) or not
      given take the coarse pass's expected depth (:func:`coarse_depth`) with confidence
      ``cfg.coarse_depth_confidence``. The result has ``coarse = None``. ``surface_semantics`` (default
      ``cfg.surface_semantics``): ``"volume"`` or ``"surface"`` (max-weight sample's logits).
    * ``"auto"``: depth-guided when ``target_depth`` is given, else hierarchical.

    Gradients flow when called outside ``no_grad``. Per-sample weights are returned only with ``keep_weights``.
    With ``label_transfer`` and source labels, the pass that produces the output (depth-guided, else fine,
    else coarse) also carries label evidence (``label_evidence`` ``[R, K]``, ``label_mass`` ``[R]``), rendered
    with the same samples and weights; source labels are turned into class distributions once per call.
    ``label_sources`` (e.g. the nearest *labelled* keyframes when the geometry sources have none) supply the
    labels instead of ``sources``; their views are not the geometry head's, so only the ``depth`` and
    ``uniform`` weightings apply (ValueError otherwise).
    """
    from sray_ros.model.samplers import resolve_sampling

    cfg = model.cfg
    mode = resolve_sampling(sampling or cfg.sampling, target_depth is not None)
    hier = cfg.hierarchical_sampler(num_coarse, num_fine)
    guided = cfg.depth_guided_sampler(num_surface_samples)
    surface_semantics = cfg.surface_semantics if surface_semantics is None else surface_semantics
    coarse_semantics = model.training if coarse_semantics is None else coarse_semantics
    rays_o = rays_o.to(sources.device, torch.float32)
    rays_d = rays_d.to(rays_o)
    near_t, far_t = _as_ray_tensor(near, rays_o), _as_ray_tensor(far, rays_o)
    if mode == "depth_guided":
        r = rays_o.shape[0]
        target_depth = (torch.zeros(r, device=rays_o.device) if target_depth is None
                        else target_depth.to(rays_o).reshape(-1))
        target_confidence = (torch.ones_like(target_depth) if target_confidence is None
                             else target_confidence.to(rays_o).reshape(-1))
    if chunk is None:
        n = guided.samples_per_ray if mode == "depth_guided" else hier.samples_per_ray
        chunk = auto_chunk(rays_o.device, sources.num_views, n)
    label_maps = None
    evidence_views = sources if label_sources is None else label_sources
    if label_sources is not None and label_transfer is not None and label_transfer.uses_blend:
        raise ValueError(f"weighting {label_transfer.weighting!r} uses the geometry sources' blend weights; "
                         "separate label_sources need 'depth' or 'uniform'")
    if label_transfer is not None and evidence_views.labels is not None:
        confidence = evidence_views.label_confidence
        label_maps = label_distribution_maps(evidence_views.labels.to(sources.device), cfg.num_classes,
                                             label_transfer.window,
                                             None if confidence is None else confidence.to(sources.device))
    lt = dict(label_transfer=label_transfer, label_sources=label_sources)
    coarse_parts: list[RenderOutput] = []
    fine_parts: list[RenderOutput] = []
    for start in range(0, rays_o.shape[0], chunk):
        sl = slice(start, start + chunk)
        o, d = rays_o[sl], rays_d[sl]
        coarse = fine = None
        if mode == "depth_guided":
            td, tc = target_depth[sl], target_confidence[sl]
            missing = ~geometry.valid_depth(td)
            if bool(missing.any()):
                td, tc = td.clone(), tc.clone()
                td[missing] = coarse_depth(model, sources, o[missing], d[missing], near_t[sl][missing],
                                           far_t[sl][missing], num_coarse, perturb)
                tc[missing] = cfg.coarse_depth_confidence
            depths = guided(td, tc, near_t[sl], far_t[sl], perturb=perturb)
            fine = _pass(model, sources, o, d, depths, fine=True, semantics=True,
                         surface_logits=surface_semantics == "surface", label_maps=label_maps, **lt)
        else:
            depths = hier.coarse(near_t[sl], far_t[sl], perturb=perturb)
            coarse = _pass(model, sources, o, d, depths, fine=False, semantics=coarse_semantics,
                           label_maps=label_maps if hier.num_fine == 0 else None, **lt)
            if hier.num_fine > 0:
                fine = _pass(model, sources, o, d, hier.fine(coarse.depths, coarse.weights, perturb=perturb),
                             fine=True, semantics=True, label_maps=label_maps, **lt)
        for part, parts in ((coarse, coarse_parts), (fine, fine_parts)):
            if part is not None:
                if not keep_weights:
                    part.weights = part.depths = None
                parts.append(part)
    return RayRenderResult(_cat(coarse_parts) if coarse_parts else None, _cat(fine_parts) if fine_parts else None)


def _cat(parts: list[RenderOutput]) -> RenderOutput:
    def cat(name: str) -> Tensor | None:
        vals = [getattr(p, name) for p in parts]
        return None if vals[0] is None else torch.cat(vals, 0)
    return RenderOutput(cat("rgb"), cat("depth"), cat("acc"), cat("logits"), cat("weights"), cat("depths"),
                        cat("label_evidence"), cat("label_mass"), cat("label_view_votes"), cat("label_view_mass"))


def near_far_from_sources(sources: SourceViews, default_near: float, default_far: float) -> tuple[float, float]:
    """Default depth range. With source depths: ``[0.8 * q01, 1.2 * q99]`` of their valid (> 0) depths
    (a subsampled 1st/99th percentile, near clamped to >= 0.05 m); otherwise ``(default_near, default_far)``
    (config: 0.5 m / 6 m, indoor scenes). Source depths describe the scene near the query when the source
    views are the query's neighbours, which is how the node selects them."""
    if sources.depths is None:
        return default_near, default_far
    d = sources.depths[:, ::4, ::4].reshape(-1).float()
    d = d[torch.isfinite(d) & (d > 0)]
    if d.numel() < 16:
        return default_near, default_far
    if d.numel() > 1_000_000:
        d = d[torch.randperm(d.numel(), device=d.device)[:1_000_000]]
    q = torch.quantile(d, torch.tensor([0.01, 0.99], device=d.device))
    near = max(0.05, 0.8 * float(q[0]))
    return near, max(near * 1.5, 1.2 * float(q[1]))


@dataclass
class ViewRender:
    """A rendered view: labels ``[H, W]`` long (argmax), confidence ``[H, W]`` (max softmax probability),
    rgb ``[H, W, 3]``, depth ``[H, W]`` (expected z-depth / opacity, metres), acc ``[H, W]`` (opacity);
    ``sampling`` is the mode used and ``target_depth`` ``[H, W]`` the depth depth-guided sampling sampled
    around (None for hierarchical); ``network_rays`` the rays the per-sample network rendered (anchors and
    refined pixels of a fast view, every pixel otherwise).

    With label transfer (sources carry labels), labels / confidence are the fused ones
    (``label_transfer.fusion``: :func:`~sray_ros.model.label_transfer.fuse_reliable` by default, or
    :func:`~sray_ros.model.label_transfer.fuse_with_logits`), and ``sray_labels`` (S-Ray alone),
    ``sray_confidence``, ``transfer_labels`` (evidence argmax, 255 where there is none), ``coverage`` and
    ``agreement`` ``[H, W]`` are set."""

    labels: Tensor
    confidence: Tensor
    rgb: Tensor
    depth: Tensor
    acc: Tensor
    sampling: str = "hierarchical"
    target_depth: Tensor | None = None
    network_rays: int = 0
    sray_labels: Tensor | None = None
    sray_confidence: Tensor | None = None
    transfer_labels: Tensor | None = None
    coverage: Tensor | None = None
    agreement: Tensor | None = None


def target_surface(model: SRay, sources: SourceViews, K: Tensor, c2w: Tensor, height: int, width: int,
                   near: float, far: float, surface_cfg: SurfaceConfig | None = None,
                   chunk: int | None = None) -> SurfaceDepth:
    """Target depth and confidence ``[H, W]`` for depth-guided sampling of a view.

    From the source views' depth (:func:`sray_ros.model.surface.surface_from_sources`) where they have it;
    where a large part of the view (over a quarter, e.g. RGB-only keyframes) has none, the geometry-only
    coarse pass runs at ``1 / cfg.coarse_depth_scale`` resolution and its depth is upsampled
    (nearest) into the holes with confidence ``cfg.coarse_depth_confidence``. Remaining small holes stay
    invalid (depth 0): :func:`render_rays` gives them a full-resolution coarse-pass depth.
    """
    cfg = model.cfg
    device = sources.device
    if sources.depths is not None:
        surf = surface_from_sources(sources.depths, sources.K, sources.c2w, K, c2w, height, width, surface_cfg)
    else:
        zeros = torch.zeros(height, width, device=device)
        surf = SurfaceDepth(zeros, zeros.clone(), zeros.bool())
    holes = ~surf.valid
    scale = cfg.coarse_depth_scale
    if scale > 1 and float(holes.float().mean()) > 0.25:
        h2, w2 = max(1, -(-height // scale)), max(1, -(-width // scale))
        K2 = geometry.scale_intrinsics(K, w2 / width, h2 / height)
        o, d = geometry.generate_rays(K2, c2w, geometry.pixel_grid(h2, w2, device=device))
        near_t, far_t = _as_ray_tensor(near, o), _as_ray_tensor(far, o)
        step = chunk or auto_chunk(device, sources.num_views, cfg.num_coarse)
        est = torch.cat([coarse_depth(model, sources, o[i:i + step], d[i:i + step], near_t[i:i + step],
                                      far_t[i:i + step]) for i in range(0, o.shape[0], step)])
        up = F.interpolate(est.view(1, 1, h2, w2), size=(height, width), mode="nearest").view(height, width)
        depth = torch.where(holes, up, surf.depth)
        conf = torch.where(holes, torch.full_like(up, cfg.coarse_depth_confidence), surf.confidence)
        surf = SurfaceDepth(depth, conf, geometry.valid_depth(depth))
    return surf


_RAY_FIELDS = ("rgb", "depth", "acc", "logits", "label_evidence", "label_mass", "label_view_votes", "label_view_mass")


def _scatter(parts: list[tuple[Tensor, RenderOutput]], total: int, into: RenderOutput | None = None) -> RenderOutput:
    """Per-ray outputs of ray subsets ``(indices [R_g], output)`` written into one output of ``total`` rays
    (or into ``into``, overwriting those rays)."""
    out = into or RenderOutput(None, None, None, None)
    for name in _RAY_FIELDS:
        vals = [(idx, getattr(p, name)) for idx, p in parts]
        if vals[0][1] is None:
            continue
        dst = getattr(out, name)
        if dst is None:
            dst = vals[0][1].new_zeros((total, *vals[0][1].shape[1:]))
        for idx, v in vals:
            dst[idx] = v.to(dst.dtype)
        setattr(out, name, dst)
    return out


def _guided_rays(model: SRay, sources: SourceViews, rays_o: Tensor, rays_d: Tensor, depth: Tensor, confidence: Tensor,
                 near: float, far: float, num_samples: int, confident_samples: int, threshold: float,
                 **kw) -> RenderOutput:
    """Depth-guided rendering of rays with target ``depth`` / ``confidence`` ``[R]`` and adaptive K
    (:func:`~sray_ros.model.samplers.adaptive_sample_counts`); ``kw`` go to :func:`render_rays`."""
    from sray_ros.model.samplers import adaptive_sample_counts

    groups = adaptive_sample_counts(confidence, num_samples, confident_samples, threshold)
    parts = []
    for idx, k in groups:
        sub = idx if len(groups) > 1 else slice(None)
        part = render_rays(model, sources, rays_o[sub], rays_d[sub], near, far, sampling="depth_guided",
                           target_depth=depth[sub], target_confidence=confidence[sub], num_surface_samples=k,
                           **kw).best
        if len(groups) == 1:
            return part
        parts.append((idx, part))
    return _scatter(parts, rays_o.shape[0])


def render_guided_view(model: SRay, sources: SourceViews, rays_o: Tensor, rays_d: Tensor, surf: SurfaceDepth,
                       near: float, far: float, num_samples: int, view_scale: int, confident_samples: int,
                       refine: str, **kw) -> tuple[RenderOutput, int]:
    """A depth-guided view's per-pixel output (rays ``[H*W, 3]`` in row-major pixel order, target ``surf``
    ``[H, W]``) and the number of rays the network rendered.

    ``view_scale`` 1: every pixel (adaptive K when ``confident_samples`` > 0). ``view_scale`` s > 1: the
    network renders every s-th pixel per axis; the others are upsampled with joint bilateral weights on the
    full-resolution target depth (:mod:`sray_ros.model.upsample`): colour, opacity, semantic logits and label
    evidence directly, depth as the target depth plus the upsampled residual ``rendered - target`` (so depth
    edges stay at full resolution); pixels :func:`~sray_ros.model.upsample.refine_mask` picks (``refine``) are
    rendered exactly. An even s > 2 goes in steps of 2 (s = 4: every 4th pixel, upsampled and refined to every
    2nd, then to every pixel), so refinement near class edges is paid at the finer level only where needed.
    With s = 2 or an odd s, anchors and refined pixels equal the per-pixel path's values."""
    cfg = model.cfg
    rays = dict(num_samples=num_samples, confident_samples=confident_samples,
                threshold=cfg.confident_surface_threshold, **kw)
    height, width = surf.depth.shape
    if view_scale <= 1:
        return _guided_rays(model, sources, rays_o, rays_d, surf.depth.reshape(-1), surf.confidence.reshape(-1),
                            near, far, **rays), rays_o.shape[0]
    every_row = torch.arange(height, device=rays_o.device)
    every_col = torch.arange(width, device=rays_o.device)
    return _fast_grid(model, sources, rays_o, rays_d, surf, every_row, every_col, view_scale, refine, near, far, rays)


def _fast_grid(model: SRay, sources: SourceViews, rays_o: Tensor, rays_d: Tensor, surf: SurfaceDepth, rows: Tensor,
               cols: Tensor, scale: int, refine: str, near: float, far: float, rays: dict) -> tuple[RenderOutput, int]:
    """:func:`render_guided_view` on the pixel grid ``rows x cols`` (full-resolution indices): the output per grid
    pixel (row-major) and the network's ray count."""
    cfg = model.cfg
    flat = (rows[:, None] * surf.depth.shape[1] + cols[None, :]).reshape(-1)
    td, tc = surf.depth.reshape(-1)[flat], surf.confidence.reshape(-1)[flat]
    if scale <= 1:
        return _guided_rays(model, sources, rays_o[flat], rays_d[flat], td, tc, near, far, **rays), flat.numel()
    h, w = rows.numel(), cols.numel()
    step = 2 if scale % 2 == 0 and scale > 2 else scale
    a_rows, a_cols = anchor_axes(h, w, step, device=rows.device)
    low, count = _fast_grid(model, sources, rays_o, rays_d, surf, rows[a_rows], cols[a_cols], scale // step, refine,
                            near, far, rays)
    anchors = (a_rows[:, None] * w + a_cols[None, :]).reshape(-1)
    weights = joint_weights(td.view(h, w), a_rows, a_cols, cfg.upsample_depth_sigma)
    out = RenderOutput(None, None, None, None)
    for name in ("rgb", "acc", "logits", "label_evidence", "label_mass", "label_view_votes", "label_view_mass"):
        value = getattr(low, name)
        if value is not None and value.dim() > 2:  # per-view votes [R, m, K]: upsampled as [R, m * K]
            value = upsample(value.reshape(value.shape[0], -1), weights).view(-1, *value.shape[1:])
        elif value is not None:
            value = upsample(value, weights)
        setattr(out, name, value)
    low_depth = low.depth / low.acc.clamp_min(1e-6)
    known = td[anchors] > 0
    residual = torch.where(known, low_depth - td[anchors], torch.zeros_like(low_depth))
    full_depth = torch.where(td > 0, td + upsample(residual, weights), upsample(low_depth, weights))
    out.depth = full_depth * out.acc
    out = _scatter([(anchors, low)], td.shape[0], out)
    labels = margin = None
    if low.logits is not None:
        labels = low.logits.argmax(-1)
        if cfg.upsample_refine_margin < 1.0:
            top2 = torch.softmax(out.logits.float(), -1).topk(min(2, out.logits.shape[-1]), -1).values
            margin = top2[:, 0] - top2[:, -1] if top2.shape[-1] > 1 else torch.ones_like(top2[:, 0])
    exact = refine_mask(weights, labels, refine if labels is not None else "depth", margin=margin,
                        max_margin=cfg.upsample_refine_margin).nonzero().squeeze(-1)
    if exact.numel():
        part = _guided_rays(model, sources, rays_o[flat[exact]], rays_d[flat[exact]], td[exact], tc[exact], near, far,
                            **rays)
        out = _scatter([(exact, part)], td.shape[0], out)
    return out, count + exact.numel()


@torch.no_grad()
def render_view(model: SRay, sources: SourceViews, K: Tensor, c2w: Tensor, height: int, width: int,
                near: float | None = None, far: float | None = None, chunk: int | None = None,
                num_coarse: int | None = None, num_fine: int | None = None, autocast: bool = False,
                sampling: str | None = None, num_surface_samples: int | None = None,
                surface_semantics: str | None = None, surface_cfg: SurfaceConfig | None = None,
                label_transfer: LabelTransferConfig | None = None,
                label_sources: SourceViews | None = None, view_scale: int | None = None,
                confident_surface_samples: int | None = None, upsample_refine: str | None = None) -> ViewRender:
    """Render a full ``height x width`` view at pose ``c2w`` ``[4, 4]`` with intrinsics ``K`` ``[3, 3]``.

    Runs on the device of ``sources`` (CPU or CUDA, nothing hard-coded). ``near``/``far`` default to
    :func:`near_far_from_sources`. ``autocast`` enables float16 autocast on CUDA (ignored on CPU).
    ``sampling`` (default ``cfg.sampling``): ``"auto"`` renders depth-guided when ``sources.depths`` is set,
    hierarchically otherwise; ``"depth_guided"`` without source depth samples around the coarse pass's depth
    (:func:`target_surface`). ``num_surface_samples`` / ``surface_semantics``: see :func:`render_rays`.
    ``label_transfer`` fuses the labels of the sources (or of ``label_sources``, see :func:`render_rays`), when
    they carry any, into the output. ``view_scale``, ``confident_surface_samples``, ``upsample_refine``
    (defaults: the config's) set the fast depth-guided path (:func:`render_guided_view`); ``view_scale=1,
    confident_surface_samples=0`` renders every pixel with the same K, the exact path. With label transfer from
    labelled sources every pixel is rendered (keyframe labels are per-pixel evidence).
    """
    from sray_ros.model.samplers import resolve_sampling

    device = sources.device
    mode = resolve_sampling(sampling or model.cfg.sampling, sources.depths is not None)
    if near is None or far is None:
        d_near, d_far = near_far_from_sources(sources, model.cfg.default_near, model.cfg.default_far)
        near = d_near if near is None else near
        far = d_far if far is None else far
    K = K.to(device, torch.float32)
    c2w = c2w.to(device, torch.float32)
    uv = geometry.pixel_grid(height, width, device=device)
    rays_o, rays_d = geometry.generate_rays(K, c2w, uv)
    use_amp = autocast and device.type == "cuda"
    ctx = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
    num_fine = model.cfg.num_fine if num_fine is None else num_fine
    was_training = model.training
    model.eval()
    surf = None
    try:
        with ctx:  # the coarse pass needs semantics only when there is no fine pass
            if mode == "depth_guided":
                surf = target_surface(model, sources, K, c2w, height, width, near, far, surface_cfg, chunk)
                cfg = model.cfg
                scale = cfg.view_scale if view_scale is None else view_scale
                evidence = sources if label_sources is None else label_sources
                if label_transfer is not None and evidence.labels is not None:
                    scale = 1  # keyframe labels are per-pixel evidence that upsampling would blur: every pixel
                best, network_rays = render_guided_view(
                    model, sources, rays_o, rays_d, surf, near, far, num_surface_samples or cfg.num_surface_samples,
                    scale,
                    cfg.confident_surface_samples if confident_surface_samples is None else confident_surface_samples,
                    upsample_refine or cfg.upsample_refine, chunk=chunk, num_coarse=num_coarse,
                    surface_semantics=surface_semantics, label_transfer=label_transfer, label_sources=label_sources)
            else:
                best = render_rays(model, sources, rays_o, rays_d, near, far, chunk=chunk, num_coarse=num_coarse,
                                   num_fine=num_fine, coarse_semantics=num_fine == 0, sampling="hierarchical",
                                   label_transfer=label_transfer, label_sources=label_sources).best
                network_rays = height * width
    finally:
        model.train(was_training)
    probs = torch.softmax(best.logits.float(), -1)
    conf, labels = probs.max(-1)
    depth = best.depth / best.acc.clamp_min(1e-6)
    view = ViewRender(labels.view(height, width), conf.view(height, width), best.rgb.view(height, width, 3),
                      depth.view(height, width), best.acc.view(height, width), mode,
                      None if surf is None else surf.depth, network_rays)
    if best.label_evidence is not None:
        evidence = LabelEvidence(best.label_evidence, best.label_mass, best.label_view_votes, best.label_view_mass)
        if label_transfer.fusion == "reliability":
            fused = fuse_reliable(best.logits, evidence, best.acc, label_transfer.full_coverage,
                                  label_transfer.em_iterations)
        else:
            fused = fuse_with_logits(best.logits, evidence, best.acc, label_transfer.beta, label_transfer.eps,
                                     label_transfer.full_coverage)
        view.sray_labels, view.sray_confidence = view.labels, view.confidence
        view.labels, view.confidence = fused.labels.view(height, width), fused.confidence.view(height, width)
        view.transfer_labels = evidence.labels().view(height, width)
        view.coverage, view.agreement = fused.coverage.view(height, width), fused.agreement.view(height, width)
    return view
