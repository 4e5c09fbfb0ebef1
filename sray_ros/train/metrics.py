"""Semantic and photometric metrics.

Two mIoU definitions are provided and named explicitly, because papers differ:
* **dataset-level mIoU** (:meth:`ConfusionMatrix.miou`): IoU per class from the confusion matrix summed
  over all frames, averaged over classes that occur (in GT or prediction) anywhere in the dataset.
* **per-frame mIoU** (:meth:`ConfusionMatrix.frame_miou`): for each frame, mean IoU over classes present
  in that frame's GT or prediction; then the mean over frames.
Pixels whose GT is the ignore label are excluded from everything.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sray_ros.data.label_sets import IGNORE_INDEX


def confusion_matrix(pred: Tensor | np.ndarray, gt: Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``[K, K]`` int64 counts, rows = ground truth, columns = prediction; ignore-label GT pixels skipped.
    GT ids outside ``[0, K)`` other than the ignore label raise ValueError; predictions outside are an error too."""
    p = torch.as_tensor(pred).reshape(-1).long().cpu()
    g = torch.as_tensor(gt).reshape(-1).long().cpu()
    if p.shape != g.shape:
        raise ValueError(f"prediction and ground truth differ in size: {p.numel()} vs {g.numel()}")
    keep = g != ignore_index
    p, g = p[keep], g[keep]
    if g.numel() and (g.min() < 0 or g.max() >= num_classes):
        raise ValueError(f"ground-truth ids must be in [0, {num_classes}) or {ignore_index}")
    if p.numel() and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted ids must be in [0, {num_classes})")
    return torch.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).numpy().astype(np.int64)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU per class (NaN for classes absent from both GT and prediction)."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


class ConfusionMatrix:
    """Accumulates a confusion matrix and per-frame mIoUs over a sequence of frames."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.frame_mious: list[float] = []

    def update(self, pred: Tensor | np.ndarray, gt: Tensor | np.ndarray) -> np.ndarray:
        """Add one frame; returns its confusion matrix."""
        cm = confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        self.matrix += cm
        ious = iou_per_class(cm)
        if np.isfinite(ious).any():
            self.frame_mious.append(float(np.nanmean(ious)))
        return cm

    def iou(self) -> np.ndarray:
        return iou_per_class(self.matrix)

    def miou(self) -> float:
        """Dataset-level mIoU from the summed confusion matrix (classes seen in GT or prediction)."""
        ious = self.iou()
        return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")

    def frame_miou(self) -> float:
        """Mean over frames of each frame's mIoU (classes present in that frame's GT or prediction)."""
        return float(np.mean(self.frame_mious)) if self.frame_mious else float("nan")

    def total_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def class_accuracy(self) -> float:
        """Mean over GT-present classes of per-class recall."""
        rows = self.matrix.sum(1)
        present = rows > 0
        return float((np.diag(self.matrix)[present] / rows[present]).mean()) if present.any() else float("nan")

    def summary(self) -> dict[str, float]:
        return {"miou": self.miou(), "frame_miou": self.frame_miou(), "total_acc": self.total_accuracy(),
                "class_acc": self.class_accuracy()}

    def save(self, path: str | Path) -> Path:
        """Write the matrix as ``.npy`` (raw counts) or ``.csv`` (header row and column of class names)."""
        path = Path(path)
        if path.suffix == ".npy":
            np.save(path, self.matrix)
        elif path.suffix == ".csv":
            with path.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["gt\\pred", *self.class_names])
                for name, row in zip(self.class_names, self.matrix):
                    writer.writerow([name, *row.tolist()])
        else:
            raise ValueError(f"confusion matrix export supports .npy or .csv, got {path}")
        return path


def psnr(pred: Tensor, target: Tensor, max_val: float = 1.0) -> float:
    """PSNR in dB of images in [0, max_val]; ``inf`` for identical images."""
    mse = float(F.mse_loss(pred.float(), target.float()))
    return float("inf") if mse == 0.0 else 10.0 * math.log10(max_val * max_val / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(x ** 2) / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(pred: Tensor, target: Tensor, max_val: float = 1.0, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, valid region.

    Images ``[H, W, 3]``, ``[3, H, W]`` or ``[H, W]`` in [0, max_val]; channels-last is detected when the
    last dimension is 3 and the first is not.
    """
    def to_nchw(img: Tensor) -> Tensor:
        img = img.double()  # E[x^2] - E[x]^2 cancels badly in float32 next to C2 = 9e-4
        if img.dim() == 2:
            return img[None, None]
        if img.shape[-1] == 3 and img.shape[0] != 3:
            img = img.permute(2, 0, 1)
        return img[None]
    x, y = to_nchw(pred), to_nchw(target)
    c = x.shape[1]
    w = _gaussian_window(window, sigma, c, x.device, x.dtype)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = F.conv2d(x, w, groups=c), F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x ** 2
    syy = F.conv2d(y * y, w, groups=c) - mu_y ** 2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return float(s.mean())


class DepthErrors:
    """Accumulates depth errors over frames, pooled over all pixels with valid ground truth.

    A pixel counts when its ground truth is valid (:func:`sray_ros.geometry.valid_depth`: finite, > 0).
    A prediction that is not finite or not > 0 there counts as a miss: it is excluded from the errors and
    reported as ``depth_coverage`` (fraction of valid-GT pixels with a usable prediction) instead.
    Metrics (Eigen et al. 2014): ``abs_rel = mean |d - d*| / d*``, ``rmse = sqrt(mean (d - d*)^2)`` metres,
    ``delta1 = fraction with max(d / d*, d* / d) < 1.25``.
    """

    def __init__(self) -> None:
        self.count = 0
        self.gt_count = 0
        self.abs_rel_sum = 0.0
        self.sq_sum = 0.0
        self.delta1_count = 0

    def update(self, pred: Tensor | np.ndarray, gt: Tensor | np.ndarray) -> None:
        from sray_ros.geometry import valid_depth

        p = torch.as_tensor(np.asarray(pred) if not isinstance(pred, Tensor) else pred).double().reshape(-1).cpu()
        g = torch.as_tensor(np.asarray(gt) if not isinstance(gt, Tensor) else gt).double().reshape(-1).cpu()
        if p.shape != g.shape:
            raise ValueError(f"predicted and ground-truth depth differ in size: {p.numel()} vs {g.numel()}")
        has_gt = valid_depth(g)
        ok = has_gt & valid_depth(p)
        self.gt_count += int(has_gt.sum())
        p, g = p[ok], g[ok]
        self.count += int(p.numel())
        self.abs_rel_sum += float(((p - g).abs() / g).sum())
        self.sq_sum += float(((p - g) ** 2).sum())
        self.delta1_count += int((torch.maximum(p / g, g / p) < 1.25).sum())

    def summary(self) -> dict[str, float]:
        """abs_rel, rmse (m), delta1, depth_coverage; NaN when no pixel had valid ground truth."""
        if self.count == 0:
            nan = float("nan")
            return {"depth_abs_rel": nan, "depth_rmse": nan, "depth_delta1": nan,
                    "depth_coverage": 0.0 if self.gt_count else nan}
        return {"depth_abs_rel": self.abs_rel_sum / self.count, "depth_rmse": math.sqrt(self.sq_sum / self.count),
                "depth_delta1": self.delta1_count / self.count, "depth_coverage": self.count / max(self.gt_count, 1)}

    def merge(self, other: "DepthErrors") -> None:
        self.count += other.count
        self.gt_count += other.gt_count
        self.abs_rel_sum += other.abs_rel_sum
        self.sq_sum += other.sq_sum
        self.delta1_count += other.delta1_count


def strict_json(value):
    """``value`` with every non-finite float (NaN, inf) replaced by None, recursively through dicts, lists and
    tuples, so ``json.dumps(..., allow_nan=False)`` writes standard JSON (``null``, never a bare NaN)."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
