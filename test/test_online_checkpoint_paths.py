"""CheckpointDirectory: names from any DDS caller stay inside the checkpoint folder and never replace a file
that is not an sray_ros checkpoint (no ROS)."""

from __future__ import annotations

import os

import pytest
import torch

from sray_ros.online.checkpoint_paths import (CheckpointDirectory, CheckpointPathError, default_checkpoint_dir,
                                              is_sray_checkpoint)


@pytest.fixture
def folder(tmp_path):
    return CheckpointDirectory(tmp_path / "checkpoints")


@pytest.fixture
def checkpoint_bytes(tmp_path_factory):
    from sray_ros.data.label_sets import load_label_set
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay
    from sray_ros.train.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path_factory.mktemp("ck") / "m.pt", SRay(SRayConfig.tiny(num_classes=20)),
                           load_label_set("scannet20").to_dict())
    return path.read_bytes()


def test_default_folder_is_under_ros_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_HOME", str(tmp_path))
    assert default_checkpoint_dir() == tmp_path / "sray_ros" / "checkpoints"
    monkeypatch.delenv("ROS_HOME")
    assert default_checkpoint_dir() == __import__("pathlib").Path.home() / ".ros" / "sray_ros" / "checkpoints"
    assert CheckpointDirectory("").root == default_checkpoint_dir().resolve()


def test_names_inside_the_folder_are_accepted(folder):
    root = folder.root
    assert folder.resolve("") == root / "fine_tuned.pt"
    assert folder.resolve("", "run1.pt") == root / "run1.pt"
    assert folder.resolve("a.pt", "run1.pt") == root / "a.pt"
    assert folder.resolve(str(root / "b.pth")) == root / "b.pth"  # absolute, inside
    (root / "sub").mkdir()
    assert folder.resolve("sub/c.pt") == root / "sub" / "c.pt"  # an existing subfolder


@pytest.mark.parametrize("name,reason", [
    ("../escape.pt", "'..' is not allowed"),
    ("sub/../../escape.pt", "'..' is not allowed"),
    ("/etc/sray.pt", "is outside the checkpoint folder"),
    ("new/nested/x.pt", "does not exist (new folders are not created"),
    ("notes.txt", "must end in .pt or .pth"),
    ("bad\0name.pt", "NUL character"),
])
def test_names_leaving_the_folder_are_refused(folder, tmp_path, name, reason):
    with pytest.raises(CheckpointPathError, match=reason.replace("(", "\\(").replace(".", "\\.")):
        folder.resolve(name)
    assert not (tmp_path / "escape.pt").exists() and not (folder.root / "new").exists()


def test_symbolic_links_leading_out_are_refused(folder, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder.root / "linkdir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CheckpointPathError, match="leads outside the checkpoint folder .* through a symbolic link"):
        folder.resolve("linkdir/x.pt")
    (folder.root / "link.pt").symlink_to(outside / "victim.pt")
    with pytest.raises(CheckpointPathError, match="is a symbolic link; links are never written through"):
        folder.resolve("link.pt")


def test_an_existing_file_is_replaced_only_when_it_is_an_sray_checkpoint(folder, checkpoint_bytes):
    other = folder.root / "notes.pt"
    other.write_text("my notes")
    with pytest.raises(CheckpointPathError, match="exists and is not an sray_ros checkpoint; it is never replaced"):
        folder.resolve("notes.pt")
    tensor = folder.root / "tensor.pt"
    torch.save(torch.zeros(3), tensor)  # a torch file, but not one of ours
    with pytest.raises(CheckpointPathError, match="not an sray_ros checkpoint"):
        folder.resolve("tensor.pt")
    (folder.root / "dir.pt").mkdir()
    with pytest.raises(CheckpointPathError, match="is not a regular file"):
        folder.resolve("dir.pt")
    ours = folder.root / "ours.pt"
    ours.write_bytes(checkpoint_bytes)
    assert is_sray_checkpoint(ours) and not is_sray_checkpoint(other)
    assert folder.resolve("ours.pt") == ours
    assert other.read_text() == "my notes"


def test_a_relative_or_unusable_folder_is_refused(tmp_path):
    with pytest.raises(CheckpointPathError, match="must be an absolute path"):
        CheckpointDirectory("relative/dir")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointPathError, match="cannot be created|is not a folder"):
        CheckpointDirectory(blocker)


def test_the_folder_named_through_a_link_accepts_absolute_paths_through_that_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    folder = CheckpointDirectory(tmp_path / "alias")
    assert folder.resolve(str(tmp_path / "alias" / "m.pt")) == real.resolve() / "m.pt"
    assert os.path.isdir(folder.root)
