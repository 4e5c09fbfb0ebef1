"""The main job: replay a ScanNet-style sample sequence through the node and render semantics at held-out poses.

    bash scripts/demo.sh            # = python -m sray_ros.demo after the set-up

1. converts the sample sequence (``sample_data/``) to a rosbag2 (every frame but the held-out ones),
2. starts the node executable with the shipped default model through ``config/sray.yaml`` (the file the
   launch file uses) plus ``use_sim_time`` and the replay's topic names,
3. plays the bag with ``/clock`` (``sray-play-bag --clock``, what ``ros2 bag play --clock`` does on a robot),
4. waits for the keyframes, calls ``~/render_semantic_view`` at the held-out poses: with label transfer
   (the bag's ``labels/image`` keyframes fused into the rendered labels, the node's default) and, with
   ``use_keyframe_labels`` switched off at runtime, S-Ray alone, side by side in one panel per view,
5. runs a short ``~/fine_tune`` and renders the same poses again,
6. writes label PNGs, colourised overlays, a side-by-side panel per view and ``metrics.json`` to the output
   folder, prints a summary table, and stops every process it started (also on failure or Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from sray_ros import viz
from sray_ros.data.label_sets import IGNORE_INDEX
from sray_ros.processes import ProcessGroup

REPO = Path(__file__).resolve().parents[1]
if not (REPO / "config" / "sray.yaml").exists():  # running from the colcon install: find the source tree
    REPO = Path(os.environ.get("SRAY_ROOT", Path.cwd()))


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def executable(name: str) -> list[str]:
    prefix = Path(os.environ.get("SRAY_INSTALL_PREFIX", REPO / ".ros_ws" / "install" / "sray_ros"))
    path = prefix / "lib" / "sray_ros" / name
    if not path.exists():
        raise SystemExit(f"{path} missing: run `bash scripts/setup.sh` first")
    return [sys.executable, str(path)]


PANEL_MIN_WIDTH = 480  # px per panel tile, so a person can read the labels


def score(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> dict:
    """Per-view mIoU / accuracy over labelled pixels; unknown predictions (255) count as wrong."""
    from sray_ros.train.metrics import ConfusionMatrix

    valid = gt != IGNORE_INDEX
    known = valid & (pred != IGNORE_INDEX)
    cm = ConfusionMatrix(num_classes)
    cm.update(pred[known], gt[known])
    correct = float((pred[valid] == gt[valid]).sum())
    return {"miou": cm.miou(), "accuracy": correct / max(int(valid.sum()), 1),
            "coverage": float(known.sum()) / max(int(valid.sum()), 1), "confusion": cm.matrix}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sray-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", default=str(REPO / "sample_data" / "synthetic_room"))
    parser.add_argument("--out", default=str(REPO / "out" / "demo"))
    parser.add_argument("--checkpoint", default="", help="default: the shipped model")
    parser.add_argument("--held-out", default="7,31", help="positions of frames kept out of the bag")
    parser.add_argument("--width", type=int, default=160,
                        help="render width (160x120: seconds per view on 2 CPU cores with depth-guided sampling)")
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--fine-tune-steps", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1.0, help="bag playback rate")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-call timeout in seconds")
    parser.add_argument("--no-sray-alone", dest="sray_alone", action="store_false",
                        help="skip the S-Ray-alone renders (label transfer off) beside the label-transfer ones")
    parser.add_argument("--label-noise", default="clean",
                        help="the bag's labels with a 2D segmenter's errors (segmenter) or a Semantic-NeRF label task "
                             "(pixel50, region30, ...); default clean")
    parser.add_argument("--label-space", default="",
                        help="the bag's labels in a segmenter's ids through this shipped label map (e.g. "
                             "ade20k150_to_scannet20); the node's label_map is set to it")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor

    from sray_ros.action import FineTune
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.msg import LabelInfo, NodeStatus
    from sray_ros.ros.image_conversion import image_to_labels, image_to_rgb, make_camera_info
    from sray_ros.ros.pose_conversion import matrix_to_pose
    from sray_ros.ros.scannet_to_bag import convert
    from sray_ros.srv import RenderSemanticView
    from sray_ros import geometry

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sray_demo_"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", str(work / "ros_log"))
    processes = ProcessGroup(work)
    started = time.monotonic()
    rclpy.init()
    node = rclpy.create_node("sray_demo")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    statuses: list = []
    label_info: list = []
    node.create_subscription(NodeStatus, "/sray_node/status", statuses.append, 10)
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    node.create_subscription(LabelInfo, "/sray_node/label_info", label_info.append,
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def wait(future, what: str):
        deadline = time.monotonic() + args.timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: no answer within {args.timeout} s")
            for name, proc in processes.children:
                if proc.poll() is not None and name == "sray_node":
                    raise RuntimeError(f"the node exited ({proc.returncode}); see {work / 'sray_node.log'}")
            time.sleep(0.05)
        return future.result()

    try:
        # 1. the sample sequence -> bag, without the held-out frames
        scene = load_scannet_scene(args.scene, None, None)
        held = [int(i) for i in args.held_out.split(",")]
        bag = work / "sample_bag"
        keep_dir = work / "bag_scene"
        _link_subset(Path(args.scene), keep_dir, scene, exclude=held)
        log(f"converting {len(scene) - len(held)} of {len(scene)} frames of {scene.name} to a rosbag2 (held out: {held})")
        summary = convert(keep_dir, bag, fps=5.0, progress=False, label_noise=args.label_noise,
                          label_space=args.label_space)
        log(f"bag: {summary.frames} frames, {summary.duration_s:.1f} s, topics {sorted(summary.topics)}")

        # 2. the node, through the launch file's parameters file
        overrides = work / "demo_params.yaml"
        # The bag replays with its recorded (reliable) QoS; a reliable subscription loses no frame.
        params = {"use_sim_time": True, "sensor_data_qos": False, "checkpoint_dir": str(out)}
        if args.width * args.height > 320 * 240:  # the node's CPU default refuses larger views; the demo asked
            params["max_render_pixels"] = args.width * args.height
        if args.checkpoint:
            params["checkpoint"] = args.checkpoint
        if args.label_space:
            params["label_map"] = args.label_space
        overrides.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        remaps = []
        for topic in ("color/image", "color/camera_info", "depth/image", "depth/camera_info", "labels/image"):
            remaps += ["-r", f"{topic}:=/camera/{topic.replace('/image', '/image_raw')}"]
        processes.start(executable("sray-node") + ["--ros-args", "--params-file",
                        str(REPO / "config" / "sray.yaml"), "--params-file", str(overrides)] + remaps, "sray_node")
        render = node.create_client(RenderSemanticView, "/sray_node/render_semantic_view")
        log("waiting for the node")
        deadline = time.monotonic() + 120
        while not render.wait_for_service(timeout_sec=0.5):
            if time.monotonic() > deadline:
                raise TimeoutError(f"node did not come up; see {work / 'sray_node.log'}")

        # 3. replay with /clock
        log(f"playing the bag at {args.rate}x with /clock")
        # The node's service is up before DDS has matched its subscriptions with the player's publishers;
        # under load that takes seconds, and a volatile late-joiner would miss the first frames.
        wait_for = ["/camera/color/image_raw", "/camera/color/camera_info", "/camera/depth/image_raw", "/tf"]
        player = processes.start(executable("sray-play-bag") + [
            str(bag), "--clock", "--rate", str(args.rate), "--no-progress", "--wait-for-subscribers", *wait_for], "player")
        deadline = time.monotonic() + args.timeout
        while player.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("bag playback did not finish")
            time.sleep(0.2)
        if player.returncode != 0:
            raise RuntimeError(f"player failed ({player.returncode}); see {work / 'player.log'}")
        time.sleep(2.0)  # last frames through intake
        status = statuses[-1] if statuses else None
        if status is None or status.keyframe_count == 0:
            raise RuntimeError(f"no keyframes after replay (status: {status}); see {work / 'sray_node.log'}")
        log(f"{status.keyframe_count} keyframes from {status.frames_received} frames "
            f"(rejected {dict(zip(status.reject_reasons, status.reject_counts))})")
        from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        setter = node.create_client(SetParameters, "/sray_node/set_parameters")

        def use_keyframe_labels(on: bool) -> None:
            value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=on)
            request = SetParameters.Request(parameters=[ParameterMsg(name="use_keyframe_labels", value=value)])
            if not setter.wait_for_service(timeout_sec=30):
                raise TimeoutError("the node's set_parameters service is not available")
            results = wait(setter.call_async(request), "set use_keyframe_labels").results
            if not all(r.successful for r in results):
                raise RuntimeError(f"use_keyframe_labels := {on} refused: {[r.reason for r in results]}")

        colors = np.array([[c.r * 255, c.g * 255, c.b * 255] for c in label_info[-1].class_colors]).round().astype(np.uint8)
        num_classes = len(colors)
        class_names = list(label_info[-1].class_names)

        def render_all(tag: str, panel: bool = True) -> list[dict]:
            results = []
            for i in held:
                c2w = scene.poses[i]
                request = RenderSemanticView.Request(num_source_views=0, return_color=True, return_depth=True,
                                                     return_confidence=True)
                request.target_pose.header.frame_id = "map"
                request.target_pose.pose = matrix_to_pose(c2w)
                K = geometry.scale_intrinsics(scene.intrinsics, args.width / scene.width, args.height / scene.height)
                request.camera_info = make_camera_info(K, args.width, args.height)
                t0 = time.perf_counter()
                response = wait(render.call_async(request), f"render of frame {scene.frame_ids[i]}")
                round_trip = time.perf_counter() - t0
                if not response.success:
                    raise RuntimeError(f"render of frame {scene.frame_ids[i]} failed: {response.message}")
                labels = image_to_labels(response.labels)
                rgb = cv2.resize(scene.load_color(i), (args.width, args.height), interpolation=cv2.INTER_AREA)
                gt = geometry.resize_nearest(scene.load_labels(i), args.width, args.height)
                metrics = score(labels, gt, num_classes)
                name = f"frame_{scene.frame_ids[i]:06d}_{tag}"
                cv2.imwrite(str(out / f"{name}_labels.png"), labels)
                factor = viz.integer_factor(args.width, PANEL_MIN_WIDTH)  # label pixels stay square blocks
                tw, th = args.width * factor, args.height * factor
                cv2.imwrite(str(out / f"{name}_overlay.png"), viz.panel(
                    [(viz.overlay(rgb, labels, colors, width=tw, height=th), f"rendered labels over the camera ({tag})")],
                    class_names, colors, [labels])[..., ::-1])
                if panel:
                    camera = viz.upscale(scene.load_color(i), tw, th, nearest=False)
                    panel_image = viz.panel([
                        (camera, "camera (held out)"), (viz.label_tile(gt, colors, tw, th), "ground truth"),
                        (viz.label_tile(labels, colors, tw, th), f"rendered labels ({tag})"),
                        (viz.upscale(image_to_rgb(response.color), tw, th), "rendered colour")],
                        class_names, colors, [gt, labels])
                    cv2.imwrite(str(out / f"{name}_panel.png"), panel_image[..., ::-1])
                log(f"  {tag} frame {scene.frame_ids[i]}: mIoU {100 * metrics['miou']:.1f}, acc "
                    f"{100 * metrics['accuracy']:.1f}, coverage {100 * metrics['coverage']:.0f}%, "
                    f"render {response.render_time_s:.1f} s (round trip {round_trip:.1f} s), "
                    f"sources {list(response.source_keyframe_ids)}; {response.message}")
                results.append({"frame": int(scene.frame_ids[i]), "render_time_s": response.render_time_s,
                                "labels_fused": "labels fused" in response.message, "_labels": labels,
                                "round_trip_s": round_trip, **{k: v for k, v in metrics.items() if k != "confusion"},
                                "_confusion": metrics["confusion"]})
            return results

        # 4. render at the held-out poses
        log(f"rendering {len(held)} held-out views at {args.width}x{args.height}")
        before = render_all("before")
        alone = []
        if args.sray_alone:
            log("the same views by S-Ray alone (use_keyframe_labels off)")
            use_keyframe_labels(False)
            try:
                alone = render_all("sray_alone", panel=False)
            finally:
                use_keyframe_labels(True)
            factor = viz.integer_factor(args.width, PANEL_MIN_WIDTH)
            tw, th = args.width * factor, args.height * factor
            for with_transfer, by_sray in zip(before, alone):
                i = scene.index_of(with_transfer["frame"])
                gt = geometry.resize_nearest(scene.load_labels(i), args.width, args.height)
                compare = viz.panel([
                    (viz.upscale(scene.load_color(i), tw, th, nearest=False), "camera (held out)"),
                    (viz.label_tile(gt, colors, tw, th), "ground truth"),
                    (viz.label_tile(with_transfer["_labels"], colors, tw, th),
                     f"label transfer + S-Ray: acc {100 * with_transfer['accuracy']:.0f}%"),
                    (viz.label_tile(by_sray["_labels"], colors, tw, th),
                     f"S-Ray alone: acc {100 * by_sray['accuracy']:.0f}%")],
                    class_names, colors, [gt, with_transfer["_labels"], by_sray["_labels"]])
                cv2.imwrite(str(out / f"frame_{with_transfer['frame']:06d}_transfer_vs_sray_panel.png"),
                            compare[..., ::-1])

        # 5. short fine-tuning in the background, then render again
        log(f"fine-tuning {args.fine_tune_steps} steps on the buffered keyframes")
        action = ActionClient(node, FineTune, "/sray_node/fine_tune")
        if not action.wait_for_server(timeout_sec=30):
            raise TimeoutError("fine_tune action server not available")
        feedback_steps = []
        goal = wait(action.send_goal_async(FineTune.Goal(max_steps=args.fine_tune_steps, checkpoint_path=str(out / "fine_tuned.pt")),
                                           feedback_callback=lambda f: feedback_steps.append(f.feedback)), "fine_tune goal")
        if not goal.accepted:
            raise RuntimeError("fine_tune goal rejected")
        result = wait(goal.get_result_async(), "fine_tune result").result
        if not result.success:
            raise RuntimeError(f"fine-tuning failed: {result.message}")
        log(f"fine-tuned {result.steps_done} steps, final loss {result.final_loss:.3f}, "
            f"held-out keyframe mIoU {result.holdout_miou:.3f} ({len(feedback_steps)} feedback messages)")
        after = render_all("after")

        # 6. report
        def dataset(results):
            from sray_ros.train.metrics import ConfusionMatrix

            cm = ConfusionMatrix(num_classes)
            for r in results:
                cm.matrix += r.pop("_confusion")
                r.pop("_labels")
            return {"miou": cm.miou(), "accuracy": float(np.mean([r["accuracy"] for r in results])),
                    "coverage": float(np.mean([r["coverage"] for r in results])),
                    "render_time_s": float(np.mean([r["render_time_s"] for r in results])),
                    "round_trip_s": float(np.mean([r["round_trip_s"] for r in results])), "views": results}

        report = {"scene": scene.name, "held_out_frames": [int(scene.frame_ids[i]) for i in held],
                  "render_size": [args.width, args.height], "keyframes": status.keyframe_count,
                  "frames_received": status.frames_received,
                  "rejected": {r: c for r, c in zip(status.reject_reasons, status.reject_counts) if c},
                  "labels": {"noise": args.label_noise, "label_map": status.label_map,
                             "unknown_pixels": status.label_unknown_pixels},
                  "before_fine_tuning": dataset(before), "after_fine_tuning": dataset(after),
                  "sray_alone": dataset(alone) if alone else None,
                  "fine_tune": {"steps": result.steps_done, "final_loss": result.final_loss,
                                "holdout_miou": result.holdout_miou},
                  "wall_time_s": time.monotonic() - started, "device": statuses[-1].device}
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
        print()
        print(f"| {scene.name} ({len(held)} held-out views, {args.width}x{args.height}) | mIoU | accuracy | "
              "labelled coverage | render s |")
        print("|---|---|---|---|---|")
        for tag, key in (("S-Ray alone (no keyframe labels)", "sray_alone"), ("before fine-tuning", "before_fine_tuning"),
                         ("after fine-tuning", "after_fine_tuning")):
            d = report[key]
            if d is None:
                continue
            print(f"| {tag} | {100 * d['miou']:.1f} | {100 * d['accuracy']:.1f} | {100 * d['coverage']:.0f}% | "
                  f"{d['render_time_s']:.1f} |")
        print(f"\noutputs: {out} (panels: *_panel.png, metrics.json); wall time {report['wall_time_s']:.0f} s")
        return 0
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        print(f"[demo] FAILED: {exc}", file=sys.stderr)
        for name, _ in processes.children:
            log_path = work / f"{name}.log"
            if log_path.exists():
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                print(f"--- {name}.log (last lines)\n" + "\n".join(tail), file=sys.stderr)
        return 1
    finally:
        processes.stop_all()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def _link_subset(src: Path, dst: Path, scene, exclude: list[int]) -> None:
    """A ScanNet-layout view of ``src`` without some frames (symlinks; nothing is copied)."""
    excluded = {scene.frame_ids[i] for i in exclude}
    for sub in ("color", "depth", "label-filt", "pose"):
        if not (src / sub).is_dir():
            continue
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for f in (src / sub).iterdir():
            if f.stem.isdigit() and int(f.stem) not in excluded:
                (dst / sub / f.name).symlink_to(f.resolve())
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).symlink_to(f.resolve())
    if (src / "intrinsic").is_dir():
        (dst / "intrinsic").symlink_to((src / "intrinsic").resolve())


if __name__ == "__main__":
    sys.exit(main())
