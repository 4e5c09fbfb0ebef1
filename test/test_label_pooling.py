"""Spatial pooling of a keyframe's labels (sray_ros.model.label_pooling): noise level estimated from the labels,
pooling as far as that noise needs, borders between surfaces kept, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sray_ros.model.label_pooling import (LabelPoolingConfig, estimate_label_accuracy, pool_labels,
                                          pool_source_labels, pooling_radius)

K = 20
H, W = 48, 64


def two_surfaces(m: int = 1):
    """``m`` keyframes of a wall (left, grey, 2 m, class 1) and a cabinet (right, brown, 1.5 m, class 3)."""
    images = torch.zeros(m, 3, H, W)
    images[:, :, :, : W // 2] = 0.6
    images[:, 0, :, W // 2:], images[:, 1, :, W // 2:], images[:, 2, :, W // 2:] = 0.5, 0.3, 0.1
    depths = torch.full((m, H, W), 2.0)
    depths[:, :, W // 2:] = 1.5
    labels = torch.ones(m, H, W, dtype=torch.uint8)
    labels[:, :, W // 2:] = 3
    return labels, images, depths


def pixel_noise(labels: torch.Tensor, rate: float, seed: int = 0) -> torch.Tensor:
    """Exactly ``rate`` of the pixels get a random *other* class (the benchmark's pixel-noise task)."""
    rng = np.random.default_rng(seed)
    out = labels.numpy().copy()
    flat = out.reshape(-1)
    idx = rng.choice(flat.size, int(round(rate * flat.size)), replace=False)
    flat[idx] = (flat[idx] + rng.integers(1, K, idx.size)) % K
    return torch.from_numpy(out)


def test_clean_labels_are_kept_exactly_and_pool_over_nothing():
    labels, images, depths = two_surfaces(2)
    out = pool_labels(labels, images, depths, K)
    assert torch.equal(out.labels, labels)
    assert out.radius.tolist() == [0, 0]
    assert (out.accuracy > 0.99).all()
    # with nothing pooled the keyframe is left as it came: confidence 1 (no segmenter confidence given)
    assert (out.confidence == 1).all()
    conf = torch.rand(2, H, W)
    torch.testing.assert_close(pool_labels(labels, images, depths, K, confidence=conf).confidence, conf)


@pytest.mark.parametrize("rate", [0.5, 0.9])
def test_the_label_accuracy_is_estimated_from_the_labels_alone(rate):
    labels, images, depths = two_surfaces()
    a = estimate_label_accuracy(pixel_noise(labels, rate).long(), images, depths, K)
    assert abs(float(a) - (1 - rate)) < 0.03


def test_the_radius_follows_the_noise():
    """sized so that the true class keeps a plurality with probability ~99 % (20 classes): none for clean
    labels, 2 px (25 votes) at 50 % pixel noise, 12 px (625 votes; 562 needed) at 90 %, never over max_radius"""
    cfg = LabelPoolingConfig()
    r = pooling_radius(torch.tensor([0.999, 0.5, 0.1]), K, cfg)
    assert r.tolist() == [0, 2, 12]
    assert pooling_radius(torch.tensor([0.06]), K, LabelPoolingConfig(max_radius=20)).item() == 20
    assert pooling_radius(torch.tensor([0.1]), K, LabelPoolingConfig(max_radius=3)).item() == 3


@pytest.mark.parametrize("rate, min_accuracy, min_border", [(0.5, 0.99, 0.97), (0.9, 0.95, 0.7)])
def test_random_pixel_noise_is_pooled_away_and_the_border_stays(rate, min_accuracy, min_border):
    """The border between the surfaces (another colour and depth) stays: no pixel takes the other surface's
    class. Pixels at the border see half a window of their own surface (a quarter at the image's corners),
    so at 90 % noise fewer of them get enough votes (measured 0.77 for the two border columns)."""
    labels, images, depths = two_surfaces()
    noisy = pixel_noise(labels, rate)
    out = pool_labels(noisy, images, depths, K)
    assert (out.labels == labels).float().mean() >= min_accuracy
    assert not (out.labels[0, :, : W // 2] == 3).any() and not (out.labels[0, :, W // 2:] == 1).any()
    border = out.labels[0, :, W // 2 - 1: W // 2 + 1] == labels[0, :, W // 2 - 1: W // 2 + 1]
    assert border.float().mean() >= min_border
    # the confidence says how sure: lower than for clean labels, higher where the label is right
    right = out.labels == labels
    assert out.confidence[right].mean() > out.confidence[~right].mean()


def test_a_wrong_region_is_left_to_the_other_keyframes():
    """A segmenter that calls the whole cabinet 'desk' is consistent within the frame: its estimated accuracy
    stays high, nothing is pooled, and the region keeps its (wrong) label for the cross-view vote to judge."""
    labels, images, depths = two_surfaces()
    wrong = labels.clone()
    wrong[:, :, W // 2:] = 13
    out = pool_labels(wrong, images, depths, K)
    assert out.radius.item() == 0 and torch.equal(out.labels, wrong)


def test_keyframes_are_pooled_independently_of_each_other():
    labels, images, depths = two_surfaces(3)
    noisy = torch.stack([pixel_noise(labels[:1], r, seed=i)[0] for i, r in enumerate((0.0, 0.5, 0.9))])
    batch = pool_labels(noisy, images, depths, K)
    for i in range(3):
        alone = pool_labels(noisy[i:i + 1], images[i:i + 1], depths[i:i + 1], K)
        assert torch.equal(batch.labels[i], alone.labels[0])
        torch.testing.assert_close(batch.confidence[i], alone.confidence[0])


def test_confidence_zero_pixels_cast_no_vote_and_unlabelled_pixels_stay_unknown():
    labels, images, depths = two_surfaces()
    conf = torch.ones(1, H, W)
    conf[:, :, :8] = 0.0
    labels = labels.clone()
    labels[:, :4, 8:] = 255
    out = pool_labels(labels, images, depths, K, confidence=conf)
    assert (out.labels[:, :, :8] == 255).all() and (out.confidence[:, :, :8] == 0).all()
    assert (out.labels[:, :4, 8:] == 255).all()
    everything_off = pool_labels(labels, images, depths, K, confidence=torch.zeros(1, H, W))
    assert (everything_off.labels == 255).all() and (everything_off.confidence == 0).all()


def test_without_depth_colour_alone_keeps_the_border():
    labels, images, _ = two_surfaces()
    out = pool_labels(pixel_noise(labels, 0.5), images, None, K)
    assert (out.labels == labels).float().mean() >= 0.99


def test_max_radius_zero_keeps_noisy_labels_as_they_are():
    labels, images, depths = two_surfaces()
    noisy = pixel_noise(labels, 0.5)
    out = pool_labels(noisy, images, depths, K, cfg=LabelPoolingConfig(max_radius=0))
    assert torch.equal(out.labels, noisy)


def test_source_views_get_pooled_labels_and_their_posterior():
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay

    labels, images, depths = two_surfaces(2)
    model = SRay(SRayConfig.tiny(num_classes=K)).eval()
    Ks = torch.tensor([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]]).expand(2, 3, 3)
    with torch.no_grad():
        views = model.encode_sources(images, Ks, torch.eye(4).expand(2, 4, 4), depths, pixel_noise(labels, 0.9))
    pooled = pool_source_labels(views, K)
    assert (pooled.labels == labels).float().mean() > 0.95 and pooled.label_confidence.shape == (2, H, W)
    assert pool_source_labels(pooled.__class__(**{**pooled.__dict__, "labels": None}), K).labels is None


@pytest.mark.parametrize("change, message", [
    (lambda l, i, d, c: (l[0], i, d, c), r"labels must be \[m, H, W\]"),
    (lambda l, i, d, c: (l, i[:, :2], d, c), "images must be"),
    (lambda l, i, d, c: (l, i, d[:, :5], c), "depths must be"),
    (lambda l, i, d, c: (torch.full_like(l, 20), i, d, c), r"label ids must be in \[0, 20\)"),
    (lambda l, i, d, c: (l, i, d, torch.full((1, H, W), 1.5)), r"confidence must be in \[0, 1\]"),
    (lambda l, i, d, c: (l, i, d, torch.ones(1, H, W + 1)), "confidence must be"),
    (lambda l, i, d, c: (l.float(), i, d, c), "labels must be integer class ids"),
    (lambda l, i, d, c: (l, (i * 255).to(torch.uint8), d, c), "images must be floating point"),
    (lambda l, i, d, c: (l, i * 255, d, c), r"images must be RGB in \[0, 1\]"),
])
def test_bad_input_is_refused_with_the_reason(change, message):
    labels, images, depths = two_surfaces()
    args = change(labels, images, depths, None)
    with pytest.raises(ValueError, match=message):
        pool_labels(*args[:3], K, confidence=args[3])


def test_bad_class_counts_accuracies_and_configs_are_refused():
    labels, images, depths = two_surfaces()
    for k in (0, 1, 256, 2.5, True):
        with pytest.raises(ValueError, match=r"num_classes must be an integer in \[2, 255\]"):
            pool_labels(labels, images, depths, k)
    for a in (float("nan"), 1.5, -0.1):
        with pytest.raises(ValueError, match=r"accuracy must be finite and in \[0, 1\]"):
            pooling_radius(torch.tensor([a]), K, LabelPoolingConfig())
    with pytest.raises(ValueError, match="cfg must be a LabelPoolingConfig"):
        pool_labels(labels, images, depths, K, cfg={"max_radius": 3})
    with pytest.raises(ValueError, match=r"label ids must be in \[0, 20\)"):
        estimate_label_accuracy(torch.full_like(labels, 30), images, depths, K)


def test_a_noisy_keyframe_does_not_fill_pixels_the_segmenter_left_out():
    """At 90 % pixel noise the keyframe pools over 12 px, yet a block of confidence 0 (and a block of 255)
    stays unlabelled: pooling denoises labels, it does not invent them where the segmenter gave none."""
    labels, images, depths = two_surfaces()
    noisy = pixel_noise(labels, 0.9)
    noisy[:, :10, 40:50] = 255
    conf = torch.ones(1, H, W)
    conf[:, 20:40, 5:25] = 0.0
    out = pool_labels(noisy, images, depths, K, confidence=conf)
    assert out.radius.item() == 12
    assert (out.labels[:, 20:40, 5:25] == 255).all() and (out.confidence[:, 20:40, 5:25] == 0).all()
    assert (out.labels[:, :10, 40:50] == 255).all()
    assert (out.labels[:, 40:, :] == labels[:, 40:, :]).float().mean() > 0.9


@pytest.mark.parametrize("kwargs, message", [
    ({"max_radius": -1}, "max_radius"), ({"max_radius": True}, "max_radius"), ({"max_radius": 65}, "max_radius"),
    ({"max_radius": float("nan")}, "max_radius"), ({"max_radius": 2.5}, "max_radius"), ({"error_rate": 0.0}, "error_rate"),
    ({"sigma_colour": 0.0}, "sigma_colour"), ({"sigma_depth": float("nan")}, "sigma_depth"),
    ({"same_surface": 1.0}, "same_surface"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LabelPoolingConfig(**kwargs)
