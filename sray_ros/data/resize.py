"""Write a smaller copy of a ScanNet-layout dataset: images at the working resolution, every k-th frame.

    sray-resize-dataset /data/sray_synth/train /tmp/train_160 --width 160 --height 120 --stride 2

Training and the node run at a working resolution (e.g. 160x120); a copy already at that size loads
faster and is a quarter of the bytes, which matters when a dataset has to travel (to a robot, a GPU
lease, a CI cache). Colour is area-averaged (JPEG), depth and labels are resized nearest-neighbour
(:func:`sray_ros.geometry.resize_nearest`, never interpolated), and the intrinsics are scaled with :func:`sray_ros.geometry.scale_intrinsics`, so a
scene loaded from the copy at that size has the same cameras as the original loaded at that size.
Frame ids, poses, ``meta.json`` and a ``scannetv2-labels.combined.tsv`` at the root are kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from sray_ros.data.scannet import LABEL_TABLE_NAME, list_scannet_scenes, read_scannet_meta
from sray_ros.data.scene import (SceneFormatError, read_depth_image, read_image, read_label_image, resize_color,
                                 resize_nearest)
from sray_ros.geometry import scale_intrinsics

PNG_SMALLEST = [cv2.IMWRITE_PNG_COMPRESSION, 9]  # lossless either way; OpenCV's default level is fast, not small


def _write_matrix(path: Path, K: np.ndarray) -> None:
    full = np.eye(4)
    full[:3, :3] = K
    np.savetxt(path, full, fmt="%.8f")


def _write(path: Path, img: np.ndarray, params: list[int] | None = None) -> None:
    if not cv2.imwrite(str(path), img, params or []):
        raise OSError(f"could not write {path}")


def resize_scene(src: Path, dst: Path, width: int, height: int, stride: int = 1, jpeg_quality: int = 95) -> int:
    """Copy one scene folder at ``width x height`` keeping every ``stride``-th frame; returns frames written."""
    meta = read_scannet_meta(str(src.resolve()))
    keep = range(0, len(meta.frame_ids), max(1, stride))
    partial = dst.with_name(dst.name + ".partial")  # list_scannet_scenes skips these: no half-written scenes
    if partial.exists():
        shutil.rmtree(partial)
    for sub in ("color", "pose", "intrinsic"):
        (partial / sub).mkdir(parents=True)
    cw, ch = meta.color_size
    _write_matrix(partial / "intrinsic" / "intrinsic_color.txt",
                  scale_intrinsics(meta.color_intrinsics, width / cw, height / ch))
    if meta.depth_paths is not None:
        (partial / "depth").mkdir()
        dw, dh = meta.depth_size
        _write_matrix(partial / "intrinsic" / "intrinsic_depth.txt",
                      scale_intrinsics(meta.depth_intrinsics, width / dw, height / dh))
    if meta.label_paths is not None:
        (partial / "label-filt").mkdir()
    for i in keep:
        fid = meta.frame_ids[i]
        bgr = read_image(meta.color_paths[i], cv2.IMREAD_COLOR)
        if (bgr.shape[1], bgr.shape[0]) != (cw, ch):
            raise SceneFormatError(f"{meta.color_paths[i]}: colour image is {bgr.shape[1]}x{bgr.shape[0]}, but the "
                                   f"scene's other colour images are {cw}x{ch}")
        _write(partial / "color" / f"{fid}.jpg", resize_color(bgr, width, height),
               [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        np.savetxt(partial / "pose" / f"{fid}.txt", meta.poses[i], fmt="%.8f")
        if meta.depth_paths is not None and meta.depth_paths[i] is not None:
            _write(partial / "depth" / f"{fid}.png", resize_nearest(read_depth_image(meta.depth_paths[i], meta.depth_size), width, height),
                   PNG_SMALLEST)
        if meta.label_paths is not None and meta.label_paths[i] is not None:
            _write(partial / "label-filt" / f"{fid}.png",
                   resize_nearest(read_label_image(meta.label_paths[i], meta.label_size), width, height), PNG_SMALLEST)
    info_path = src / "meta.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info.update({"width": width, "height": height, "frames": len(keep),
                 "resized_from": {"path": str(src), "width": cw, "height": ch, "stride": stride}})
    (partial / "meta.json").write_text(json.dumps(info, indent=1))
    if (src / LABEL_TABLE_NAME).is_file():
        shutil.copy2(src / LABEL_TABLE_NAME, partial / LABEL_TABLE_NAME)
    if dst.exists():
        shutil.rmtree(dst)
    partial.rename(dst)
    return len(keep)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sray-resize-dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="a ScanNet-layout scene folder or a folder of them")
    p.add_argument("dst", help="output folder (same structure)")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--stride", type=int, default=1, help="keep every k-th frame (default 1: all)")
    p.add_argument("--jpeg-quality", type=int, default=95)
    args = p.parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    if args.width <= 0 or args.height <= 0 or args.stride <= 0:
        p.error("--width, --height and --stride must be positive")
    if not src.is_dir():
        p.error(f"{src} is not a folder")
    single = (src / "pose").is_dir()
    scenes = [src] if single else list_scannet_scenes(src)
    if not scenes:
        print(f"resize: {src} holds no ScanNet-layout scene folders", file=sys.stderr)
        return 2
    (dst.parent if single else dst).mkdir(parents=True, exist_ok=True)  # a failed single scene leaves no dst
    if not single and (src / LABEL_TABLE_NAME).is_file():
        shutil.copy2(src / LABEL_TABLE_NAME, dst / LABEL_TABLE_NAME)
    frames = 0
    with tqdm(scenes, desc="resize", unit="scene") as bar:
        for scene in bar:
            try:
                frames += resize_scene(scene, dst if single else dst / scene.name, args.width, args.height,
                                       args.stride, args.jpeg_quality)
            except (SceneFormatError, OSError) as exc:
                bar.close()  # the error on a line of its own, not after the bar
                print(f"resize: {exc}; stopped (scenes written so far are complete)", file=sys.stderr)
                return 2
    print(f"resize: {len(scenes)} scene(s), {frames} frames at {args.width}x{args.height} -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
