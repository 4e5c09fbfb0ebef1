"""Volume rendering, chunked ray rendering and whole-view rendering.

Depth convention: ray directions have camera-z = 1 (:func:`geometry.generate_rays`), so sample
parameters ``t`` are z-depths and the rendered depth is a z-depth map like a sensor's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from sray_ros import geometry
from sray_ros.model.feature_net import SourceViews
from sray_ros.model.label_transfer import LabelEvidence, LabelTransferConfig, fuse_with_logits, \
    label_distribution_maps, transfer_labels
from sray_ros.model.sray import SRay, contextual_space


@dataclass
class RenderOutput:
    """Per-ray rendering of one pass. rgb ``[R, 3]``, depth ``[R]`` (expected z-depth, sum_k w_k t_k,
    not divided by opacity), acc ``[R]`` (sum of weights), logits ``[R, K]`` or None (coarse pass at
    inference), optionally the per-sample weights/depths ``[R, N]``, and with label transfer the rendered
    label evidence ``[R, K]`` and its mass ``[R]`` (:mod:`sray_ros.model.label_transfer`)."""

    rgb: Tensor
    depth: Tensor
    acc: Tensor
    logits: Tensor | None
    weights: Tensor | None = None
    depths: Tensor | None = None
    label_evidence: Tensor | None = None
    label_mass: Tensor | None = None


@dataclass
class RayRenderResult:
    coarse: RenderOutput
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
          semantics: bool, label_maps: Tensor | None = None, label_transfer: LabelTransferConfig | None = None,
          label_sources: SourceViews | None = None) -> RenderOutput:
    """One pass; with ``label_maps`` ``[m', H*W, K]`` of ``label_sources`` (default: ``sources``) also the
    label evidence rendered with this pass's weights."""
    points = rays_o[:, None, :] + rays_d[:, None, :] * depths[..., None]
    ctx = contextual_space(sources, points, rays_d)
    transfer = label_maps is not None and label_transfer is not None
    out = model.field(fine)(ctx, semantics=semantics, blend=transfer and label_transfer.uses_blend)
    result = volume_render(out.sigma.float(), depths, out.rgb.float(),
                           None if out.logits is None else out.logits.float(), rays_d.norm(dim=-1), model.cfg.last_delta)
    if transfer:
        lv = sources if label_sources is None else label_sources
        ev = transfer_labels(label_maps, lv.K, lv.c2w, lv.height, lv.width, points,
                             result.weights, label_transfer, None if out.blend is None else out.blend.float(),
                             lv.depths)
        result.label_evidence, result.label_mass = ev.evidence, ev.mass
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


def render_rays(model: SRay, sources: SourceViews, rays_o: Tensor, rays_d: Tensor, near: float | Tensor,
                far: float | Tensor, chunk: int | None = None, num_coarse: int | None = None, num_fine: int | None = None,
                perturb: bool = False, coarse_semantics: bool | None = None, keep_weights: bool = False,
                label_transfer: LabelTransferConfig | None = None,
                label_sources: SourceViews | None = None) -> RayRenderResult:
    """Render any number of rays ``[R, 3]`` (origins, directions with camera-z = 1) in chunks of ``chunk``
    rays (default :func:`auto_chunk` for the fine pass size; memory is bounded by the chunk).

    Coarse samples are uniform in inverse depth in ``[near, far]`` (scalars or ``[R]``), stratified when
    ``perturb``; fine samples are importance-sampled from the coarse weights and, when
    ``cfg.fine_includes_coarse``, merged with the coarse ones. ``coarse_semantics`` (default: the model's
    training flag) decides whether the coarse pass also computes semantic logits; at inference it is
    skipped since only its density is needed. Gradients flow when called outside ``no_grad``.
    Per-sample weights are returned only with ``keep_weights`` (memory). With ``label_transfer`` and
    source labels, the last pass (fine, else coarse) also carries label evidence (``label_evidence``,
    ``label_mass``); source labels are turned into class distributions once per call. ``label_sources``
    (e.g. the nearest *labelled* keyframes when few are labelled) supply the labels instead of ``sources``;
    their views are not the geometry head's, so only the ``depth`` and ``uniform`` weightings apply.
    """
    cfg = model.cfg
    num_coarse = cfg.num_coarse if num_coarse is None else num_coarse
    num_fine = cfg.num_fine if num_fine is None else num_fine
    coarse_semantics = model.training if coarse_semantics is None else coarse_semantics
    rays_o = rays_o.to(sources.device, torch.float32)
    rays_d = rays_d.to(rays_o)
    near_t, far_t = _as_ray_tensor(near, rays_o), _as_ray_tensor(far, rays_o)
    if chunk is None:
        fine_n = num_fine + (num_coarse if cfg.fine_includes_coarse else 0) if num_fine > 0 else num_coarse
        chunk = auto_chunk(rays_o.device, sources.num_views, fine_n)
    label_maps = None
    evidence_views = sources if label_sources is None else label_sources
    if label_sources is not None and label_transfer is not None and label_transfer.uses_blend:
        raise ValueError(f"weighting {label_transfer.weighting!r} uses the geometry sources' blend weights; "
                         "separate label_sources need 'depth' or 'uniform'")
    if label_transfer is not None and evidence_views.labels is not None:
        label_maps = label_distribution_maps(evidence_views.labels.to(sources.device), cfg.num_classes,
                                             label_transfer.window)
    coarse_parts: list[RenderOutput] = []
    fine_parts: list[RenderOutput] = []
    for start in range(0, rays_o.shape[0], chunk):
        sl = slice(start, start + chunk)
        o, d = rays_o[sl], rays_d[sl]
        depths = geometry.sample_inverse_depth(near_t[sl], far_t[sl], num_coarse, perturb=perturb)
        coarse = _pass(model, sources, o, d, depths, fine=False, semantics=coarse_semantics,
                       label_maps=label_maps if num_fine == 0 else None, label_transfer=label_transfer,
                       label_sources=label_sources)
        fine = None
        if num_fine > 0:
            fine_depths = geometry.sample_pdf(coarse.depths, coarse.weights, num_fine, deterministic=not perturb)
            if cfg.fine_includes_coarse:
                fine_depths = torch.cat([depths, fine_depths], -1).sort(-1).values
            fine = _pass(model, sources, o, d, fine_depths, fine=True, semantics=True, label_maps=label_maps,
                         label_transfer=label_transfer, label_sources=label_sources)
        if not keep_weights:
            coarse.weights = coarse.depths = None
            if fine is not None:
                fine.weights = fine.depths = None
        coarse_parts.append(coarse)
        if fine is not None:
            fine_parts.append(fine)
    return RayRenderResult(_cat(coarse_parts), _cat(fine_parts) if fine_parts else None)


def _cat(parts: list[RenderOutput]) -> RenderOutput:
    def cat(name: str) -> Tensor | None:
        vals = [getattr(p, name) for p in parts]
        return None if vals[0] is None else torch.cat(vals, 0)
    return RenderOutput(cat("rgb"), cat("depth"), cat("acc"), cat("logits"), cat("weights"), cat("depths"),
                        cat("label_evidence"), cat("label_mass"))


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
    rgb ``[H, W, 3]``, depth ``[H, W]`` (expected z-depth / opacity, metres), acc ``[H, W]`` (opacity).

    With label transfer (sources carry labels), labels / confidence are the fused ones
    (:func:`~sray_ros.model.label_transfer.fuse_with_logits`), and ``sray_labels`` (S-Ray alone),
    ``transfer_labels`` (evidence argmax, 255 where there is none), ``coverage`` and ``agreement`` ``[H, W]``
    are set."""

    labels: Tensor
    confidence: Tensor
    rgb: Tensor
    depth: Tensor
    acc: Tensor
    sray_labels: Tensor | None = None
    transfer_labels: Tensor | None = None
    coverage: Tensor | None = None
    agreement: Tensor | None = None


@torch.no_grad()
def render_view(model: SRay, sources: SourceViews, K: Tensor, c2w: Tensor, height: int, width: int,
                near: float | None = None, far: float | None = None, chunk: int | None = None,
                num_coarse: int | None = None, num_fine: int | None = None, autocast: bool = False,
                label_transfer: LabelTransferConfig | None = None,
                label_sources: SourceViews | None = None) -> ViewRender:
    """Render a full ``height x width`` view at pose ``c2w`` ``[4, 4]`` with intrinsics ``K`` ``[3, 3]``.

    Runs on the device of ``sources`` (CPU or CUDA, nothing hard-coded). ``near``/``far`` default to
    :func:`near_far_from_sources`. ``autocast`` enables float16 autocast on CUDA (ignored on CPU).
    ``label_transfer`` fuses the labels of the sources (or of ``label_sources``, see :func:`render_rays`), when
    they carry any, into the output.
    """
    device = sources.device
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
    try:
        with ctx:  # the coarse pass needs semantics only when there is no fine pass
            best = render_rays(model, sources, rays_o, rays_d, near, far, chunk=chunk, num_coarse=num_coarse,
                               num_fine=num_fine, coarse_semantics=num_fine == 0, label_transfer=label_transfer,
                               label_sources=label_sources).best
    finally:
        model.train(was_training)
    probs = torch.softmax(best.logits.float(), -1)
    conf, labels = probs.max(-1)
    depth = best.depth / best.acc.clamp_min(1e-6)
    view = ViewRender(labels.view(height, width), conf.view(height, width), best.rgb.view(height, width, 3),
                      depth.view(height, width), best.acc.view(height, width))
    if best.label_evidence is not None:
        evidence = LabelEvidence(best.label_evidence, best.label_mass)
        fused = fuse_with_logits(best.logits, evidence, best.acc, label_transfer.beta, label_transfer.eps,
                                 label_transfer.full_coverage)
        view.sray_labels = view.labels
        view.labels, view.confidence = fused.labels.view(height, width), fused.confidence.view(height, width)
        view.transfer_labels = evidence.labels().view(height, width)
        view.coverage, view.agreement = fused.coverage.view(height, width), fused.agreement.view(height, width)
    return view
