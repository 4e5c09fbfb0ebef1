"""Where the node may write checkpoints: inside one configured folder, never over a file that is not a checkpoint.

Any process on the DDS domain can name a path (``~/save_checkpoint``, a ``~/fine_tune`` goal's
``checkpoint_path``, the runtime parameter ``fine_tune_checkpoint``). :class:`CheckpointDirectory` turns such a
name into the file to write, or refuses it with a :class:`CheckpointPathError` saying why:

* a relative name is taken inside the folder; an absolute path must lie inside it;
* ``..`` components, a folder that does not exist (new folders are never created), a folder or a file that is
  a symbolic link leading elsewhere, and names not ending in ``.pt`` / ``.pth`` are refused;
* an existing file is replaced only when it is an sray_ros checkpoint (the format the node writes); any
  other file (or a folder, socket, ...) of that name is left alone.

The write itself is atomic (:func:`sray_ros.train.checkpoint.save_checkpoint`: temp file in the same folder,
fsync, ``os.replace``), so a reader never sees half a file and an interrupted save leaves the old one.
Plain Python: no ROS.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_NAME = "fine_tuned.pt"
SUFFIXES = (".pt", ".pth")


class CheckpointPathError(ValueError):
    """A checkpoint path the node refuses to write; the message says why and what is allowed."""


def default_checkpoint_dir() -> Path:
    """``$ROS_HOME/sray_ros/checkpoints`` (``ROS_HOME`` defaults to ``~/.ros``)."""
    return Path(os.environ.get("ROS_HOME") or Path.home() / ".ros") / "sray_ros" / "checkpoints"


def is_sray_checkpoint(path: Path) -> bool:
    """True when ``path`` is a readable sray_ros checkpoint (its format marker; the weights are not checked)."""
    from sray_ros.train.checkpoint import FORMAT_NAME, CheckpointError, read_weights_file

    try:
        payload = read_weights_file(path)
    except CheckpointError:
        return False
    return isinstance(payload, dict) and payload.get("format") == FORMAT_NAME


class CheckpointDirectory:
    """The folder checkpoints are written to (created, with its parents, when missing).

    Args:
        root: absolute path, ``~`` expanded; "" = :func:`default_checkpoint_dir`.
    Raises:
        CheckpointPathError: ``root`` is relative or cannot be created as a folder.
    """

    def __init__(self, root: str | os.PathLike = "") -> None:
        path = Path(root).expanduser() if str(root) else default_checkpoint_dir()
        if not path.is_absolute():
            raise CheckpointPathError(f"checkpoint_dir {str(root)!r} must be an absolute path")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointPathError(f"checkpoint_dir {str(path)!r} cannot be created: {exc}") from None
        if not path.is_dir():
            raise CheckpointPathError(f"checkpoint_dir {str(path)!r} is not a folder")
        self.root = path.resolve()
        self._configured = Path(os.path.normpath(path))  # absolute requests may name the folder this way too

    def resolve(self, requested: str, fallback: str = "") -> Path:
        """The file to write for the caller's name ``requested`` ("" = ``fallback``, and "" again =
        ``fine_tuned.pt``). Raises :class:`CheckpointPathError` when the name is refused (module docstring)."""
        name = requested or fallback or DEFAULT_NAME
        shown = repr(name)
        if "\0" in name:
            raise CheckpointPathError(f"checkpoint path {shown} contains a NUL character")
        given = Path(name)
        if ".." in given.parts:
            raise CheckpointPathError(f"checkpoint path {shown}: '..' is not allowed; name a file inside the "
                                      f"checkpoint folder {self.root}")
        candidate = given if given.is_absolute() else self.root / given
        if not candidate.name or candidate.suffix not in SUFFIXES:
            raise CheckpointPathError(f"checkpoint path {shown}: the file name must end in .pt or .pth")
        parent = candidate.parent
        lexical = Path(os.path.normpath(parent))
        if not (_inside(lexical, self.root) or _inside(lexical, self._configured)):
            raise CheckpointPathError(f"checkpoint path {shown} is outside the checkpoint folder {self.root} "
                                      "(parameter checkpoint_dir); name a file inside it")
        if not parent.is_dir():
            raise CheckpointPathError(f"checkpoint path {shown}: the folder {parent} does not exist (new folders are "
                                      f"not created; the checkpoint folder is {self.root})")
        real_parent = parent.resolve(strict=True)
        if not _inside(real_parent, self.root):
            raise CheckpointPathError(f"checkpoint path {shown}: its folder leads outside the checkpoint folder "
                                      f"{self.root} through a symbolic link")
        target = real_parent / candidate.name
        if target.is_symlink():
            raise CheckpointPathError(f"checkpoint path {shown} is a symbolic link; links are never written through")
        if target.exists():
            if not target.is_file():
                raise CheckpointPathError(f"checkpoint path {shown} exists and is not a regular file")
            if not is_sray_checkpoint(target):
                raise CheckpointPathError(f"checkpoint path {shown} exists and is not an sray_ros checkpoint; it is "
                                          "never replaced (choose another name)")
        return target


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
