"""Training-input helpers: class-balanced ray sampling and photometric augmentation (numpy, no torch).

Class-balanced ray sampling
    Semantic classes are very unequal in indoor scenes (walls and floors cover most pixels; toilets,
    counters and shower curtains well under 1 %), so uniformly drawn query rays rarely teach the rare
    classes. Each pixel of class ``c`` gets the sampling weight

        w_c = min((f_c / f_max) ** -power, max_weight)

    where ``f_c`` is the class's share of the labelled pixels (of a scene, or of a dataset) and
    ``f_max`` that of the most frequent class: the most frequent class keeps weight 1, rarer classes
    are oversampled by inverse frequency to the ``power`` (0: uniform pixels, 1: every class about
    equally often), at most ``max_weight`` times. Pixels without a label (``ignore_index``) get
    ``ignore_weight`` (default 1, i.e. like the most frequent class; 0 draws labelled pixels only).
    A class's share of the sampled rays becomes ``f_c w_c / sum_k f_k w_k`` (:func:`expected_class_share`);
    its oversampling factor over uniform sampling is ``w_c / sum_k f_k w_k``.
    Defaults: ``power = 0.5``, ``max_weight = 10``. Take ``f_c`` over the whole training set rather than
    per scene: a class that is rare in the dataset (toilet) is often common in the scenes that hold it.

Photometric augmentation
    Brightness, contrast, saturation and hue jitter (the ColorJitter family), one draw per image and
    applied to the whole image, deterministic for a seed / ``numpy.random.Generator``. Only colour
    images ``[..., H, W, 3]`` are accepted: labels and depth are never altered. A query view's colours
    must be augmented as an image (:func:`photometric_jitter`) *before* its ray colours are gathered, so
    that contrast uses the image's mean grey, as it does for the source views.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


# ----------------------------------------------------------------------------- class-balanced sampling


@dataclass(frozen=True)
class ClassBalanceConfig:
    """Class-balanced ray sampling: ``w_c = min((f_c / f_max) ** -power, max_weight)`` (module docstring)."""

    power: float = 0.5
    max_weight: float = 10.0
    ignore_weight: float = 1.0

    def __post_init__(self):
        if not (np.isfinite(self.power) and self.power >= 0.0):
            raise ValueError(f"power must be finite and >= 0 (0 = uniform pixels), got {self.power}")
        if not (np.isfinite(self.max_weight) and self.max_weight >= 1.0):
            raise ValueError(f"max_weight must be finite and >= 1 (the most frequent class has 1), "
                             f"got {self.max_weight}")
        if not (np.isfinite(self.ignore_weight) and self.ignore_weight >= 0.0):
            raise ValueError(f"ignore_weight must be finite and >= 0, got {self.ignore_weight}")


def _check_labels(labels: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer class-id array, got dtype {labels.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise ValueError(f"labels hold ids outside 0..{num_classes - 1} that are not ignore_index={ignore_index}: "
                         f"{np.unique(labels[bad])[:10].tolist()}")
    return labels


def class_frequencies(labels: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Share of each class among the labelled pixels.

    Args:
        labels: integer class ids, any shape (e.g. a scene's ``[N, H, W]``); ``ignore_index`` = no label.
        num_classes: C; every other id must lie in ``0..C-1``.
    Returns:
        ``[C]`` float64 summing to 1 (all zeros when no pixel is labelled).
    Raises:
        ValueError: non-integer labels or ids outside ``0..C-1`` other than ``ignore_index``.
    """
    labels = _check_labels(labels, num_classes, ignore_index)
    valid = labels[labels != ignore_index].astype(np.int64)
    counts = np.bincount(valid.reshape(-1), minlength=num_classes).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def class_balance_weights(freq: np.ndarray, config: ClassBalanceConfig = ClassBalanceConfig()) -> np.ndarray:
    """Per-class pixel sampling weights ``w_c = min((f_c / f_max) ** -power, max_weight)``, ``[C]`` float64.

    Classes with ``f_c = 0`` (no pixels) get weight 0; all zeros when ``freq`` is all zeros.
    Raises ``ValueError`` for a negative or non-finite frequency.
    """
    freq = np.asarray(freq, np.float64)
    if freq.ndim != 1 or not np.all(np.isfinite(freq)) or np.any(freq < 0):
        raise ValueError(f"freq must be a 1-D array of finite non-negative class frequencies, got {freq!r}")
    w = np.zeros_like(freq)
    present = freq > 0
    if present.any():
        rel = freq[present] / freq.max()
        w[present] = np.minimum(rel ** -config.power, config.max_weight)
    return w


def expected_class_share(freq: np.ndarray, weights: np.ndarray, ignore_fraction: float = 0.0,
                         ignore_weight: float = 1.0) -> np.ndarray:
    """Expected share of sampled rays per class, ``[C]``: ``p_c f_c w_c / Z``.

    ``freq`` are shares among labelled pixels and ``ignore_fraction`` the share of unlabelled pixels
    of all pixels (``p_c = 1 - ignore_fraction``); ``Z`` normalises over classes and unlabelled pixels.
    """
    freq, weights = np.asarray(freq, np.float64), np.asarray(weights, np.float64)
    labelled = (1.0 - ignore_fraction) * freq * weights
    z = labelled.sum() + ignore_fraction * ignore_weight
    return labelled / z if z > 0 else labelled


class ClassBalancedPixelSampler:
    """Draws query pixels of one view with class-balanced probabilities (module docstring).

    Args:
        class_freq: ``[C]`` class shares (:func:`class_frequencies` of a scene's or a dataset's labels).
        config: power / cap / weight of unlabelled pixels.
        ignore_index: the no-label id in the label maps given to :meth:`sample`.
    The weights are a 256-entry lookup table over uint8 ids; per call the cost is one lookup and one
    cumulative sum over the view's pixels (nothing per view is cached: memory stays flat for any dataset).
    """

    def __init__(self, class_freq: np.ndarray, config: ClassBalanceConfig = ClassBalanceConfig(),
                 ignore_index: int = 255):
        self.config = config
        self.class_weights = class_balance_weights(class_freq, config)
        self.num_classes = len(self.class_weights)
        if not 0 <= ignore_index <= 255 or self.num_classes > 256:
            raise ValueError(f"labels are uint8 ids: need ignore_index in 0..255 and <= 256 classes, "
                             f"got ignore_index={ignore_index}, {self.num_classes} classes")
        self.ignore_index = ignore_index
        lut = np.zeros(256, np.float64)
        lut[:self.num_classes] = self.class_weights
        lut[ignore_index] = config.ignore_weight
        self._lut = lut

    @classmethod
    def from_labels(cls, labels: np.ndarray, num_classes: int, config: ClassBalanceConfig = ClassBalanceConfig(),
                    ignore_index: int = 255) -> "ClassBalancedPixelSampler":
        """Sampler weighted by the class frequencies of ``labels`` (e.g. one scene's ``[N, H, W]``)."""
        return cls(class_frequencies(labels, num_classes, ignore_index), config, ignore_index)

    def pixel_weights(self, labels: np.ndarray) -> np.ndarray:
        """Sampling weight of every pixel of ``labels`` (uint8 ids, any shape), float64 of the same shape.

        Ids outside ``0..C-1`` other than ``ignore_index`` raise ``ValueError``.
        """
        labels = _check_labels(labels, self.num_classes, self.ignore_index)
        return self._lut[labels]

    def sample(self, labels: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
        """``num`` flat pixel indices (``row * W + col``, int64, with replacement) of one view's ``[H, W]`` labels.

        Falls back to uniform pixels when every weight is 0 (e.g. ``ignore_weight = 0`` and an
        unlabelled view). Deterministic for a given ``rng`` state.
        """
        if num < 0:
            raise ValueError(f"num must be >= 0, got {num}")
        w = self.pixel_weights(labels).reshape(-1)
        cdf = np.cumsum(w)
        if cdf.size == 0:
            raise ValueError("labels is empty: no pixel to sample")
        if cdf[-1] <= 0:
            return rng.integers(0, cdf.size, num)
        return np.minimum(np.searchsorted(cdf, rng.random(num) * cdf[-1], side="right"), cdf.size - 1)


# ----------------------------------------------------------------------------- photometric augmentation


@dataclass(frozen=True)
class PhotometricConfig:
    """Jitter ranges: brightness gain, contrast and saturation factors drawn from ``U[1 - x, 1 + x]``,
    hue shift from ``U[-hue, hue]`` in turns (0.5 = 180 deg). All zeros = identity."""

    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    hue: float = 0.03

    def __post_init__(self):
        for name in ("brightness", "contrast", "saturation"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0.0 <= v < 1.0):
                raise ValueError(f"{name} must be in [0, 1) (factor range [1 - x, 1 + x]), got {v}")
        if not (np.isfinite(self.hue) and 0.0 <= self.hue <= 0.5):
            raise ValueError(f"hue must be in [0, 0.5] turns, got {self.hue}")


@dataclass(frozen=True)
class PhotometricParams:
    """One image's jitter: factors (1 = unchanged) and a hue shift in turns (0 = unchanged)."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0

    @staticmethod
    def draw(rng: np.random.Generator, config: PhotometricConfig = PhotometricConfig()) -> "PhotometricParams":
        u = rng.uniform(-1.0, 1.0, 4)  # always four draws: the stream does not depend on the ranges
        return PhotometricParams(1.0 + config.brightness * u[0], 1.0 + config.contrast * u[1],
                                 1.0 + config.saturation * u[2], config.hue * u[3])


def _grey(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def photometric_jitter(image: np.ndarray, params: PhotometricParams) -> np.ndarray:
    """Apply one image's jitter: brightness (gain), contrast (about the image's mean grey), saturation
    (blend with the pixel's grey), hue (rotation in HSV), in this order, clipping to [0, 1] after each.

    Args:
        image: ``[H, W, 3]`` RGB, uint8 or float in [0, 1]. Not modified.
        params: the draw for this image (:meth:`PhotometricParams.draw`).
    Returns:
        A new image of the same shape and dtype (uint8: rounded from the float result).
    Raises:
        ValueError: not ``[H, W, 3]`` (e.g. a label or depth map), a float image outside [0, 1] or
            non-finite, or a dtype other than uint8 / float.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"photometric_jitter takes one RGB image [H, W, 3], got shape {image.shape} "
                         "(labels and depth are never augmented)")
    if image.dtype == np.uint8:
        x = image.astype(np.float32) * np.float32(1.0 / 255.0)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)) or image.min(initial=0.0) < 0.0 or image.max(initial=0.0) > 1.0:
            raise ValueError("a float image must be finite and in [0, 1]")
        x = image.astype(np.float64 if image.dtype == np.float64 else np.float32, copy=True)
    else:
        raise ValueError(f"image dtype must be uint8 or float in [0, 1], got {image.dtype}")
    if params.brightness != 1.0:
        x = np.clip(x * np.float32(params.brightness), 0.0, 1.0)
    if params.contrast != 1.0:
        mean = np.float32(_grey(x).mean())
        x = np.clip(mean + np.float32(params.contrast) * (x - mean), 0.0, 1.0)
    if params.saturation != 1.0:
        g = _grey(x)[..., None]
        x = np.clip(g + np.float32(params.saturation) * (x - g), 0.0, 1.0)
    if params.hue != 0.0:
        hsv = cv2.cvtColor(np.ascontiguousarray(x, np.float32), cv2.COLOR_RGB2HSV)  # H in [0, 360) degrees
        hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(360.0 * params.hue), 360.0)
        x = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0).astype(x.dtype, copy=False)
    if image.dtype == np.uint8:
        return np.round(x * 255.0).astype(np.uint8)
    return x.astype(image.dtype, copy=False)


def augment_images(images: np.ndarray, rng: np.random.Generator | int,
                   config: PhotometricConfig = PhotometricConfig()) -> tuple[np.ndarray, list[PhotometricParams]]:
    """Jitter each image of ``images [N, H, W, 3]`` (uint8 or float in [0, 1]) with its own draw.

    ``rng``: a ``numpy.random.Generator`` (advanced by 4 draws per image) or an int seed. Returns the
    new images (same shape and dtype; the input is not modified) and the N draws, in order.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"augment_images takes RGB images [N, H, W, 3], got shape {images.shape} "
                         "(labels and depth are never augmented)")
    gen = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
    params = [PhotometricParams.draw(gen, config) for _ in range(images.shape[0])]
    out = np.empty_like(images)
    for i, p in enumerate(params):
        out[i] = photometric_jitter(images[i], p)
    return out, params
