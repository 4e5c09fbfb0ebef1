"""Label transfer (labelled source keyframes as evidence at render time): nearest-neighbour gathering,
visibility, blending, volume rendering, fusion with S-Ray logits, and SourceViews labels. The toy scene is the
plane z = 2 of test_model (two classes split at x = 0) and the tiny S-Ray config (random weights: label
transfer needs no training)."""


import pytest
import torch


from sray_ros import geometry as G  # noqa: E402
from sray_ros.model import SRay, SRayConfig, SourceViews, render_rays, render_view  # noqa: E402
from sray_ros.model.label_transfer import (LabelEvidence, LabelTransferConfig, blend_views,  # noqa: E402
                                           depth_visibility, fuse_with_logits, gather_view_labels,
                                           label_distribution_maps, render_evidence, transfer_labels)
from test_model import H, K_TOY, W, render_plane, toy_camera, toy_images  # noqa: E402

torch.set_num_threads(1)

NUM_CLASSES = 5


def toy_labels(c2w: torch.Tensor) -> torch.Tensor:
    """The plane's labels seen from c2w, shifted to classes 2 / 3 so that 0 and 1 stay unused."""
    return (render_plane(c2w)[3].reshape(H, W) + 2).to(torch.uint8)


def random_labels(seed: int, m: int = 1, unknown: float = 0.2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (m, H, W), generator=gen)
    labels[torch.rand(m, H, W, generator=gen) < unknown] = 255
    return labels.to(torch.uint8)


def surface_points(c2w: torch.Tensor, n: int = 6, jitter: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """``[H*W, n, 3]`` points on the rays of c2w's pixel centres (+ jitter (du, dv) in pixels), depths 1..3 m."""
    uv = G.pixel_grid(H, W) + torch.tensor(jitter)
    o, d = G.generate_rays(K_TOY, c2w, uv)
    t = torch.linspace(1.0, 3.0, n)
    return o[:, None, :] + d[:, None, :] * t[None, :, None]


# --------------------------------------------------------------------------------------------------
# gathering: nearest neighbour, never interpolated, 255 = no evidence
# --------------------------------------------------------------------------------------------------
def test_distribution_maps_are_one_hot_and_zero_where_unknown():
    labels = random_labels(0)
    maps = label_distribution_maps(labels, NUM_CLASSES).view(1, H, W, NUM_CLASSES)
    known = labels != 255
    assert torch.equal(maps.sum(-1) > 0, known)
    assert torch.equal(maps.argmax(-1)[known], labels[known].long())
    assert set(maps.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        label_distribution_maps(torch.full((1, 2, 2), 7, dtype=torch.uint8), NUM_CLASSES)


def test_window_maps_are_neighbourhood_histograms_of_known_labels():
    labels = torch.full((1, 3, 3), 255, dtype=torch.uint8)
    labels[0, 0, 0], labels[0, 0, 1], labels[0, 1, 1] = 1, 1, 4
    maps = label_distribution_maps(labels, NUM_CLASSES, window=1).view(3, 3, NUM_CLASSES)
    assert torch.allclose(maps[1, 1], torch.tensor([0, 2 / 3, 0, 0, 1 / 3]))  # 3 known of 9, 255 excluded
    assert torch.allclose(maps[2, 2], torch.tensor([0, 0, 0, 0, 1.0]))  # only the 4 in its window


def test_gather_reads_the_nearest_source_pixel_not_an_interpolation():
    c2w = toy_camera(0.1)
    labels = random_labels(1)
    maps = label_distribution_maps(labels, NUM_CLASSES)
    for jitter in ((0.0, 0.0), (0.45, -0.45), (-0.45, 0.45)):  # anything within half a pixel reads that pixel
        views = gather_view_labels(maps, K_TOY[None], c2w[None], H, W, surface_points(c2w, jitter=jitter))
        assert views.dist.shape == (H * W, 6, 1, NUM_CLASSES)
        ids = torch.where(views.labelled[..., 0], views.dist[..., 0, :].argmax(-1), 255)
        assert torch.equal(ids, labels.reshape(-1, 1).long().expand(-1, 6))
    shifted = gather_view_labels(maps, K_TOY[None], c2w[None], H, W, surface_points(c2w, jitter=(0.55, 0.0)))
    interior = labels.reshape(H, W)[:, 1:].reshape(-1)  # +0.55 px reads the right-hand neighbour
    got = torch.where(shifted.labelled[..., 0, 0], shifted.dist[:, 0, 0].argmax(-1), 255).view(H, W)[:, :-1]
    assert torch.equal(got.reshape(-1), interior.long())


def test_samples_outside_a_source_or_behind_it_get_no_evidence():
    c2w = toy_camera(0.0)
    maps = label_distribution_maps(torch.zeros(1, H, W, dtype=torch.uint8), NUM_CLASSES)
    behind = surface_points(c2w) * torch.tensor([1.0, 1.0, -1.0])
    assert not gather_view_labels(maps, K_TOY[None], c2w[None], H, W, behind).labelled.any()
    outside = surface_points(c2w) + torch.tensor([100.0, 0.0, 0.0])
    assert not gather_view_labels(maps, K_TOY[None], c2w[None], H, W, outside).labelled.any()


# --------------------------------------------------------------------------------------------------
# visibility and blending
# --------------------------------------------------------------------------------------------------
def test_depth_visibility_surface_and_occlusion_tests():
    z = torch.tensor([1.0, 1.9, 2.0, 2.15, 3.0, 2.0])
    d = torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0, 0.0])  # last: unknown depth passes untested
    assert depth_visibility(z, d, 0.1, "surface").tolist() == [0, 1, 1, 1, 0, 1]
    assert depth_visibility(z, d, 0.1, "unoccluded").tolist() == [1, 1, 1, 1, 0, 1]
    with pytest.raises(ValueError, match="surface or unoccluded"):
        depth_visibility(z, d, 0.1, "nearest")


def test_depth_weighting_drops_a_source_that_sees_an_occluder():
    """Source 0 sees the plane (class 2), source 1 sees an occluder in front of it (class 4, depth 1 m):
    with the depth test only source 0 speaks for samples on the plane; without it the views tie."""
    cams = torch.stack([toy_camera(-0.2), toy_camera(0.2)])
    labels = torch.stack([torch.full((H, W), 2), torch.full((H, W), 4)]).to(torch.uint8)
    depths = torch.stack([torch.full((H, W), 2.0), torch.full((H, W), 1.0)])
    maps = label_distribution_maps(labels, NUM_CLASSES)
    target = toy_camera(0.0)
    o, d, _, _, t = render_plane(target)
    points = (o + d * t[:, None])[:, None, :]  # one sample per ray, on the plane
    ones = torch.ones(points.shape[0], 1)
    seen = gather_view_labels(maps, K_TOY.expand(2, 3, 3), cams, H, W, points).labelled[:, 0].all(-1)
    assert seen.float().mean() > 0.5
    ev = transfer_labels(maps, K_TOY.expand(2, 3, 3), cams, H, W, points, ones, LabelTransferConfig("depth"),
                         depths=depths)
    dist = ev.distribution()[seen]
    assert torch.allclose(dist[:, 2], torch.ones_like(dist[:, 2]))
    ev_u = transfer_labels(maps, K_TOY.expand(2, 3, 3), cams, H, W, points, ones, LabelTransferConfig("uniform"))
    assert torch.allclose(ev_u.distribution()[seen][:, [2, 4]], torch.full((int(seen.sum()), 2), 0.5))


def test_blend_renormalises_over_labelled_views_and_render_sums_to_mass():
    gen = torch.Generator().manual_seed(0)
    r, n, m = 7, 5, 3
    labels = torch.randint(0, NUM_CLASSES, (r, n, m), generator=gen)
    labelled = torch.rand(r, n, m, generator=gen) > 0.3
    dist = torch.nn.functional.one_hot(labels, NUM_CLASSES).float() * labelled[..., None]
    from sray_ros.model.label_transfer import ViewLabels
    views = ViewLabels(dist, labelled, torch.ones(r, n, m), None)
    w = torch.rand(r, n, m, generator=gen)
    q, has = blend_views(views, w)
    expected = (w * labelled)[..., None] * dist
    expected = expected.sum(-2) / (w * labelled).sum(-1, keepdim=True).clamp_min(1e-30)
    assert torch.equal(has, labelled.any(-1))
    assert torch.allclose(q[has], expected[has]) and torch.all(q[~has] == 0)
    sw = torch.rand(r, n, generator=gen)
    ev = render_evidence(q, has, sw)
    assert torch.allclose(ev.evidence.sum(-1), ev.mass, atol=1e-6)
    assert torch.allclose(ev.mass, (sw * has).sum(-1))


# --------------------------------------------------------------------------------------------------
# the acceptance properties, through the function and through the renderer
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SRay(SRayConfig.tiny(num_classes=NUM_CLASSES)).eval()


def _sources(model, xs, labels=None, depths=False) -> SourceViews:
    poses = torch.stack([toy_camera(x, 0.05 * i) for i, x in enumerate(xs)])
    d = None
    if depths:
        d = torch.stack([render_plane(p)[4].reshape(H, W) for p in poses])
    with torch.no_grad():
        return model.encode_sources(toy_images(list(poses)), K_TOY.expand(len(xs), 3, 3), poses, d, labels)


@pytest.mark.parametrize("weighting", ["blend", "depth", "blend_depth", "uniform"])
def test_render_view_with_a_labelled_source_at_the_target_pose_reproduces_its_labels(tiny, weighting):
    """Every sample of a target ray projects to that ray's own pixel in a source at the same pose, so the
    transferred label is the source's label whatever the (untrained) density; random labels with holes make
    an identity mapping the only way to pass. Other labelled sources are absent; unlabelled ones may be there."""
    target = toy_camera(0.05)
    labels = random_labels(3)
    src = SourceViews.cat([_sources(tiny, [0.05], labels, depths=True), _sources(tiny, [-0.3, 0.3], depths=True)])
    src.c2w[0] = target  # exactly the target pose
    view = render_view(tiny, src, K_TOY, target, H, W, near=1.0, far=4.0,
                       label_transfer=LabelTransferConfig(weighting, depth_test="unoccluded"))
    assert torch.equal(view.transfer_labels, labels[0].long())
    known = labels[0] != 255
    assert torch.equal(view.labels[known], labels[0].long()[known])  # full coverage, one-hot evidence wins
    # no evidence: S-Ray's (untrained, near-uniform) distribution reweighted by the view's class marginal,
    # far less sure than the labelled pixels
    assert float(view.confidence[~known].max()) < float(view.confidence[known].min())
    assert torch.allclose(view.agreement[known], torch.ones(int(known.sum())))


def test_sources_whose_labels_are_all_unknown_add_no_evidence(tiny):
    target = toy_camera(0.0)
    o, d, _, _, _ = render_plane(target, G.pixel_grid(H, W)[::53])
    cfg = LabelTransferConfig("uniform")
    unknown = torch.full((2, H, W), 255, dtype=torch.uint8)
    src = _sources(tiny, [-0.3, 0.3], unknown)
    with torch.no_grad():
        out = render_rays(tiny, src, o, d, 1.0, 4.0, label_transfer=cfg).fine
        plain = render_rays(tiny, src, o, d, 1.0, 4.0).fine
    assert torch.all(out.label_mass == 0) and torch.all(out.label_evidence == 0)
    fused = fuse_with_logits(out.logits, LabelEvidence(out.label_evidence, out.label_mass), out.acc, beta=5.0)
    assert torch.allclose(fused.log_probs.exp(), torch.softmax(plain.logits, -1), atol=1e-6)
    # with fixed geometry, an all-255 view added to labelled ones changes no evidence at all
    c2w = torch.stack([toy_camera(-0.3), toy_camera(0.3), toy_camera(0.1)])
    labels = torch.cat([random_labels(5, 2), unknown[:1]])
    points = surface_points(target)[::53]
    sw = torch.rand(points.shape[:2], generator=torch.Generator().manual_seed(1))
    blend = torch.rand(*points.shape[:2], 3, generator=torch.Generator().manual_seed(2))
    for weighting in ("blend", "uniform"):
        cfg = LabelTransferConfig(weighting)
        two = transfer_labels(label_distribution_maps(labels[:2], NUM_CLASSES), K_TOY.expand(2, 3, 3), c2w[:2], H, W,
                              points, sw, cfg, blend[..., :2])
        three = transfer_labels(label_distribution_maps(labels, NUM_CLASSES), K_TOY.expand(3, 3, 3), c2w, H, W,
                                points, sw, cfg, blend)
        assert two.mass.gt(0).any()
        assert torch.allclose(two.evidence, three.evidence, atol=1e-6) and torch.allclose(two.mass, three.mass)


def test_transfer_is_invariant_to_permuting_sources(tiny):
    target = toy_camera(0.05)
    labels = random_labels(7, 4)
    src = _sources(tiny, [-0.4, 0.0, 0.4, 0.2], labels, depths=True)
    o, d, _, _, _ = render_plane(target, G.pixel_grid(H, W)[::29])
    for weighting in ("blend", "blend_depth"):
        cfg = LabelTransferConfig(weighting)
        with torch.no_grad():
            a = render_rays(tiny, src, o, d, 1.0, 4.0, label_transfer=cfg).fine
            b = render_rays(tiny, src.select([2, 0, 3, 1]), o, d, 1.0, 4.0, label_transfer=cfg).fine
        assert a.label_mass.gt(0).float().mean() > 0.5
        assert torch.allclose(a.label_evidence, b.label_evidence, atol=1e-4)
        assert torch.allclose(a.label_mass, b.label_mass, atol=1e-4)
    # the test can fail: a different labelling of one view changes the evidence
    other = SourceViews.cat([src.select([0, 1, 2]), _sources(tiny, [0.2], random_labels(8))])
    other.c2w[3] = src.c2w[3]
    with torch.no_grad():
        c = render_rays(tiny, other, o, d, 1.0, 4.0, label_transfer=cfg).fine
    assert not torch.allclose(a.label_evidence, c.label_evidence, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# fusion
# --------------------------------------------------------------------------------------------------
def test_fusion_falls_back_to_sray_without_evidence_and_follows_unanimous_evidence():
    gen = torch.Generator().manual_seed(0)
    r = 6
    logits = torch.randn(r, NUM_CLASSES, generator=gen) * 3
    acc = torch.full((r,), 0.9)
    evidence = torch.zeros(r, NUM_CLASSES)
    evidence[3:, 1] = 0.9  # rays 3-5: unanimous class 1 over the whole rendered weight
    mass = evidence.sum(-1)
    fused = fuse_with_logits(logits, LabelEvidence(evidence, mass), acc, beta=3.0)
    assert torch.allclose(fused.log_probs[:3], torch.log_softmax(logits[:3], -1), atol=1e-6)
    assert torch.equal(fused.labels[:3], logits[:3].argmax(-1))
    assert torch.all(fused.labels[3:] == 1) and torch.all(fused.coverage[3:] == 1) and torch.all(fused.coverage[:3] == 0)
    assert torch.allclose(fused.confidence, fused.log_probs.exp().amax(-1))
    # a share of the rendered weight below full_coverage counts proportionally
    part = fuse_with_logits(logits, LabelEvidence(evidence * 0.05, mass * 0.05), acc, beta=3.0, full_coverage=0.1)
    assert torch.allclose(part.coverage[3:], torch.full((3,), 0.5))  # 0.045 / (0.1 * 0.9)
    expected = torch.log_softmax(torch.log_softmax(logits, -1) + 3.0 * 0.5 * torch.log(
        torch.nn.functional.one_hot(torch.tensor(1), NUM_CLASSES).float() + 1e-3), -1)
    assert torch.allclose(part.log_probs[3:], expected[3:], atol=1e-5)
    assert torch.allclose(fused.log_probs.exp().sum(-1), torch.ones(r))


def test_confidence_and_agreement_reflect_disagreeing_views():
    logits = torch.zeros(2, NUM_CLASSES)  # S-Ray undecided
    evidence = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0, 0.0]])
    ev = LabelEvidence(evidence, evidence.sum(-1))
    fused = fuse_with_logits(logits, ev, torch.ones(2))
    assert torch.allclose(fused.agreement, torch.tensor([1.0, 0.5]))
    assert fused.confidence[0] > 0.95 and fused.confidence[1] < 0.55


def test_config_rejects_unknown_weighting():
    with pytest.raises(ValueError, match="weighting"):
        LabelTransferConfig("learned")
    with pytest.raises(ValueError, match="depth_tolerance"):
        LabelTransferConfig(depth_tolerance=0.0)
    with pytest.raises(ValueError, match="blend weights"):
        maps = label_distribution_maps(random_labels(0), NUM_CLASSES)
        transfer_labels(maps, K_TOY[None], toy_camera(0.0)[None], H, W, surface_points(toy_camera(0.0))[:4],
                        torch.ones(4, 6), LabelTransferConfig("blend"))


# --------------------------------------------------------------------------------------------------
# SourceViews labels
# --------------------------------------------------------------------------------------------------
def test_source_views_labels_validate_select_cat_to_detach(tiny):
    labelled = _sources(tiny, [-0.3, 0.3], random_labels(1, 2))
    plain = _sources(tiny, [0.0])
    both = SourceViews.cat([labelled, plain])
    assert both.labels.shape == (3, H, W) and both.labels.dtype == torch.uint8
    assert torch.all(both.labels[2] == 255) and torch.equal(both.labels[:2], labelled.labels)
    assert SourceViews.cat([plain, plain]).labels is None
    assert torch.equal(both.select([2, 0]).labels[1], labelled.labels[0])
    assert both.to("cpu", torch.float64).labels.dtype == torch.uint8  # ids are never cast to float
    assert both.detach().labels is both.labels
    with pytest.raises(ValueError, match=r"labels must be \[m, H, W\]"):
        SourceViews(plain.images, plain.features, plain.K, plain.c2w, labels=torch.zeros(1, H, W + 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="integer class ids"):
        SourceViews(plain.images, plain.features, plain.K, plain.c2w, labels=torch.zeros(1, H, W))


def test_separate_label_sources_supply_the_evidence(tiny):
    """When few keyframes are labelled, the nearest labelled ones can give the labels while the nearest
    keyframes give the geometry: here the geometry sources carry no labels at all."""
    target = toy_camera(0.05)
    labels = random_labels(4)
    geometry_sources = _sources(tiny, [-0.3, 0.3], depths=True)
    label_sources = _sources(tiny, [0.05], labels, depths=True)
    label_sources.c2w[0] = target
    view = render_view(tiny, geometry_sources, K_TOY, target, H, W, near=1.0, far=4.0,
                       label_transfer=LabelTransferConfig("depth", depth_test="unoccluded"), label_sources=label_sources)
    assert torch.equal(view.transfer_labels, labels[0].long())
    plain = render_view(tiny, geometry_sources, K_TOY, target, H, W, near=1.0, far=4.0,
                        label_transfer=LabelTransferConfig("depth"))
    assert plain.transfer_labels is None  # the geometry sources alone have no labels
    with pytest.raises(ValueError, match="separate label_sources"):
        render_view(tiny, geometry_sources, K_TOY, target, H, W, near=1.0, far=4.0,
                    label_transfer=LabelTransferConfig("blend"), label_sources=label_sources)
