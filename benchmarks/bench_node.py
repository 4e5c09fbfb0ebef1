"""Node benchmarks (a script, not a test): ROS overhead of a render, intake while rendering, and a soak.

    source scripts/env.sh && python benchmarks/bench_node.py [--checkpoint M] [--soak-s 120] [--markdown]

1. Service round trip vs the node's own render time for the same request (``render_time_s`` in the
   response is measured inside the node): their ratio is the ROS overhead.
2. Intake throughput while a render runs: frames/s published vs accepted into the node's intake.
   With ``--clock-hz HZ`` the node runs on sim time (``use_sim_time``) and the same render is timed with and
   without ``/clock`` published at HZ (alternating, ``--clock-renders`` each), with the node's CPU use while
   idle under /clock; ``--clock-only`` stops after that.
3. Soak: 640x480 rgb8 frames at 30 Hz (+ camera_info and /tf) for ``--soak-s`` seconds with a render every
   5 s; frame-handling errors (rejections other than ``too_close``) and the node's resident memory over time
   (NodeStatus.resident_memory_mb), which should be flat once the keyframe ring is full.

Everything runs on localhost (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in its own ROS domain; bounded in time.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


class _Done(Exception):
    """Raised to skip the remaining sections (--clock-only)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="", help="default: the shipped model")
    parser.add_argument("--soak-s", type=float, default=120.0)
    parser.add_argument("--render-size", default="80x60")
    parser.add_argument("--domain-id", type=int, default=97)
    parser.add_argument("--clock-hz", type=float, default=0.0,
                        help="node on use_sim_time; time renders with and without /clock at this rate (0 = off)")
    parser.add_argument("--clock-renders", type=int, default=3, help="renders per condition with --clock-hz")
    parser.add_argument("--clock-only", action="store_true", help="stop after the /clock comparison")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=YAML",
                        help="extra node parameter, e.g. --param tf_timeout_s=1.0")
    parser.add_argument("--reliable", action="store_true",
                        help="publish images and camera_info reliably and set the node's sensor_data_qos false "
                             "(default: SensorDataQoS on both sides, as with a camera driver)")
    args = parser.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    work = Path(tempfile.mkdtemp(prefix="sray_bench_"))
    os.environ.setdefault("ROS_LOG_DIR", str(work / "log"))

    import rclpy
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TransformStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from sray_ros.msg import NodeStatus
    from sray_ros.ros.image_conversion import make_camera_info
    from sray_ros.srv import RenderSemanticView

    width, height = (int(v) for v in args.render_size.split("x"))
    params = {"use_sim_time": args.clock_hz > 0, "max_keyframes": 32, "min_translation_m": 0.05, "min_rotation_deg": 5.0,
              "sensor_data_qos": not args.reliable}
    for item in args.param:
        name, _, value = item.partition("=")
        params[name] = yaml.safe_load(value)
    if args.checkpoint:
        params["checkpoint"] = args.checkpoint
    overrides = work / "params.yaml"
    overrides.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    node_cmd = [sys.executable, str(REPO / ".ros_ws/install/sray_ros/lib/sray_ros/sray_node"), "--ros-args",
                "--params-file", str(REPO / "config/sray.yaml"), "--params-file", str(overrides)]
    log = open(work / "node.log", "wb")
    proc = subprocess.Popen(node_cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node("sray_bench")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    statuses: list = []
    node.create_subscription(NodeStatus, "/sray_node/status", statuses.append, 10)
    image_qos = QoSProfile(depth=30) if args.reliable else qos_profile_sensor_data
    color_pub = node.create_publisher(Image, "/color/image", image_qos)
    info_pub = node.create_publisher(CameraInfo, "/color/camera_info", image_qos)
    tf_pub = node.create_publisher(TFMessage, "/tf", 100)
    render = node.create_client(RenderSemanticView, "/sray_node/render_semantic_view")
    rows: list[str] = []
    try:
        if not render.wait_for_service(timeout_sec=120):
            raise SystemExit(f"node did not start; see {work / 'node.log'}")
        K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        published = [0]

        def publish(k: int) -> None:
            t = time.time()
            stamp = Time(sec=int(t), nanosec=int((t % 1) * 1e9))
            angle = 0.02 * k  # a camera circling slowly in a 2 m room-sized area
            tf = TransformStamped(header=Header(stamp=stamp, frame_id="map"), child_frame_id="camera")
            tf.transform.translation.x, tf.transform.translation.y = float(np.cos(angle)), float(np.sin(angle))
            tf.transform.translation.z = 1.5
            tf.transform.rotation.x, tf.transform.rotation.y = -0.5, 0.5  # optical frame looking along +x
            tf.transform.rotation.z, tf.transform.rotation.w = -0.5, 0.5
            tf_pub.publish(TFMessage(transforms=[tf]))
            header = Header(stamp=stamp, frame_id="camera")
            info_pub.publish(make_camera_info(K, 640, 480, header))
            msg = Image(header=header, height=480, width=640, encoding="rgb8", step=640 * 3)
            msg.data = image.tobytes()
            color_pub.publish(msg)
            published[0] += 1

        def stream(seconds: float, hz: float = 30.0) -> None:
            start = time.monotonic()
            k = 0
            while time.monotonic() - start < seconds:
                publish(published[0])
                k += 1
                delay = start + k / hz - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        stream(5.0)  # fill some keyframes
        time.sleep(1.0)

        def request() -> RenderSemanticView.Request:
            req = RenderSemanticView.Request()
            req.target_pose.header.frame_id = "camera"
            req.target_pose.pose.orientation.w = 1.0
            req.camera_info = make_camera_info(K * np.array([[width / 640], [height / 480], [1]]), width, height)
            return req

        def call() -> tuple[float, object]:
            t0 = time.perf_counter()
            future = render.call_async(request())
            while not future.done():
                time.sleep(0.001)
            return time.perf_counter() - t0, future.result()

        # 1. ROS overhead
        pairs = []
        for _ in range(5):
            round_trip, response = call()
            if not response.success:
                raise SystemExit(f"render failed: {response.message}")
            pairs.append((round_trip, response.render_time_s))
        rt, inside = (float(np.median([p[i] for p in pairs])) for i in (0, 1))
        rows.append(f"| render {width}x{height}: service round trip (median of 5) | {rt:.3f} s |")
        rows.append(f"| same request, time inside the node | {inside:.3f} s |")
        rows.append(f"| ROS overhead: round trip / in-node | {rt / inside:.3f} ({1000 * (rt - inside):.1f} ms) |")

        if args.clock_hz > 0:
            # 1b. /clock: frames keep wall stamps (TF lookups are by stamp), only the node's clock follows /clock.
            clock_pub = node.create_publisher(Clock, "/clock", 10)
            clock_on = threading.Event()
            clock_done = threading.Event()

            def clock_loop() -> None:
                while not clock_done.is_set():
                    if clock_on.is_set():
                        t = time.time()
                        clock_pub.publish(Clock(clock=Time(sec=int(t), nanosec=int((t % 1) * 1e9))))
                    time.sleep(1.0 / args.clock_hz)

            threading.Thread(target=clock_loop, daemon=True).start()

            def node_cpu_s() -> float:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

            times: dict[bool, list[float]] = {True: [], False: []}
            cores: dict[bool, list[float]] = {True: [], False: []}
            idle: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.clock_renders):
                for with_clock in (True, False):
                    (clock_on.set if with_clock else clock_on.clear)()
                    time.sleep(1.0)
                    c0, t0 = node_cpu_s(), time.monotonic()
                    time.sleep(3.0)
                    idle[with_clock].append((node_cpu_s() - c0) / (time.monotonic() - t0))
                    c0, t0 = node_cpu_s(), time.monotonic()
                    _, response = call()
                    if not response.success:
                        raise SystemExit(f"render failed: {response.message}")
                    times[with_clock].append(response.render_time_s)
                    cores[with_clock].append((node_cpu_s() - c0) / (time.monotonic() - t0))
            clock_done.set()
            for with_clock in (True, False):
                label = f"with /clock at {args.clock_hz:g} Hz" if with_clock else "without /clock"
                rows.append(f"| sim time, render {width}x{height} {label}: time inside the node (each) | "
                            + " / ".join(f"{t:.2f}" for t in times[with_clock]) + " s |")
                rows.append(f"| sim time {label}: node CPU during the render / while idle (median) | "
                            f"{np.median(cores[with_clock]):.2f} / {np.median(idle[with_clock]):.3f} cores |")
            if args.clock_only:
                raise _Done

        # 2. intake alone, then while rendering
        before, sent_before = statuses[-1].frames_received, published[0]
        stream(10.0)
        time.sleep(1.5)
        received, sent = statuses[-1].frames_received - before, published[0] - sent_before
        rows.append(f"| intake alone (no render): frames received / published at 30 Hz | {received} / {sent} "
                    f"({received / 10.0:.1f} frames/s) |")
        before = statuses[-1].frames_received
        sent_before = published[0]
        done = threading.Event()
        durations = []

        def renders() -> None:
            while not done.is_set():
                durations.append(call()[0])

        worker = threading.Thread(target=renders)
        worker.start()
        stream(10.0)
        done.set()
        worker.join()
        time.sleep(1.5)
        received = statuses[-1].frames_received - before
        sent = published[0] - sent_before
        rows.append(f"| intake while rendering back-to-back ({len(durations)} renders in 10 s): frames received "
                    f"/ published at 30 Hz | {received} / {sent} ({received / 10.0:.1f} frames/s) |")

        # 3. soak
        memory = []
        answered, requested = [0], [0]

        def soak_render() -> None:
            call()
            answered[0] += 1

        errors_before = {r: c for r, c in zip(statuses[-1].reject_reasons, statuses[-1].reject_counts)}
        start = time.monotonic()
        next_render = start + 5.0
        k = 0
        while time.monotonic() - start < args.soak_s:
            publish(published[0])
            k += 1
            if time.monotonic() >= next_render:
                requested[0] += 1
                threading.Thread(target=soak_render, daemon=True).start()
                next_render += 5.0
            if statuses and (not memory or time.monotonic() - memory[-1][0] >= 5.0):
                memory.append((time.monotonic(), statuses[-1].resident_memory_mb, statuses[-1].keyframe_count))
            delay = start + k / 30.0 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        time.sleep(2.0)
        last = statuses[-1]
        # too_close (not a keyframe) and intake_overflow (frames dropped because intake is busy) are not
        # frame-handling errors.
        delta = {r: c - errors_before.get(r, 0) for r, c in zip(last.reject_reasons, last.reject_counts)}
        errors = {r: d for r, d in delta.items() if r not in ("too_close", "intake_overflow") and d > 0}
        rows.append(f"| soak: frames dropped at intake under overload (synchroniser queue overflow) | "
                    f"{delta.get('intake_overflow', 0)} |")
        full = [m for m in memory if m[2] >= 32] or memory
        rss = [m[1] for m in full]
        rows.append(f"| soak 640x480 @ 30 Hz for {args.soak_s:.0f} s, render every 5 s: frame-handling errors | "
                    f"{errors or 'none'} |")
        rows.append(f"| soak: resident memory once the ring is full (min / max / last) | {min(rss):.0f} / "
                    f"{max(rss):.0f} / {rss[-1]:.0f} MB over {len(rss)} samples |")
        rows.append("| soak: resident memory every 5 s (MB) | " + " ".join(f"{m[1]:.0f}" for m in memory) + " |")
        rows.append(f"| soak: renders answered / requested | {answered[0]} / {requested[0]} |")
        rows.append(f"| soak: node alive at the end | {proc.poll() is None} |")
    except _Done:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    print(f"\n## Node benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}. "
          f"Command: `python benchmarks/bench_node.py --soak-s {args.soak_s:.0f} --render-size {args.render_size}"
          + (f" --clock-hz {args.clock_hz:g} --clock-renders {args.clock_renders}" if args.clock_hz > 0 else "")
          + (" --clock-only" if args.clock_only else "") + "`.\n")
    print(f"Load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1/5/15 min).\n")
    print("| measurement | value |\n|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
