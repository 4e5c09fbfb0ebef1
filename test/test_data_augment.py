"""Training-input helpers (sray_ros.data.augment): class-balanced pixel sampling, photometric jitter."""

import numpy as np
import pytest

from sray_ros.data.augment import (ClassBalanceConfig, ClassBalancedPixelSampler, PhotometricConfig,
                                   PhotometricParams, augment_images, class_balance_weights, class_frequencies,
                                   expected_class_share, photometric_jitter)


def _view(counts: dict[int, int], side: int = 100) -> np.ndarray:
    """A [side, side] uint8 label map holding ``counts[c]`` pixels of class c (shuffled, fixed seed)."""
    flat = np.concatenate([np.full(n, c, np.uint8) for c, n in counts.items()])
    assert flat.size == side * side
    return np.random.default_rng(0).permutation(flat).reshape(side, side)


# ------------------------------------------------------------------ class balance


def test_class_frequencies_exclude_ignore_and_reject_unknown_ids():
    labels = _view({0: 5000, 1: 2500, 3: 1500, 255: 1000})
    np.testing.assert_allclose(class_frequencies(labels, 4), [5000 / 9000, 2500 / 9000, 0.0, 1500 / 9000])
    assert class_frequencies(np.full((4, 4), 255, np.uint8), 3).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="outside 0..3"):
        class_frequencies(np.array([[0, 7]], np.uint8), 4)
    with pytest.raises(ValueError, match="integer"):
        class_frequencies(np.zeros((2, 2), np.float32), 4)


def test_class_weights_inverse_frequency_power_and_cap():
    w = class_balance_weights(np.array([0.9, 0.09, 0.01, 0.0]))  # power 0.5, cap 10
    np.testing.assert_allclose(w, [1.0, 10 ** 0.5, 90 ** 0.5, 0.0])
    w = class_balance_weights(np.array([0.9, 0.0999, 0.0001]), ClassBalanceConfig(power=0.5, max_weight=10.0))
    assert w[2] == 10.0  # (1/9000) ** -0.5 = 94.9, capped
    np.testing.assert_allclose(class_balance_weights(np.array([0.5, 0.3, 0.2]), ClassBalanceConfig(power=0.0)), 1.0)
    with pytest.raises(ValueError, match="power"):
        ClassBalanceConfig(power=-1.0)
    with pytest.raises(ValueError, match="max_weight"):
        ClassBalanceConfig(max_weight=0.5)
    with pytest.raises(ValueError, match="non-negative"):
        class_balance_weights(np.array([0.5, -0.1]))


def test_balanced_sampling_raises_rare_class_share_by_documented_factor():
    labels = _view({0: 9000, 1: 900, 2: 100})  # wall 90 %, floor 9 %, toilet 1 %
    sampler = ClassBalancedPixelSampler.from_labels(labels, 3)
    # w = [1, sqrt(10), sqrt(90)]; toilet share = 0.01 sqrt(90) / (0.9 + 0.09 sqrt(10) + 0.01 sqrt(90)) = 0.0741
    share = expected_class_share(class_frequencies(labels, 3), sampler.class_weights)
    assert share[2] == pytest.approx(0.07414, abs=1e-4)
    assert share[2] / 0.01 == pytest.approx(7.414, abs=0.01)  # the oversampling factor
    n = 200_000
    pix = sampler.sample(labels, n, np.random.default_rng(1))
    got = np.bincount(labels.reshape(-1)[pix], minlength=3) / n
    sd = np.sqrt(share * (1 - share) / n)
    assert np.all(np.abs(got - share) < 5 * sd), (got, share)
    uniform = ClassBalancedPixelSampler.from_labels(labels, 3, ClassBalanceConfig(power=0.0))
    got_u = np.bincount(labels.reshape(-1)[uniform.sample(labels, n, np.random.default_rng(1))], minlength=3) / n
    assert abs(got_u[2] - 0.01) < 5 * np.sqrt(0.01 * 0.99 / n)


def test_sampling_ignore_weight_determinism_and_fallback():
    labels = _view({0: 6000, 1: 3000, 255: 1000})
    freq = class_frequencies(labels, 2)
    only_labelled = ClassBalancedPixelSampler(freq, ClassBalanceConfig(ignore_weight=0.0))
    pix = only_labelled.sample(labels, 5000, np.random.default_rng(0))
    assert pix.dtype == np.int64 and pix.min() >= 0 and pix.max() < labels.size
    assert not np.any(labels.reshape(-1)[pix] == 255)
    again = only_labelled.sample(labels, 5000, np.random.default_rng(0))
    np.testing.assert_array_equal(pix, again)
    # an unlabelled view with ignore weight 0: uniform pixels instead of an error
    blank = np.full((10, 10), 255, np.uint8)
    assert only_labelled.sample(blank, 7, np.random.default_rng(0)).shape == (7,)
    # default ignore weight 1: unlabelled pixels (10 %) drawn like the most frequent class,
    # share 1000 / (6000 + 3000 sqrt 2 + 1000)
    default = ClassBalancedPixelSampler(freq)
    n = 100_000
    got = np.mean(labels.reshape(-1)[default.sample(labels, n, np.random.default_rng(2))] == 255)
    want = expected_class_share(freq, default.class_weights, ignore_fraction=0.1)
    assert abs(got - (1 - want.sum())) < 0.005 and abs(1 - want.sum() - 1000 / (6000 + 3000 * 2 ** 0.5 + 1000)) < 1e-9
    with pytest.raises(ValueError, match="outside 0..1"):
        default.sample(np.full((3, 3), 5, np.uint8), 4, np.random.default_rng(0))


# ------------------------------------------------------------------ photometric


def _images(n=3, h=24, w=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_photometric_known_values():
    grey = np.full((4, 4, 3), 0.4, np.float32)
    np.testing.assert_allclose(photometric_jitter(grey, PhotometricParams(brightness=1.5)), 0.6, atol=1e-6)
    np.testing.assert_allclose(photometric_jitter(grey, PhotometricParams(brightness=3.0)), 1.0)  # clipped
    img = np.zeros((2, 2, 3), np.float32)
    img[0, 0] = [1.0, 0.0, 0.0]
    img[1, 1] = [0.2, 0.4, 0.6]
    flat = photometric_jitter(img, PhotometricParams(contrast=0.0))
    np.testing.assert_allclose(flat, np.full_like(img, flat[0, 0, 0]), atol=1e-6)  # all at the mean grey
    assert flat[0, 0, 0] == pytest.approx((0.299 + 0.2 * 0.299 + 0.4 * 0.587 + 0.6 * 0.114) / 4, abs=1e-6)
    g = photometric_jitter(img, PhotometricParams(saturation=0.0))
    np.testing.assert_allclose(g[1, 1], 0.2 * 0.299 + 0.4 * 0.587 + 0.6 * 0.114, atol=1e-6)
    red_to_green = photometric_jitter(img, PhotometricParams(hue=1 / 3))
    np.testing.assert_allclose(red_to_green[0, 0], [0.0, 1.0, 0.0], atol=1e-5)


def test_photometric_range_dtype_and_uint8_float_consistency():
    strong = PhotometricConfig(brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5)
    rng = np.random.default_rng(3)
    imgs = _images()
    for _ in range(20):
        p = PhotometricParams.draw(rng, strong)
        for u8 in imgs:
            f = u8.astype(np.float32) / np.float32(255.0)
            out_f = photometric_jitter(f, p)
            out_u = photometric_jitter(u8, p)
            assert out_f.dtype == np.float32 and out_u.dtype == np.uint8 and out_u.shape == u8.shape
            assert out_f.min() >= 0.0 and out_f.max() <= 1.0
            np.testing.assert_array_equal(out_u, np.round(out_f * 255.0).astype(np.uint8))
    f64 = imgs[0].astype(np.float64) / 255.0
    assert photometric_jitter(f64, PhotometricParams(brightness=0.5)).dtype == np.float64


def test_photometric_identity_deterministic_and_input_untouched():
    imgs = _images()
    keep = imgs.copy()
    np.testing.assert_array_equal(photometric_jitter(imgs[0], PhotometricParams()), imgs[0])
    f = imgs[1].astype(np.float64) / 255.0
    np.testing.assert_array_equal(photometric_jitter(f, PhotometricParams()), f)
    ident, _ = augment_images(imgs, 0, PhotometricConfig(0.0, 0.0, 0.0, 0.0))
    np.testing.assert_array_equal(ident, imgs)
    a, pa = augment_images(imgs, 5)
    b, pb = augment_images(imgs, np.random.default_rng(5))
    c, pc = augment_images(imgs, 6)
    np.testing.assert_array_equal(a, b)
    assert pa == pb and pa != pc and not np.array_equal(a, c)
    assert len({(p.brightness, p.hue) for p in pa}) == 3  # one draw per image
    np.testing.assert_array_equal(imgs, keep)  # the preloaded scene colours stay clean
    assert np.abs(a.astype(int) - imgs).mean() > 1.0


def test_photometric_rejects_labels_depth_and_bad_values():
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        photometric_jitter(np.zeros((24, 32), np.uint8), PhotometricParams())  # a label map
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        augment_images(np.zeros((2, 24, 32), np.float32), 0)  # depth maps
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        photometric_jitter(np.full((2, 2, 3), 1.5, np.float32), PhotometricParams())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        photometric_jitter(np.full((2, 2, 3), np.nan, np.float32), PhotometricParams())
    with pytest.raises(ValueError, match="dtype"):
        photometric_jitter(np.zeros((2, 2, 3), np.uint16), PhotometricParams())
    with pytest.raises(ValueError, match="brightness"):
        PhotometricConfig(brightness=1.2)
    with pytest.raises(ValueError, match="hue"):
        PhotometricConfig(hue=0.7)
