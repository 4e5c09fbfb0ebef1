"""Reliability-aware label fusion (per-keyframe, per-class Dawid-Skene weights) against today's averaging rule:
a keyframe whose labels are all wrong loses its weight, clean keyframes keep equal weights, the result does not
depend on keyframe order, a pixel of confidence 0 does not vote, a ray without evidence takes S-Ray's
distribution (mixed by its fitted share and reweighted by the view's class marginal; exactly S-Ray's when no ray
is labelled), and the confidence is calibrated where the averaging rule's is not. Votes are built directly
(``LabelEvidence`` with per-view votes) so that each right value is known exactly; the last tests go through
``transfer_labels`` / ``render_view`` on the toy plane of test_model."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sray_ros.model.label_transfer import (LabelEvidence, LabelTransferConfig, ReliabilityPrior,  # noqa: E402
                                           fuse_reliable, fuse_with_logits, label_distribution_maps,
                                           transfer_labels)

torch.set_num_threads(1)
K = 5


def votes_from_labels(labels: torch.Tensor, seen: torch.Tensor | None = None) -> LabelEvidence:
    """Per-view one-hot votes ``[R, m, K]`` from labels ``[R, m]`` (seen ``[R, m]`` bool: the view labels the
    ray), plus the averaged evidence today's rule uses; every ray fully opaque."""
    r, m = labels.shape
    seen = torch.ones(r, m, dtype=torch.bool) if seen is None else seen
    votes = torch.nn.functional.one_hot(labels.long(), K).float() * seen[..., None]
    mass = seen.float()
    count = mass.sum(1)
    evidence = votes.sum(1) / count.clamp_min(1)[:, None] * (count > 0)[:, None]
    return LabelEvidence(evidence, (count > 0).float(), votes, mass)


def ece(conf: torch.Tensor, correct: torch.Tensor, bins: int = 10) -> float:
    b = (conf * bins).long().clamp(0, bins - 1)
    total = 0.0
    for i in range(bins):
        sel = b == i
        if sel.any():
            total += sel.float().mean().item() * abs(correct[sel].float().mean().item() - conf[sel].mean().item())
    return total


def test_a_keyframe_whose_labels_are_all_wrong_loses_weight_and_the_correct_ones_decide():
    """Views 0-2 are right, view 3 names the next class everywhere. On 400 of the 2000 rays only view 0 and
    view 3 see the surface: averaging ties there (the S-Ray logits, random, decide), reliability fusion
    follows view 0 because view 3 contradicts the consensus everywhere else."""
    gen = torch.Generator().manual_seed(0)
    truth = torch.randint(0, K, (2000,), generator=gen)
    labels = torch.stack([truth, truth, truth, (truth + 1) % K], 1)
    seen = torch.ones(2000, 4, dtype=torch.bool)
    seen[:400, 1:3] = False
    ev = votes_from_labels(labels, seen)
    logits = torch.randn(2000, K, generator=gen) * 0.5
    acc = torch.ones(2000)
    fused = fuse_reliable(logits, ev, acc)
    assert torch.equal(fused.labels, truth)
    assert fused.reliability[3] < 0.2 and bool((fused.reliability[:3] > 0.95).all())
    average = fuse_with_logits(logits, ev, acc)
    assert (average.labels[:400] == truth[:400]).float().mean() < 0.8  # the tie the old rule cannot break


def test_a_class_one_keyframe_gets_wrong_loses_weight_for_that_class_only():
    """View 2 calls every class-1 surface class 4 (a systematic confusion); its other classes stay trusted."""
    gen = torch.Generator().manual_seed(1)
    truth = torch.randint(0, K, (3000,), generator=gen)
    bad = torch.where(truth == 1, torch.full_like(truth, 4), truth)
    labels = torch.stack([truth, truth, bad], 1)
    seen = torch.ones(3000, 3, dtype=torch.bool)
    seen[:1000, 1] = False  # there only views 0 and 2 vote: a tie on class-1 surfaces unless view 2's "4" is distrusted
    fused = fuse_reliable(torch.zeros(3000, K), votes_from_labels(labels, seen), torch.ones(3000))
    assert torch.equal(fused.labels, truth)


def test_keyframes_that_agree_keep_equal_weights_and_the_vote_is_the_majority():
    gen = torch.Generator().manual_seed(2)
    truth = torch.randint(0, K, (1500,), generator=gen)
    labels = truth[:, None].expand(-1, 6).clone()
    fused = fuse_reliable(torch.randn(1500, K, generator=gen), votes_from_labels(labels), torch.ones(1500))
    assert torch.equal(fused.labels, truth)
    assert float(fused.reliability.max() - fused.reliability.min()) < 1e-6
    assert float(fused.confidence.min()) > 0.999  # six agreeing, reliable keyframes


def test_fusion_does_not_depend_on_keyframe_order():
    gen = torch.Generator().manual_seed(3)
    truth = torch.randint(0, K, (1000,), generator=gen)
    noisy = torch.where(torch.rand(1000, 5, generator=gen) < 0.4, torch.randint(0, K, (1000, 5), generator=gen),
                        truth[:, None])
    seen = torch.rand(1000, 5, generator=gen) < 0.8
    ev = votes_from_labels(noisy, seen)
    logits, acc = torch.randn(1000, K, generator=gen), torch.ones(1000)
    a = fuse_reliable(logits, ev, acc)
    perm = torch.tensor([3, 0, 4, 2, 1])
    b = fuse_reliable(logits, LabelEvidence(ev.evidence, ev.mass, ev.view_votes[:, perm], ev.view_mass[:, perm]), acc)
    assert torch.allclose(a.log_probs, b.log_probs, atol=1e-5)
    assert torch.allclose(a.reliability[perm], b.reliability, atol=1e-6)


def test_random_noise_averages_out_and_the_confidence_is_calibrated_unlike_the_average_rule():
    """8 keyframes, each pixel label wrong with probability 0.5 (a random other class): the one-coin model is
    the generating process, so its confidence is calibrated (ECE < 0.03); today's rule (beta 10) is not."""
    gen = torch.Generator().manual_seed(4)
    r, m = 20000, 8
    truth = torch.randint(0, K, (r,), generator=gen)
    wrong = torch.rand(r, m, generator=gen) < 0.5
    other = (truth[:, None] + torch.randint(1, K, (r, m), generator=gen)) % K
    labels = torch.where(wrong, other, truth[:, None])
    ev = votes_from_labels(labels)
    logits, acc = torch.zeros(r, K), torch.ones(r)
    rel = fuse_reliable(logits, ev, acc)
    avg = fuse_with_logits(logits, ev, acc)
    rel_ece = ece(rel.confidence, rel.labels == truth)
    avg_ece = ece(avg.confidence, avg.labels == truth)
    # a plurality of 8 such labels is right about 4 times in 5; reliability loses nothing against averaging
    assert (rel.labels == truth).float().mean() > 0.78
    assert (rel.labels == truth).float().mean() >= (avg.labels == truth).float().mean() - 0.005
    assert rel_ece < 0.03 and avg_ece > 2 * rel_ece, (rel_ece, avg_ece)
    # thresholding the confidence removes wrong pixels first: the kept pixels are more often right
    keep = rel.confidence >= 0.9
    assert (rel.labels[keep] == truth[keep]).float().mean() > (rel.labels == truth).float().mean()


def test_a_ray_without_evidence_keeps_sray_exactly_and_missing_view_votes_are_an_error():
    logits = torch.randn(4, K)
    ev = votes_from_labels(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 3, dtype=torch.bool))
    fused = fuse_reliable(logits, ev, torch.ones(4))
    assert torch.allclose(fused.log_probs, torch.log_softmax(logits, -1), atol=1e-6)
    with pytest.raises(ValueError, match="per-view votes"):
        fuse_reliable(logits, LabelEvidence(ev.evidence, ev.mass), torch.ones(4))
    with pytest.raises(ValueError, match="prior_accuracy"):
        ReliabilityPrior(prior_accuracy=1.0)
    with pytest.raises(ValueError, match="fusion must be"):
        LabelTransferConfig(fusion="vote")


def test_confidence_zero_removes_a_pixels_vote_and_scales_it_otherwise():
    labels = torch.tensor([[[1, 2], [3, 255]]], dtype=torch.uint8)
    conf = torch.tensor([[[0.0, 0.5], [1.0, 1.0]]])
    maps = label_distribution_maps(labels, K, confidence=conf).view(2, 2, K)
    assert float(maps[0, 0].sum()) == 0.0  # confidence 0: no evidence at all
    assert torch.allclose(maps[0, 1], 0.5 * torch.nn.functional.one_hot(torch.tensor(2), K).float())
    assert maps[1, 0, 3] == 1.0 and float(maps[1, 1].sum()) == 0.0  # unknown stays unknown
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label_distribution_maps(labels, K, confidence=conf + 0.6)
    with pytest.raises(ValueError, match="like the labels"):
        label_distribution_maps(labels, K, confidence=conf[:, :1])


def test_a_zero_confidence_keyframe_changes_nothing_through_transfer_and_fusion():
    """Through ``transfer_labels``: the toy plane seen by two keyframes, plus a third whose (wrong) labels
    carry confidence 0: fused labels, confidence and per-view reliability of the others are as without it."""
    from test_label_transfer import H, K_TOY, W, render_plane, toy_camera, toy_labels

    cams = torch.stack([toy_camera(-0.2), toy_camera(0.2), toy_camera(0.1)])
    labels = torch.stack([toy_labels(c) for c in cams[:2]] + [torch.full((H, W), 0, dtype=torch.uint8)])
    o, d, _, _, t = render_plane(toy_camera(0.0))
    points = (o + d * t[:, None])[:, None, :]
    ones = torch.ones(points.shape[0], 1)
    cfg = LabelTransferConfig("uniform")
    conf = torch.ones(3, H, W)
    conf[2] = 0.0
    with_zero = transfer_labels(label_distribution_maps(labels, K, confidence=conf), K_TOY.expand(3, 3, 3), cams,
                                H, W, points, ones, cfg)
    without = transfer_labels(label_distribution_maps(labels[:2], K), K_TOY.expand(2, 3, 3), cams[:2], H, W,
                              points, ones, cfg)
    logits, acc = torch.zeros(points.shape[0], K), torch.ones(points.shape[0])
    a, b = fuse_reliable(logits, with_zero, acc), fuse_reliable(logits, without, acc)
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.confidence, b.confidence, atol=1e-6)
    assert torch.allclose(a.reliability[:2], b.reliability, atol=1e-6)


@pytest.mark.parametrize("view_scale", [1, 3])
def test_render_view_fuses_with_reliability_by_default_also_when_upsampling(view_scale):
    """render_view's default fusion is reliability, on the exact path and on the upsampled one (view_scale 3:
    per-view votes are upsampled like the other per-ray outputs); a labelled source at the target pose gives
    its labels back where it has them."""
    from test_label_transfer import H, K_TOY, NUM_CLASSES, W, _sources, random_labels, toy_camera

    from sray_ros.model import SRay, SRayConfig, SourceViews, render_view

    torch.manual_seed(0)
    tiny = SRay(SRayConfig.tiny(num_classes=NUM_CLASSES)).eval()
    target = toy_camera(0.05)
    labels = random_labels(3)
    src = SourceViews.cat([_sources(tiny, [0.05], labels, depths=True), _sources(tiny, [-0.3, 0.3], depths=True)])
    src.c2w[0] = target
    assert LabelTransferConfig().fusion == "reliability"
    view = render_view(tiny, src, K_TOY, target, H, W, near=1.0, far=4.0, sampling="depth_guided",
                       view_scale=view_scale, label_transfer=LabelTransferConfig("depth", depth_test="unoccluded"))
    known = labels[0] != 255
    agree = (view.labels[known] == labels[0].long()[known]).float().mean()
    assert agree > (0.99 if view_scale == 1 else 0.8), agree  # upsampling blurs votes across pixel edges


def test_a_sure_but_wrong_sray_is_outvoted_by_one_keyframe_and_says_little_where_nobody_votes():
    """S-Ray says class (truth + 1) with log-odds 30 everywhere (a peaked semantic prior on a room it does not
    know); one keyframe labels rays 0-799 correctly. The mixture weight fitted to the keyframe's labels is
    small, so the keyframe decides where it votes, and on rays 800-999 (no vote) S-Ray's sure answer becomes a
    low confidence (< 0.3 with 5 classes; it was ~1). Without the mixture S-Ray's 30 log-units out-vote the
    keyframe everywhere."""
    gen = torch.Generator().manual_seed(5)
    truth = torch.randint(0, K, (1000,), generator=gen)
    logits = torch.nn.functional.one_hot((truth + 1) % K, K).float() * 30.0
    seen = torch.zeros(1000, 1, dtype=torch.bool)
    seen[:800] = True
    ev = votes_from_labels(truth[:, None], seen)
    fused = fuse_reliable(logits, ev, torch.ones(1000))
    assert torch.equal(fused.labels[:800], truth[:800])
    assert fused.sray_weight < 0.05 and float(fused.confidence[800:].max()) < 0.3
    plain = fuse_reliable(logits, ev, torch.ones(1000), sray_mixture=False)
    assert (plain.labels[:800] == truth[:800]).float().mean() == 0.0


def test_a_class_no_keyframe_shows_is_not_predicted_where_nobody_votes():
    """The keyframes label rays 0-899 with classes 0 and 1 (S-Ray agrees there); on rays 900-999, which no
    keyframe sees, S-Ray leans to class 3 (log-odds 2 over class 0) though nothing in view is class 3. The
    view's class marginal (from the keyframes) makes those rays class 0; without it they would be class 3."""
    gen = torch.Generator().manual_seed(7)
    truth = torch.randint(0, 2, (1000,), generator=gen)
    logits = torch.nn.functional.one_hot(truth, K).float() * 5.0
    logits[900:] = 0.0
    logits[900:, 3], logits[900:, 0] = 3.0, 1.0
    seen = torch.zeros(1000, 2, dtype=torch.bool)
    seen[:900] = True
    ev = votes_from_labels(truth[:, None].expand(-1, 2), seen)
    fused = fuse_reliable(logits, ev, torch.ones(1000))
    assert torch.equal(fused.labels[:900], truth[:900]) and (fused.labels[900:] == 0).all()
    assert (fuse_reliable(logits, ev, torch.ones(1000), class_prior=False).labels[900:] == 3).all()


def test_a_right_sray_keeps_its_weight():
    gen = torch.Generator().manual_seed(6)
    truth = torch.randint(0, K, (1000,), generator=gen)
    logits = torch.nn.functional.one_hot(truth, K).float() * 8.0
    fused = fuse_reliable(logits, votes_from_labels(truth[:, None]), torch.ones(1000))
    assert fused.sray_weight > 0.95 and torch.equal(fused.labels, truth)


def test_a_class_no_keyframe_shows_is_still_predicted_where_sray_is_sure_of_it():
    """As above, but S-Ray is sure of class 3 on the unlabelled rays (p ~ 0.999; it agrees with the
    keyframes everywhere else): the floored class marginal lets it through, so a new object entering the
    view is not painted with the majority class."""
    gen = torch.Generator().manual_seed(8)
    truth = torch.randint(0, 2, (1000,), generator=gen)
    logits = torch.nn.functional.one_hot(truth, K).float() * 9.0
    logits[900:] = torch.nn.functional.one_hot(torch.full((100,), 3), K).float() * 9.0
    seen = torch.zeros(1000, 2, dtype=torch.bool)
    seen[:900] = True
    fused = fuse_reliable(logits, votes_from_labels(truth[:, None].expand(-1, 2), seen), torch.ones(1000))
    assert torch.equal(fused.labels[:900], truth[:900]) and (fused.labels[900:] == 3).all()


def test_one_ray_with_nan_or_inf_logits_spoils_nothing_else():
    """A non-finite logit on one ray gives that ray a uniform S-Ray term; the fit of S-Ray's share and every
    other ray are unaffected (before, the shared fit became NaN and every pixel came out class 0)."""
    gen = torch.Generator().manual_seed(9)
    truth = torch.randint(0, K, (200,), generator=gen)
    logits = torch.nn.functional.one_hot(truth, K).float() * 4.0
    ev = votes_from_labels(truth[:, None].expand(-1, 3))
    clean = fuse_reliable(logits, ev, torch.ones(200))
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = logits.clone()
        broken[0, 1] = bad
        fused = fuse_reliable(broken, ev, torch.ones(200))
        assert torch.equal(fused.labels, truth) and torch.isfinite(fused.confidence).all()
        assert abs(fused.sray_weight - clean.sray_weight) < 0.01
