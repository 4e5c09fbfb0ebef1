"""S-Ray checkpoints: weights + model config + label set + format version (+ optional extras).

File layout (a ``torch.save`` dict, loaded with ``weights_only=True``)::

    {"format": "sray_ros.checkpoint", "version": 1, "state_dict": {...}, "config": SRayConfig.to_dict(),
     "label_set": {"name", "class_names", "colors", "ignore_index"}, "extra": {...}}

Writes are atomic (temp file in the target directory, fsync, ``os.replace``), so an interrupted save
never leaves a half-written checkpoint under the final name. Every problem found on load raises
:class:`CheckpointError` naming the file and what is wrong, including non-finite (NaN / inf) weights, which
a diverged training run leaves behind and which would render every pixel as "unknown".
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sray_ros.model.config import SRayConfig
from sray_ros.model.sray import SRay

FORMAT_NAME = "sray_ros.checkpoint"
FORMAT_VERSION = 1
LABEL_SET_KEYS = ("name", "class_names", "colors", "ignore_index")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or inconsistent."""


@dataclass
class Checkpoint:
    model: SRay
    config: SRayConfig
    label_set: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _check_label_set(label_set: dict[str, Any], num_classes: int, where: str) -> None:
    if not isinstance(label_set, dict):
        raise CheckpointError(f"{where}: label_set must be a dict, got {type(label_set).__name__}")
    missing = [k for k in LABEL_SET_KEYS if k not in label_set]
    if missing:
        raise CheckpointError(f"{where}: label_set lacks keys {missing} (expected {list(LABEL_SET_KEYS)})")
    names, colors = label_set["class_names"], label_set["colors"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{where}: label_set.class_names must be a list of str")
    if len(names) != num_classes:
        raise CheckpointError(f"{where}: label set '{label_set['name']}' has {len(names)} classes but the model "
                              f"config has num_classes={num_classes}")
    if (not isinstance(colors, list) or len(colors) != len(names)
            or not all(isinstance(c, (list, tuple)) and len(c) == 3 for c in colors)):
        raise CheckpointError(f"{where}: label_set.colors must be one [r, g, b] per class ({len(names)})")
    if not isinstance(label_set["ignore_index"], int):
        raise CheckpointError(f"{where}: label_set.ignore_index must be an int")


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` (a state_dict) holding a NaN or an infinity."""
    return [name for name, value in state.items()
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def save_checkpoint(path: str | Path, model: SRay, label_set: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Atomically write ``model`` (its weights and config) with ``label_set`` and ``extra``
    (e.g. optimizer state, step, metrics: tensors, numbers, strings, lists and dicts only).

    Raises :class:`CheckpointError` (and leaves any existing file untouched) when a weight is NaN or inf."""
    path = Path(path)
    label_set = {k: label_set[k] for k in label_set}  # plain dict (LabelSet.to_dict() output)
    label_set["colors"] = [list(map(int, c)) for c in label_set.get("colors", [])]
    _check_label_set(label_set, model.cfg.num_classes, str(path))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = non_finite_tensors(state)
    if bad:  # a diverged model must never replace a good file (loading rejects it too)
        raise CheckpointError(f"{path}: not saved, weights hold NaN/inf in {bad[:5]}")
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "state_dict": state,
        "config": model.cfg.to_dict(),
        "label_set": label_set,
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_weights_file(path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with errors a user can act on, as :class:`CheckpointError`.

    A pickle holding Python objects other than tensors and plain data is refused as "not an sray_ros weights
    file": such objects are never unpickled (that could run code), and torch's advice to retry with
    ``weights_only=False`` is not passed on. A truncated or otherwise unreadable file is named as such."""
    path = Path(path)
    where = f"{what} {path}"
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise CheckpointError(f"{where}: not an sray_ros weights file (it holds Python objects other than "
                                  "tensors, numbers, strings, lists and dicts, which are never loaded)") from None
        reason = f"{type(exc).__name__}: {_first_line(exc)}"
    except Exception as exc:  # noqa: BLE001 - truncated, corrupt, or not a torch file at all
        reason = f"{type(exc).__name__}: {_first_line(exc)}"
    raise CheckpointError(f"{where}: cannot be read as a torch checkpoint (truncated or corrupt?): {reason}")


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, never advice to load unsafely."""
    line = (str(exc).strip().splitlines() or [""])[0]
    return "" if "weights_only" in line else line


def expected_weight_shapes(config: SRayConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the state_dict of ``SRay(config)``, found on the meta device (nothing is
    allocated, so a config whose sizes are absurd costs nothing to check)."""
    with torch.device("meta"):
        model = SRay(config)
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint; returns the model (eval mode), its config, label set and extras.

    The stored config's sizes (:data:`~sray_ros.model.config.SIZE_LIMITS`) and the weights' names and shapes
    are checked before the model is built, so a file whose config asks for huge layers is refused without
    allocating them. Raises :class:`CheckpointError` naming the file and what is wrong."""
    path = Path(path)
    where = f"checkpoint {path}"
    payload = read_weights_file(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{where}: not an sray_ros checkpoint (expected a dict with format='{FORMAT_NAME}')")
    missing = [k for k in ("version", "state_dict", "config", "label_set") if k not in payload]
    if missing:
        raise CheckpointError(f"{where}: missing keys {missing}")
    if payload["version"] != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format version {payload['version']} is not supported "
                              f"(this code reads version {FORMAT_VERSION})")
    try:
        config = SRayConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: invalid model config: {exc}") from exc
    _check_label_set(payload["label_set"], config.num_classes, where)
    state = payload["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: state_dict is not a dict")
    try:
        expected = expected_weight_shapes(config)
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. an encoder whose package is missing
        raise CheckpointError(f"{where}: cannot build the model its config describes: {exc}") from None
    missing_w = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing_w or unexpected:
        raise CheckpointError(f"{where}: weights do not match the config: missing {missing_w[:5]}"
                              f"{'...' if len(missing_w) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{'...' if len(unexpected) > 5 else ''}")
    for name, shape in expected.items():
        if not torch.is_tensor(state[name]):
            raise CheckpointError(f"{where}: weight '{name}' is a {type(state[name]).__name__}, not a tensor")
        if tuple(state[name].shape) != shape:
            raise CheckpointError(f"{where}: weight '{name}' has shape {tuple(state[name].shape)}, the config "
                                  f"implies {shape}")
    bad = non_finite_tensors(state)
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} weight tensors hold NaN or inf values (e.g. {bad[:3]}); "
                              "a diverged training run wrote it")
    model = SRay(config)
    model.load_state_dict(state)
    model.to(map_location).eval()
    return Checkpoint(model, config, payload["label_set"], payload.get("extra") or {}, path)
