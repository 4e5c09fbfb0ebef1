"""Metrics (confusion matrix, mIoU variants, accuracies, PSNR, SSIM) and checkpoint round trip/corruption."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch


from sray_ros.model import SRay, SRayConfig  # noqa: E402
from sray_ros.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from sray_ros.train.metrics import ConfusionMatrix, confusion_matrix, iou_per_class, psnr, ssim  # noqa: E402

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
def test_perfect_prediction_gives_miou_one():
    gt = torch.randint(0, 5, (30, 40))
    gt[0, :5] = 255
    cm = ConfusionMatrix(5)
    cm.update(gt.clamp(max=4), gt)
    assert cm.miou() == 1.0 and cm.frame_miou() == 1.0
    assert cm.total_accuracy() == 1.0 and cm.class_accuracy() == 1.0
    assert cm.matrix.sum() == gt.numel() - 5  # ignore pixels excluded


def test_known_confusion_matrix_gives_known_ious():
    # GT:   0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
    gt = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(pred, gt, 4)
    assert cm[0, 0] == 2 and cm[0, 1] == 1 and cm[1, 1] == 1 and cm[1, 2] == 1 and cm[2, 2] == 1
    ious = iou_per_class(cm)
    # class 0: tp 2, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 1, fn 1 -> 1/3; class 2: tp 1, fp 1 -> 1/2; 3 absent
    assert np.allclose(ious[:3], [2 / 3, 1 / 3, 1 / 2]) and math.isnan(ious[3])
    acc = ConfusionMatrix(4)
    acc.update(pred, gt)
    assert math.isclose(acc.miou(), (2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert math.isclose(acc.total_accuracy(), 4 / 6)
    assert math.isclose(acc.class_accuracy(), (2 / 3 + 1 / 2 + 1) / 3)


def test_frame_miou_differs_from_dataset_miou():
    acc = ConfusionMatrix(2)
    acc.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0]))  # frame mIoU 1 (only class 0 present)
    acc.update(np.array([0, 1]), np.array([1, 1]))  # class 0: 0/1, class 1: 1/2 -> 0.25
    assert math.isclose(acc.frame_miou(), (1.0 + 0.25) / 2)
    # summed: class 0 tp 4 fp 1 -> 0.8; class 1 tp 1 fn 1 -> 0.5
    assert math.isclose(acc.miou(), (0.8 + 0.5) / 2)


def test_confusion_matrix_export(tmp_path: Path):
    acc = ConfusionMatrix(3, class_names=["wall", "floor", "chair"])
    acc.update(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]))
    npy = acc.save(tmp_path / "cm.npy")
    assert (np.load(npy) == acc.matrix).all()
    text = acc.save(tmp_path / "cm.csv").read_text().splitlines()
    assert text[0] == "gt\\pred,wall,floor,chair" and text[2] == "floor,0,1,1"
    with pytest.raises(ValueError):
        acc.save(tmp_path / "cm.txt")


def test_confusion_matrix_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="ground-truth"):
        confusion_matrix(np.array([0]), np.array([7]), 3)


def test_psnr_and_ssim():
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(40, 50, 3, generator=gen)
    assert psnr(img, img) == float("inf")
    assert math.isclose(ssim(img, img), 1.0, abs_tol=1e-6)
    noisy = (img + 0.1 * torch.randn(40, 50, 3, generator=gen)).clamp(0, 1)
    assert 15 < psnr(noisy, img) < 25
    # structure term for x and x + independent noise: var_x / sqrt(var_x (var_x + var_n)) ~ 0.94 here
    assert 0.85 < ssim(noisy, img) < 0.99
    # constant images: SSIM reduces to the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    c1 = 0.01 ** 2
    expected = (2 * 0.3 * 0.5 + c1) / (0.3 ** 2 + 0.5 ** 2 + c1)
    assert math.isclose(ssim(torch.full((3, 20, 20), 0.3), torch.full((3, 20, 20), 0.5)), expected, rel_tol=1e-5)
    half = torch.full((10, 10), 0.5)
    assert math.isclose(psnr(half, torch.full((10, 10), 0.6)), 20.0, rel_tol=1e-4)  # mse 0.01


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
def _label_set(n: int) -> dict:
    return {"name": "toy", "class_names": [f"c{i}" for i in range(n)], "colors": [[i, 2 * i, 3 * i] for i in range(n)],
            "ignore_index": 255}


@pytest.fixture()
def saved(tmp_path: Path):
    torch.manual_seed(0)
    model = SRay(SRayConfig.tiny(num_classes=3))
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, _label_set(3), extra={"step": 12, "miou": 0.5})
    return model, path


def test_checkpoint_round_trip(saved):
    model, path = saved
    ck = load_checkpoint(path)
    assert ck.config == model.cfg
    assert ck.label_set == _label_set(3) and ck.extra == {"step": 12, "miou": 0.5}
    for (k, a), (k2, b) in zip(model.state_dict().items(), ck.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not ck.model.training
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind


def _rewrite(path: Path, mutate) -> Path:
    payload = torch.load(path, weights_only=True)
    mutate(payload)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("mutate,message", [
    (lambda p: p.pop("config"), "missing keys \\['config'\\]"),
    (lambda p: p.pop("state_dict"), "missing keys \\['state_dict'\\]"),
    (lambda p: p.update(version=99), "version 99"),
    (lambda p: p["config"].update(bogus_field=1), "invalid model config.*bogus_field"),
    (lambda p: p["config"].update(attention="sparse"), "invalid model config.*attention"),
    (lambda p: p["config"].update(num_classes=4), "has 3 classes but .*num_classes=4"),
    (lambda p: p["label_set"].pop("colors"), "label_set lacks keys \\['colors'\\]"),
    (lambda p: p["state_dict"].pop("field_coarse.semantic_head.classifier.bias"), "missing \\['field_coarse"),
    (lambda p: p["state_dict"].update(extra_weight=torch.zeros(1)), "unexpected \\['extra_weight'\\]"),
    (lambda p: p["state_dict"].update({"field_coarse.semantic_head.classifier.bias": torch.zeros(5)}),
     "classifier.bias' has shape \\(5,\\).*\\(3,\\)"),
    (lambda p: p.update(format="something_else"), "not an sray_ros checkpoint"),
    # what a diverged fine-tune used to save: loading it must fail, not render every pixel as unknown
    (lambda p: p["state_dict"]["field_coarse.semantic_head.classifier.bias"].fill_(float("nan")),
     "1 weight tensors hold NaN or inf.*classifier.bias"),
    (lambda p: p["state_dict"]["field_coarse.semantic_head.classifier.bias"].__setitem__(0, float("-inf")),
     "NaN or inf"),
])
def test_checkpoint_corruption_raises(saved, mutate, message):
    _, path = saved
    _rewrite(path, mutate)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_truncated_and_foreign_files_raise(saved, tmp_path: Path):
    _, path = saved
    data = path.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(trunc)
    assert "trunc.pt" in str(info.value)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(text)
    other = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), other)
    with pytest.raises(CheckpointError, match="not an sray_ros checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_save_rejects_mismatched_label_set(tmp_path: Path):
    with pytest.raises(CheckpointError, match="has 2 classes"):
        save_checkpoint(tmp_path / "x.pt", SRay(SRayConfig.tiny(num_classes=3)), _label_set(2))
    assert not (tmp_path / "x.pt").exists()


def test_config_dict_round_trip():
    cfg = SRayConfig(num_classes=7, attention="dense", tau=0.5)
    assert SRayConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SRayConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="attention"):
        SRayConfig(attention="sparse")


def test_save_refuses_non_finite_weights_and_keeps_the_existing_file(tmp_path):
    # A diverged model must not overwrite a good checkpoint: save raises and the file on disk is unchanged.
    import torch

    from sray_ros.model import SRay, SRayConfig
    from sray_ros.data import load_label_set
    from sray_ros.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    model = SRay(SRayConfig.tiny())
    label_set = load_label_set("scannet20").to_dict()
    path = save_checkpoint(tmp_path / "good.pt", model, label_set)
    before = path.read_bytes()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN/inf"):
        save_checkpoint(path, model, label_set)
    assert path.read_bytes() == before
    assert load_checkpoint(path).model is not None
    assert not list(tmp_path.glob(".good.pt.*"))  # no temporary file left behind


# ------------------------------------------------------------------------------------- crafted files
@pytest.mark.parametrize("field,value,message", [
    ("ffn_hidden", 20_000_000, "ffn_hidden = 20000000 is outside \\[1, 4096\\]"),
    ("stem_channels", 10**9, "stem_channels = 1000000000 is outside"),
    ("encoder_channels", [8, 16, 5_000_000], "encoder_channels = 5000000 is outside"),
    ("num_classes", 300, "num_classes = 300 is outside \\[1, 255\\]"),
    ("num_coarse", 10**8, "num_coarse = 100000000 is outside"),
    ("num_surface_samples", 10**7, "num_surface_samples = 10000000 is outside"),
    ("prior_channels", 20_000_000, "prior_channels = 20000000 is outside \\[1, 1024\\]"),
    ("prior_input_height", 10**7, "prior_input_height = 10000000 is outside"),
    ("prior_weight", float("inf"), "prior_weight must be a finite number"),
    ("prior_up", [0.0, 0.0, float("nan")], "prior_up must be finite numbers"),
    ("prior_geometry_cues", "yes", "prior_geometry_cues must be true or false"),
    ("prior_frozen_encoder", 1, "prior_frozen_encoder must be true or false"),
    ("semantic_prior", "resnet50", "semantic_prior must be one of"),
    ("default_far", float("inf"), "default_far must be a finite number"),
    ("ffn_hidden", 64.5, "ffn_hidden must be an integer"),
])
def test_a_crafted_config_is_refused_before_the_model_is_built(saved, monkeypatch, field, value, message):
    import sray_ros.train.checkpoint as checkpoint_module

    _, path = saved
    _rewrite(path, lambda p: p["config"].update({field: value}))
    built = []
    monkeypatch.setattr(checkpoint_module, "SRay", lambda *a, **k: built.append(a) or SRay(*a, **k))
    with pytest.raises(CheckpointError, match=f"invalid model config: {message}"):
        load_checkpoint(path)
    assert built == []  # refused from the stored config alone


def test_weights_not_matching_a_valid_config_are_refused_without_building_it(saved, monkeypatch):
    # Within the bounds but not what the weights hold: the shapes are compared on the meta device first.
    import sray_ros.train.checkpoint as checkpoint_module

    _, path = saved
    _rewrite(path, lambda p: p["config"].update(ffn_hidden=4096))
    devices = []

    def spy(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return SRay(*args, **kwargs)
    monkeypatch.setattr(checkpoint_module, "SRay", spy)
    with pytest.raises(CheckpointError, match="has shape \\(16, 16\\), the config implies \\(4096, 16\\)"):
        load_checkpoint(path)
    assert devices == ["meta"]  # only the meta-device model, never a real one


def test_a_small_crafted_file_asking_for_a_huge_layer_does_not_allocate_it(saved, tmp_path):
    """A 3 KB-class file (empty weights, config asking for a 20-million-wide FFN) used to take the process from
    ~0.3 GB to 2.9 GB before it was refused; now the peak resident memory grows by less than 100 MB."""
    import subprocess
    import sys

    crafted = tmp_path / "crafted.pt"
    payload = torch.load(saved[1], weights_only=True)
    payload["config"]["ffn_hidden"] = 20_000_000
    payload["state_dict"] = {}
    torch.save(payload, crafted)
    assert crafted.stat().st_size < 5000
    script = ("import resource, torch\n"
              "from sray_ros.train.checkpoint import CheckpointError, load_checkpoint\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "try:\n    load_checkpoint(%r)\nexcept CheckpointError as exc:\n    print('refused:', exc)\n"
              "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n") % str(crafted)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused:") and "ffn_hidden = 20000000 is outside [1, 4096]" in lines[0], out.stdout
    assert int(lines[1].split()[1]) < 100 * 1024, out.stdout


class NotWeights:
    """A Python object that only a full (unsafe) unpickling could rebuild."""


def test_a_pickle_that_is_not_weights_is_named_so_and_unsafe_loading_is_never_suggested(tmp_path):
    import pickle

    for name, save in (("objects.pt", lambda p: torch.save({"a": NotWeights()}, p)),
                       ("legacy.pt", lambda p: torch.save({"a": NotWeights()}, p, _use_new_zipfile_serialization=False)),
                       ("plain.pkl", lambda p: p.write_bytes(pickle.dumps(NotWeights())))):
        path = tmp_path / name
        save(path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        text = str(info.value)
        assert text == (f"checkpoint {path}: not an sray_ros weights file (it holds Python objects other than "
                        "tensors, numbers, strings, lists and dicts, which are never loaded)")
        assert info.value.__cause__ is None and info.value.__suppress_context__  # torch's advice is not chained
        assert "weights_only" not in text and "truncated" not in text
