"""Play a rosbag2 directory (sqlite3 or mcap) with rclpy, for machines without ``ros2 bag``.

Reads with the pure-Python ``rosbags`` reader and publishes every message's **raw CDR bytes**
(``publisher.publish(bytes)``), so what subscribers receive is bit-exact what was recorded; messages
are never deserialised. Behaviour follows ``ros2 bag play``:

* Timing: a message recorded at bag time ``b`` is published at wall time ``w0 + (b - b0) / rate``
  (``b0`` = bag start + ``start_offset``). Bag time is the recorded receive timestamp.
* ``clock``: publishes ``/clock`` (rosgraph_msgs/Clock) at ``clock_hz`` with the current bag time,
  so nodes with ``use_sim_time`` follow the bag. /clock is offered RELIABLE (compatible with both
  reliable and best-effort subscribers; rclpy's TimeSource subscribes best-effort).
* ``loop``: replays from the start with the ORIGINAL stamps, as ``ros2 bag play --loop`` does, so
  subscribers see message and /clock time jump backwards (the node must clear its buffers).
* QoS per topic from the bag's ``offered_qos_profiles`` (metadata v8 stores them as a YAML string,
  v9+ as a list; ``rosbags`` parses both, both are tested). Like rosbag2's adaptation: reliability
  and durability are used when all recorded offers agree (else best effort / volatile), history
  KEEP_LAST with the largest recorded depth (at least 1; KEEP_ALL kept as recorded). Deadline,
  lifespan and liveliness are not replayed. ``/tf_static`` is always TRANSIENT_LOCAL + RELIABLE
  (latched), even when the bag recorded no QoS. Topics without recorded QoS get reliable,
  volatile, keep-last 10.
* Message classes are resolved from the connection's type name (``pkg/msg/Type``) by importing
  ``pkg.msg``; a type whose package is not installed is an error before playback starts, or, with
  ``skip_unknown_types`` (``--skip-unknown-types``), a warning and the topic is left out (what
  ``ros2 bag play`` does). On pip machines tf2_msgs is such a package (no wheel carries it; scripts/setup.sh
  builds the one-message stand-in in ros_shims/).

:class:`BagPlayer` is the in-process core (tests, demos): ``open()``, blocking ``play()``, or
``start()`` / ``stop()`` / ``wait()`` for a background thread. ``main()`` is the CLI
(``python -m sray_ros.ros.bag_player BAG [--rate R] [--clock [HZ]] [--loop] [--topics T ...]
[--start-offset S] [--delay D]``), with clean SIGINT/SIGTERM handling and a progress bar.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

NS_PER_S = 1_000_000_000
DEFAULT_CLOCK_HZ = 40.0  # ros2 bag play's default --clock rate
DEFAULT_DEPTH = 10
TF_STATIC = "/tf_static"


class BagPlayerError(RuntimeError):
    """The bag cannot be played: missing or malformed, unknown message type, bad options."""


@dataclass
class PlaybackStats:
    published: dict[str, int] = field(default_factory=dict)
    loops_completed: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    clock_messages: int = 0


@dataclass(frozen=True)
class TopicPlan:
    """What the player offers for one topic."""

    topic: str
    msgtype: str
    msg_class: type
    qos: object  # rclpy.qos.QoSProfile
    message_count: int


def resolve_message_class(msgtype: str) -> type:
    """The Python class of a ROS type name ``pkg/msg/Type`` (or ``pkg/Type``) by importing ``pkg.msg``."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise BagPlayerError(f"message type {msgtype!r} is not of the form 'package/msg/Type'")
    package, kind, name = parts
    module_name = f"{package}.{kind}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BagPlayerError(
            f"message type {msgtype!r} is not installed: cannot import {module_name} ({exc}). Install the "
            f"interface package (pip wheel 'ros-{package.replace('_', '-')}' or source its workspace), or "
            "leave the topic out with --topics"
        ) from None
    cls = getattr(module, name, None)
    if cls is None:
        raise BagPlayerError(f"message type {msgtype!r}: module {module_name} has no class {name}")
    return cls


def qos_from_recorded(topic: str, offered: Sequence) -> object:
    """An rclpy QoSProfile adapted from the recorded offers (``rosbags.interfaces.Qos`` list)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.interfaces import QosDurability, QosHistory, QosReliability

    profile = QoSProfile(depth=DEFAULT_DEPTH)
    profile.reliability = ReliabilityPolicy.RELIABLE
    profile.durability = DurabilityPolicy.VOLATILE
    if offered:
        reliabilities = {qos.reliability for qos in offered}
        durabilities = {qos.durability for qos in offered}
        profile.reliability = (
            ReliabilityPolicy.RELIABLE if reliabilities == {QosReliability.RELIABLE} else ReliabilityPolicy.BEST_EFFORT
        )
        profile.durability = (
            DurabilityPolicy.TRANSIENT_LOCAL if durabilities == {QosDurability.TRANSIENT_LOCAL}
            else DurabilityPolicy.VOLATILE
        )
        if {qos.history for qos in offered} == {QosHistory.KEEP_ALL}:
            profile.history = HistoryPolicy.KEEP_ALL
        else:
            profile.history = HistoryPolicy.KEEP_LAST
            depths = [int(qos.depth) for qos in offered if int(qos.depth) > 0]
            profile.depth = max(depths) if depths else DEFAULT_DEPTH
    if topic == TF_STATIC:
        profile.durability = DurabilityPolicy.TRANSIENT_LOCAL
        profile.reliability = ReliabilityPolicy.RELIABLE
        if profile.history == HistoryPolicy.KEEP_LAST:
            profile.depth = max(profile.depth, 1)
    return profile


class BagPlayer:
    """Publishes a bag's messages with recorded timing and QoS (see module docstring).

    Needs an initialised rclpy context: pass ``node`` (the player creates its publishers on it) or
    ``context`` (the player creates and owns a node there; default: the global context).
    """

    def __init__(
        self,
        bag_path: str | os.PathLike,
        *,
        rate: float = 1.0,
        clock: bool = False,
        clock_hz: float = DEFAULT_CLOCK_HZ,
        loop: bool = False,
        topics: Sequence[str] | None = None,
        start_offset_s: float = 0.0,
        delay_s: float = 0.0,
        node=None,
        context=None,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
        skip_unknown_types: bool = False,
    ) -> None:
        if not rate > 0:
            raise BagPlayerError(f"rate must be > 0, got {rate}")
        if clock and not clock_hz > 0:
            raise BagPlayerError(f"clock rate must be > 0 Hz, got {clock_hz}")
        if start_offset_s < 0 or delay_s < 0:
            raise BagPlayerError(f"start offset and delay must be >= 0, got {start_offset_s}, {delay_s}")
        self.bag_path = Path(bag_path)
        self.rate = float(rate)
        self.clock = bool(clock)
        self.clock_hz = float(clock_hz)
        self.loop = bool(loop)
        self.topic_filter = None if topics is None else [t if t.startswith("/") else "/" + t for t in topics]
        self.start_offset_ns = int(start_offset_s * NS_PER_S)
        self.delay_s = float(delay_s)
        self.progress = progress
        self.skip_unknown_types = bool(skip_unknown_types)
        self.skipped_topics: dict[str, str] = {}
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self._node = node
        self._context = context
        self._owns_node = node is None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._connections: list = []
        self._publishers: dict[str, object] = {}
        self._clock_pub = None
        self.plans: dict[str, TopicPlan] = {}
        self.start_time_ns = 0
        self.end_time_ns = 0
        self.stats = PlaybackStats()
        self._opened = False

    # ------------------------------------------------------------------------------- set-up
    def open(self) -> BagPlayer:
        """Read metadata, resolve types and QoS, create publishers. Raises BagPlayerError."""
        if self._opened:
            return self
        from rosbags.rosbag2 import Reader

        if not self.bag_path.exists():
            raise BagPlayerError(f"bag {str(self.bag_path)!r} does not exist (expected a rosbag2 directory "
                                 "with metadata.yaml)")
        try:
            with Reader(self.bag_path) as reader:
                connections = list(reader.connections)
                self.start_time_ns, self.end_time_ns = reader.start_time, reader.end_time
        except BagPlayerError:
            raise
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types for bad bags
            raise BagPlayerError(f"cannot read bag {str(self.bag_path)!r}: {type(exc).__name__}: {exc}") from None
        available = sorted({c.topic for c in connections})
        if self.topic_filter is not None:
            missing = [t for t in self.topic_filter if t not in available]
            if missing:
                self._log(f"[bag_player] warning: topics not in the bag: {', '.join(missing)}; "
                          f"bag has {', '.join(available)}")
            connections = [c for c in connections if c.topic in self.topic_filter]
            if not connections:
                raise BagPlayerError(f"none of the requested topics {self.topic_filter} is in the bag; "
                                     f"it has {', '.join(available) or 'no topics'}")
        by_topic: dict[str, list] = {}
        for connection in connections:
            by_topic.setdefault(connection.topic, []).append(connection)
        plans = {}
        for topic, conns in sorted(by_topic.items()):
            types = {c.msgtype for c in conns}
            if len(types) != 1:
                raise BagPlayerError(f"topic {topic} has several message types in the bag: {sorted(types)}")
            fmt = {getattr(c.ext, "serialization_format", "cdr") for c in conns}
            if fmt != {"cdr"}:
                raise BagPlayerError(f"topic {topic} is serialised as {sorted(fmt)}; only cdr can be published")
            msgtype = conns[0].msgtype
            try:
                msg_class = resolve_message_class(msgtype)
            except BagPlayerError as exc:
                if not self.skip_unknown_types:
                    raise
                self.skipped_topics[topic] = str(exc)
                self._log(f"[bag_player] warning: skipping {topic}: {exc}")
                continue
            offered = [qos for c in conns for qos in getattr(c.ext, "offered_qos_profiles", [])]
            plans[topic] = TopicPlan(topic, msgtype, msg_class, qos_from_recorded(topic, offered),
                                     sum(c.msgcount for c in conns))
        if not plans:
            raise BagPlayerError(f"no playable topics in {str(self.bag_path)!r}: all were skipped")
        connections = [c for c in connections if c.topic in plans]
        self._connections = connections
        self.plans = plans
        self._create_publishers()
        self._opened = True
        return self

    def _create_publishers(self) -> None:
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        if self._node is None:
            self._node = rclpy.create_node(f"sray_bag_player_{os.getpid()}", context=self._context,
                                           start_parameter_services=False)
        for topic, plan in self.plans.items():
            self._publishers[topic] = self._node.create_publisher(plan.msg_class, topic, plan.qos)
        if self.clock:
            self._clock_pub = self._node.create_publisher(
                Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))

    @property
    def node(self):
        return self._node

    def publisher(self, topic: str):
        return self._publishers[topic]

    def wait_for_subscribers(self, count: int = 1, timeout_s: float = 10.0, topics: Sequence[str] | None = None,
                             settle_s: float = 0.5) -> bool:
        """Wait (polling the graph) until each publisher (of ``topics``, default all) has ``count`` matches,
        then ``settle_s`` more seconds.

        DDS discovery is two-sided: the publisher counting a subscription does not mean the subscriber's
        reader has matched this writer yet, and a message sent in between is lost to it (seen under load:
        3 of 4 messages arrived). The settle time covers the other side's match."""
        self.open()
        names = list(self._publishers) if topics is None else list(topics)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._publishers[t].get_subscription_count() >= count for t in names):
                return not self._stop.wait(settle_s)
            if self._stop.wait(0.01):
                return False
        return False

    # ------------------------------------------------------------------------------- playback
    def play(self) -> PlaybackStats:
        """Blocking playback (all loops); returns when finished or stopped."""
        self.open()
        started = time.monotonic()
        self.stats = PlaybackStats(published={topic: 0 for topic in self.plans})
        bar = self._progress_bar()
        try:
            if self.delay_s and self._stop.wait(self.delay_s):
                self.stats.interrupted = True
                return self.stats
            while not self._stop.is_set():
                if bar is not None:
                    bar.reset()
                finished = self._play_once(bar)
                if not finished:
                    break
                self.stats.loops_completed += 1
                if not self.loop:
                    break
            self.stats.interrupted = self._stop.is_set()
        finally:
            if bar is not None:
                bar.close()
            self.stats.wall_s = time.monotonic() - started
        return self.stats

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm import tqdm

        total = sum(plan.message_count for plan in self.plans.values())
        return tqdm(total=total, unit="msg", desc=f"playing {self.bag_path.name}", file=sys.stderr,
                    mininterval=0.5, dynamic_ncols=True)

    def _publish_clock(self, bag_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), NS_PER_S)
        self._clock_pub.publish(msg)
        self.stats.clock_messages += 1

    def _play_once(self, bar) -> bool:
        """One pass over the bag. Returns False when stopped."""
        from rosbags.rosbag2 import Reader

        bag0 = self.start_time_ns + self.start_offset_ns
        period = 1.0 / self.clock_hz
        with Reader(self.bag_path) as reader:
            wall0 = time.monotonic()
            next_tick = wall0
            for connection, stamp_ns, raw in reader.messages(connections=self._connections, start=bag0):
                target = wall0 + (stamp_ns - bag0) / NS_PER_S / self.rate
                while True:
                    if self._stop.is_set():
                        return False
                    now = time.monotonic()
                    if self._clock_pub is not None and now >= next_tick:
                        self._publish_clock(bag0 + int((now - wall0) * self.rate * NS_PER_S))
                        next_tick = max(next_tick + period, now + 0.5 * period)  # no bursts after a stall
                    if now >= target:
                        break
                    until = min(target, next_tick) if self._clock_pub is not None else target
                    self._stop.wait(max(0.0, until - now))
                self._publishers[connection.topic].publish(bytes(raw))
                self.stats.published[connection.topic] += 1
                if bar is not None:
                    bar.update(1)
        return True

    # ---------------------------------------------------------------------------- threading
    def start(self) -> threading.Thread:
        """Run :meth:`play` in a daemon thread; use :meth:`stop` and :meth:`wait`."""
        self.open()
        if self._thread is not None and self._thread.is_alive():
            raise BagPlayerError("playback is already running")
        self._stop.clear()
        self._error = None

        def run() -> None:
            try:
                self.play()
            except BaseException as exc:  # noqa: BLE001 - re-raised in wait()
                self._error = exc

        self._thread = threading.Thread(target=run, name="bag_player", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Ask playback to stop (thread-safe, also from a signal handler)."""
        self._stop.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for a started playback; True when it ended. Re-raises an error of the playback thread."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return False
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop, wait, and destroy the publishers (and the node if the player created it)."""
        self.stop()
        if self._thread is not None:
            self._thread.join()
        if self._node is not None:
            for pub in list(self._publishers.values()) + ([self._clock_pub] if self._clock_pub else []):
                self._node.destroy_publisher(pub)
            self._publishers.clear()
            self._clock_pub = None
            if self._owns_node:
                self._node.destroy_node()
                self._node = None
        self._opened = False

    def __enter__(self) -> BagPlayer:
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- CLI
def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sray-play-bag",
        description="Play a rosbag2 directory (sqlite3 or mcap) with recorded timing and QoS, like "
                    "'ros2 bag play', on machines without ros2cli/rosbag2_py.",
    )
    parser.add_argument("bag", help="rosbag2 directory (holding metadata.yaml)")
    parser.add_argument("--rate", "-r", type=float, default=1.0, help="playback speed factor (default 1)")
    parser.add_argument("--clock", nargs="?", type=float, const=DEFAULT_CLOCK_HZ, default=None, metavar="HZ",
                        help=f"publish /clock at HZ (default {DEFAULT_CLOCK_HZ:g}) with the bag time")
    parser.add_argument("--loop", "-l", action="store_true", help="replay forever (original stamps each time)")
    parser.add_argument("--topics", nargs="+", default=None, metavar="T", help="only these topics")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="S",
                        help="skip the first S seconds of the bag")
    parser.add_argument("--delay", "-d", type=float, default=0.0, metavar="D",
                        help="wait D seconds after creating publishers (discovery) before playing")
    parser.add_argument("--wait-for-subscribers", nargs="+", default=None, metavar="TOPIC",
                        help="before playing, wait until each of these topics has a matched subscriber (a "
                             "node that is still starting would otherwise miss the first messages)")
    parser.add_argument("--wait-timeout", type=float, default=30.0, metavar="S",
                        help="how long --wait-for-subscribers waits before playing anyway (default 30)")
    parser.add_argument("--skip-unknown-types", action="store_true",
                        help="skip topics whose message package is not installed (warn) instead of failing, "
                             "like 'ros2 bag play' does")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    # Own signal handling: stop playback cleanly instead of rclpy shutting the context down under us.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    player = None

    def on_signal(signum, frame) -> None:
        if player is None:
            raise KeyboardInterrupt
        player.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        player = BagPlayer(args.bag, rate=args.rate, clock=args.clock is not None,
                           clock_hz=args.clock or DEFAULT_CLOCK_HZ, loop=args.loop, topics=args.topics,
                           start_offset_s=args.start_offset, delay_s=args.delay, progress=not args.no_progress,
                           skip_unknown_types=args.skip_unknown_types)
        player.open()
        for plan in player.plans.values():
            qos = plan.qos
            print(f"[bag_player] {plan.topic} [{plan.msgtype}] {plan.message_count} msgs, "
                  f"{qos.reliability.name.lower()}/{qos.durability.name.lower()}/depth {qos.depth}",
                  file=sys.stderr)
        if args.wait_for_subscribers:
            unknown = sorted(set(args.wait_for_subscribers) - set(player.plans))
            if unknown:
                raise BagPlayerError(f"--wait-for-subscribers: {unknown} not in the bag (topics: {sorted(player.plans)})")
            if not player.wait_for_subscribers(1, args.wait_timeout, args.wait_for_subscribers):
                print(f"[bag_player] warning: no subscriber matched on all of {args.wait_for_subscribers} within "
                      f"{args.wait_timeout:g} s; playing anyway", file=sys.stderr)
        stats = player.play()
        total = sum(stats.published.values())
        state = "interrupted" if stats.interrupted else "done"
        print(f"[bag_player] {state}: {total} messages in {stats.wall_s:.2f} s, {stats.loops_completed} loop(s) "
              f"completed, {stats.clock_messages} /clock messages", file=sys.stderr)
        return 0
    except BagPlayerError as exc:
        print(f"[bag_player] error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("[bag_player] interrupted before playback", file=sys.stderr)
        return 0
    finally:
        if player is not None:
            player.close()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
