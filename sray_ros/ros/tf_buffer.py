"""The project's own /tf + /tf_static buffer with tf2's lookup semantics.

Decision: the node ALWAYS uses this buffer, fed from its own /tf and /tf_static subscriptions, and
never ``tf2_ros.Buffer``, even on a robot where tf2_ros is installed. tf2_ros has no pip wheel, so
a "tf2_ros when importable" path would be a second code path that no test on our machines runs.
One implementation, tested here, is what runs on the robot.

Semantics, following tf2's ``BufferCore``:

* ``lookup_transform(target, source, time)`` returns ``T_target_source`` (4x4, float64): it maps
  points expressed in ``source`` into ``target`` (``p_target = T @ p_source``). The chain goes
  through the common ancestor of both frames in the tree.
* Per child frame the buffer keeps stamped transforms for ``cache_time_s`` (default 10 s) behind the
  newest one. Between two stamps the translation is interpolated linearly and the rotation by slerp;
  an exact stamp is returned as stored. A single stored transform is valid only at its own stamp.
* Static transforms (``is_static=True``, i.e. /tf_static) are valid at every time and never expire.
* ``time == 0`` asks for the latest common time: the newest stamp at which every dynamic link of the
  chain has data (the minimum of the links' newest stamps); a chain of static links resolves at 0.
* Errors (all :class:`TransformError` subclasses, messages name frames and times):
  :class:`FrameNotFoundError` (unknown frame; lists the known frames), :class:`ExtrapolationError`
  (requested time outside a link's data; gives the available interval), :class:`ConnectivityError`
  (frames in disconnected trees; names both roots), :class:`InvalidTransformError` (bad input to
  :meth:`TransformBuffer.set_transform`).
* Data older than ``newest - cache_time`` for its frame is dropped (``set_transform`` returns False),
  like tf2's TF_OLD_DATA. After a backwards jump of ROS time (bag loop) the owner calls :meth:`clear`,
  which keeps static transforms (as tf2's static cache does).
* A child frame normally has one parent. Real robots sometimes publish two (SLAM's ``map -> camera`` and
  odometry's ``odom -> camera``): the buffer keeps each parent's history (a re-parenting wipes nothing),
  names the conflict once (:meth:`TransformBuffer.take_conflicts`: the child and both parents), and a
  lookup uses the parent updated last whose chain connects the two frames at the requested time, else
  another parent's (tf2 would answer with the last parent only, or fail with "extrapolation").
* A parent loop (``a -> b -> a``) is a :class:`LoopError` naming the loop; a lookup with a timeout raises it
  at once instead of waiting (more transforms cannot remove a loop from the chain that was asked for).

Threading: every public method holds one lock; ``lookup_transform(..., timeout=s)`` waits on a
condition variable notified by ``set_transform``, so the node's render worker can block for a
transform while intake callbacks keep inserting. The timeout is wall-clock time.

Times are integer nanoseconds; :func:`to_nanoseconds` also accepts ``rclpy.time.Time``,
``builtin_interfaces/Time`` and float seconds.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time as _time
from dataclasses import dataclass, field

import numpy as np
import torch
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import TransformStamped

from sray_ros import geometry

NS_PER_S = 1_000_000_000
MAX_GRAPH_DEPTH = 1000  # tf2's limit; guards against parent loops
MAX_CHAINS = 16  # parent-chain combinations a lookup tries when frames have more than one parent


class TransformError(Exception):
    """Base of all lookup / insertion errors of :class:`TransformBuffer`."""


class FrameNotFoundError(TransformError):
    """A requested frame has never been seen (neither as child nor as parent)."""


class ExtrapolationError(TransformError):
    """The requested time lies outside the data buffered for a link of the chain."""


class ConnectivityError(TransformError):
    """The two frames are not connected in the tree (different roots)."""


class LoopError(ConnectivityError):
    """The parent chain of a frame returns to a frame already on it (published transforms form a loop)."""


class InvalidTransformError(TransformError, ValueError):
    """A TransformStamped given to ``set_transform`` is malformed (empty/equal frame ids, NaN, zero quaternion)."""


def to_nanoseconds(stamp) -> int:
    """Integer nanoseconds from int ns, float seconds, ``rclpy.time.Time`` or ``builtin_interfaces/Time``."""
    if isinstance(stamp, (int, np.integer)) and not isinstance(stamp, bool):
        return int(stamp)
    if isinstance(stamp, float):
        return int(round(stamp * NS_PER_S))
    if isinstance(stamp, TimeMsg):
        return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)
    nanoseconds = getattr(stamp, "nanoseconds", None)  # rclpy.time.Time, without importing rclpy
    if isinstance(nanoseconds, int):
        return nanoseconds
    raise TypeError(f"cannot interpret {stamp!r} ({type(stamp).__name__}) as a time; expected int nanoseconds, "
                    "float seconds, rclpy.time.Time or builtin_interfaces/Time")


def nanoseconds_to_msg(ns: int) -> TimeMsg:
    msg = TimeMsg()
    msg.sec, msg.nanosec = divmod(int(ns), NS_PER_S)
    return msg


def _fmt(ns: int) -> str:
    return f"{ns / NS_PER_S:.9f}"


def _matrix(translation: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    return geometry.pose_from_translation_quaternion(
        torch.from_numpy(translation), torch.from_numpy(quat_xyzw)
    ).numpy()


@dataclass
class _Link:
    """Transforms parent <- child for one child frame."""

    parent: str
    authority: str
    static: bool
    stamps: list[int] = field(default_factory=list)  # sorted ascending
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)
    # 4x4 per stamp, computed on first lookup: inserts (hundreds per second from /tf) stay cheap,
    # the torch-based geometry helpers cost ~0.2 ms per call.
    matrices: list[np.ndarray | None] = field(default_factory=list)

    def matrix(self, i: int) -> np.ndarray:
        m = self.matrices[i]
        if m is None:
            m = self.matrices[i] = _matrix(self.translations[i], self.quaternions[i])
        return m

    def interval(self) -> tuple[int, int]:
        return self.stamps[0], self.stamps[-1]

    def at(self, t_ns: int, child: str) -> np.ndarray:
        """T_parent_child at ``t_ns`` (ignored for static links)."""
        if self.static:
            return self.matrix(-1)
        oldest, newest = self.interval()
        if t_ns > newest or t_ns < oldest:
            direction = "future" if t_ns > newest else "past"
            raise ExtrapolationError(
                f"lookup would require extrapolation into the {direction}: requested time {_fmt(t_ns)} but "
                f"transform {self.parent} <- {child} is available only in [{_fmt(oldest)}, {_fmt(newest)}] "
                f"({len(self.stamps)} stamp(s), authority {self.authority!r})"
            )
        i = bisect.bisect_left(self.stamps, t_ns)
        if self.stamps[i] == t_ns:
            return self.matrix(i)
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        ratio = (t_ns - t0) / (t1 - t0)
        translation = self.translations[i - 1] + ratio * (self.translations[i] - self.translations[i - 1])
        quat = geometry.quaternion_slerp(
            torch.from_numpy(self.quaternions[i - 1]), torch.from_numpy(self.quaternions[i]), ratio
        ).numpy()
        return _matrix(translation, quat)


class TransformBuffer:
    """Thread-safe buffer of /tf and /tf_static with tf2 lookup semantics (see module docstring)."""

    def __init__(self, cache_time_s: float = 10.0) -> None:
        if not cache_time_s > 0:
            raise ValueError(f"cache_time_s must be > 0, got {cache_time_s}")
        self.cache_time_ns = int(cache_time_s * NS_PER_S)
        # child -> parent -> link; a child's last-updated parent is its dict's last entry (the current one).
        self._links: dict[str, dict[str, _Link]] = {}
        self._conflicts: dict[str, tuple[str, ...]] = {}  # child -> parents, once named
        self._new_conflicts: list[str] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    # ------------------------------------------------------------------------------------ insert
    def set_transform(self, transform: TransformStamped, authority: str = "", is_static: bool = False) -> bool:
        """Insert one transform (parent = ``header.frame_id``, child = ``child_frame_id``).

        Returns False when the data is older than the cache window of its frame and was dropped.
        Raises :class:`InvalidTransformError` for malformed input.
        """
        parent = transform.header.frame_id.lstrip("/")
        child = transform.child_frame_id.lstrip("/")
        if not parent or not child:
            raise InvalidTransformError(
                f"transform from authority {authority!r} has an empty frame id (parent {parent!r}, child {child!r})"
            )
        if parent == child:
            raise InvalidTransformError(f"transform from authority {authority!r} has parent == child == {child!r}")
        tr, rot = transform.transform.translation, transform.transform.rotation
        translation = np.array([tr.x, tr.y, tr.z], dtype=np.float64)
        quat = np.array([rot.x, rot.y, rot.z, rot.w], dtype=np.float64)
        norm = float(np.linalg.norm(quat))
        if not (np.all(np.isfinite(translation)) and np.all(np.isfinite(quat))) or norm < 1e-6:
            raise InvalidTransformError(
                f"transform {parent} <- {child} from authority {authority!r} is not finite or has a zero "
                f"quaternion: translation {translation.tolist()}, rotation (x, y, z, w) {quat.tolist()}"
            )
        quat = quat / norm
        stamp = to_nanoseconds(transform.header.stamp)
        matrix = None
        with self._changed:
            parents = self._links.setdefault(child, {})
            link = parents.pop(parent, None)
            if link is None or link.static != is_static:
                link = _Link(parent=parent, authority=authority, static=is_static)
            parents[parent] = link  # last entry: the current parent
            if len(parents) > 1:
                self._note_conflict(child, parents)
            link.authority = authority
            if is_static:
                link.stamps[:] = [stamp]
                link.translations[:] = [translation]
                link.quaternions[:] = [quat]
                link.matrices[:] = [matrix]
            else:
                if link.stamps and stamp < link.stamps[-1] - self.cache_time_ns:
                    return False
                i = bisect.bisect_left(link.stamps, stamp)
                if i < len(link.stamps) and link.stamps[i] == stamp:
                    link.translations[i], link.quaternions[i], link.matrices[i] = translation, quat, matrix
                else:
                    link.stamps.insert(i, stamp)
                    link.translations.insert(i, translation)
                    link.quaternions.insert(i, quat)
                    link.matrices.insert(i, matrix)
                cut = bisect.bisect_left(link.stamps, link.stamps[-1] - self.cache_time_ns)
                if cut:
                    del link.stamps[:cut], link.translations[:cut], link.quaternions[:cut], link.matrices[:cut]
            self._changed.notify_all()
        return True

    def set_transforms(self, transforms, authority: str = "", is_static: bool = False) -> list[str]:
        """Insert every transform of a TFMessage's list; returns the error messages of rejected ones."""
        errors = []
        for transform in transforms:
            try:
                self.set_transform(transform, authority, is_static)
            except InvalidTransformError as exc:
                errors.append(str(exc))
        return errors

    def _note_conflict(self, child: str, parents: dict[str, _Link]) -> None:
        names = tuple(sorted(parents))
        if self._conflicts.get(child) != names:
            self._conflicts[child] = names
            described = ", ".join(f"'{p}' (authority {link.authority!r})" for p, link in parents.items())
            self._new_conflicts.append(
                f"frame '{child}' has {len(names)} parents: {described}; both histories are kept and a lookup "
                f"uses the parent that connects the frames asked for (the last updated first). Publish one "
                f"parent per frame (e.g. map -> odom -> camera) to make the tree unambiguous")

    def take_conflicts(self) -> list[str]:
        """Messages naming frames found with more than one parent since the last call (each conflict once)."""
        with self._lock:
            messages, self._new_conflicts = self._new_conflicts, []
        return messages

    def clear(self, include_static: bool = False) -> None:
        """Drop all dynamic transforms (e.g. after ROS time jumped backwards); static ones stay."""
        with self._changed:
            if include_static:
                self._links.clear()
            else:
                kept = {child: {p: link for p, link in parents.items() if link.static}
                        for child, parents in self._links.items()}
                self._links = {child: parents for child, parents in kept.items() if parents}
            self._conflicts.clear()

    # ------------------------------------------------------------------------------------ query
    def known_frames(self) -> list[str]:
        with self._lock:
            frames = set(self._links) | {parent for parents in self._links.values() for parent in parents}
        return sorted(frames)

    def lookup_transform(self, target_frame: str, source_frame: str, time=0, timeout: float | None = None) -> np.ndarray:
        """``T_target_source`` (4x4 float64) at ``time`` (0 = latest common time).

        With ``timeout`` (float seconds or ``rclpy.duration.Duration``; wall clock) waits for the transform to become available and raises
        the last lookup error when it does not in time.
        """
        return self._lookup(target_frame, source_frame, time, timeout)[0]

    def lookup_transform_stamped(self, target_frame: str, source_frame: str, time=0,
                                 timeout: float | None = None) -> TransformStamped:
        """Like :meth:`lookup_transform` as a TransformStamped (header.frame_id = target, child = source)
        stamped with the time actually used (the latest common time when ``time`` is 0)."""
        matrix, stamp = self._lookup(target_frame, source_frame, time, timeout)
        msg = TransformStamped()
        msg.header.frame_id = target_frame.lstrip("/")
        msg.child_frame_id = source_frame.lstrip("/")
        msg.header.stamp = nanoseconds_to_msg(stamp)
        tr = msg.transform.translation
        tr.x, tr.y, tr.z = (float(v) for v in matrix[:3, 3])
        quat = geometry.matrix_to_quaternion(torch.from_numpy(np.ascontiguousarray(matrix[:3, :3]))).numpy()
        rot = msg.transform.rotation
        rot.x, rot.y, rot.z, rot.w = (float(v) for v in quat)
        return msg

    def can_transform(self, target_frame: str, source_frame: str, time=0, timeout: float | None = None) -> bool:
        try:
            self._lookup(target_frame, source_frame, time, timeout)
        except TransformError:
            return False
        return True

    def _lookup(self, target_frame: str, source_frame: str, time, timeout: float | None) -> tuple[np.ndarray, int]:
        t_ns = to_nanoseconds(time)
        target, source = target_frame.lstrip("/"), source_frame.lstrip("/")
        if timeout is not None and not isinstance(timeout, (int, float)):
            timeout = to_nanoseconds(timeout) / NS_PER_S  # rclpy.duration.Duration, as tf2_ros takes
        deadline = None if not timeout else _time.monotonic() + timeout
        with self._changed:
            while True:
                try:
                    return self._lookup_locked(target, source, t_ns)
                except LoopError:
                    raise
                except TransformError:
                    remaining = None if deadline is None else deadline - _time.monotonic()
                    if remaining is None or remaining <= 0:
                        raise
                    self._changed.wait(remaining)

    def _chains(self, frame: str):
        """Every parent chain of ``frame`` up to a root, as ``[(child, link), ...]`` (frame first), the current
        parents' chain first; a chain that returns to a frame on it raises :class:`LoopError` when reached."""
        def walk(chain: list[tuple[str, _Link]], seen: list[str]):
            parents = self._links.get(seen[-1])
            if not parents:
                yield chain
                return
            for link in reversed(list(parents.values())):
                if link.parent in seen or len(seen) > MAX_GRAPH_DEPTH:
                    loop = seen[seen.index(link.parent):] + [link.parent] if link.parent in seen else seen[:10]
                    raise LoopError(f"frame {frame!r}: the parent chain loops: {' -> '.join(loop)} (a parent "
                                    "published for a frame that is its own ancestor)")
                yield from walk(chain + [(seen[-1], link)], seen + [link.parent])
        yield from walk([], [frame])

    def _lookup_locked(self, target: str, source: str, t_ns: int) -> tuple[np.ndarray, int]:
        known = set(self._links) | {parent for parents in self._links.values() for parent in parents}
        for role, frame in (("target", target), ("source", source)):
            if frame not in known:
                listing = ", ".join(sorted(known)) if known else "none (no transforms received yet)"
                raise FrameNotFoundError(f"{role} frame {frame!r} does not exist; known frames: {listing}")
        if target == source:
            return np.eye(4), t_ns
        first_error: TransformError | None = None
        loop: LoopError | None = None
        try:
            target_chains = list(itertools.islice(self._chains(target), MAX_CHAINS))
        except LoopError as exc:
            raise exc from None
        source_chains = self._chains(source)
        for _ in range(MAX_CHAINS):
            try:
                up_source = next(source_chains)
            except StopIteration:
                break
            except LoopError as exc:
                loop = exc
                break
            for up_target in target_chains:
                try:
                    return self._evaluate(up_source, up_target, source, target, t_ns)
                except TransformError as exc:
                    first_error = first_error or exc
        if first_error is not None and not isinstance(first_error, ConnectivityError):
            raise first_error
        if loop is not None:
            raise loop
        raise first_error

    def _evaluate(self, up_source, up_target, source: str, target: str, t_ns: int) -> tuple[np.ndarray, int]:
        """T_target_source along one parent chain of each frame (lists of ``(child, link)``)."""
        source_frames = [source] + [link.parent for _, link in up_source]
        target_frames = [target] + [link.parent for _, link in up_target]
        in_target = {frame: i for i, frame in enumerate(target_frames)}
        common = next((i for i, frame in enumerate(source_frames) if frame in in_target), None)
        if common is None:
            raise ConnectivityError(
                f"cannot transform {source!r} into {target!r}: they are in disconnected trees "
                f"(root of {source!r} is {source_frames[-1]!r}, root of {target!r} is {target_frames[-1]!r})"
            )
        # Links on the path up to the common ancestor (which itself contributes none).
        source_links = up_source[:common]
        target_links = up_target[: in_target[source_frames[common]]]
        if t_ns == 0:
            t_ns = self._latest_common_time(source_links + target_links, source, target)
        ancestor_from_source = np.eye(4)
        for child, link in reversed(source_links):
            ancestor_from_source = ancestor_from_source @ link.at(t_ns, child)
        ancestor_from_target = np.eye(4)
        for child, link in reversed(target_links):
            ancestor_from_target = ancestor_from_target @ link.at(t_ns, child)
        target_from_ancestor = geometry.invert_pose(torch.from_numpy(ancestor_from_target)).numpy()
        return target_from_ancestor @ ancestor_from_source, t_ns

    def _latest_common_time(self, links: list[tuple[str, _Link]], source: str, target: str) -> int:
        dynamic = [(child, link) for child, link in links if not link.static]
        if not dynamic:
            return 0
        newest = min(link.stamps[-1] for _, link in dynamic)
        oldest_child, oldest_link = max(dynamic, key=lambda item: item[1].stamps[0])
        if oldest_link.stamps[0] > newest:
            newest_child = min(dynamic, key=lambda item: item[1].stamps[-1])[0]
            raise ExtrapolationError(
                f"no common time for {target!r} <- {source!r}: link {oldest_child!r} starts at "
                f"{_fmt(oldest_link.stamps[0])} after link {newest_child!r} ends at {_fmt(newest)}"
            )
        return newest


__all__ = [
    "ConnectivityError", "ExtrapolationError", "FrameNotFoundError", "InvalidTransformError", "LoopError",
    "TransformBuffer",
    "TransformError", "nanoseconds_to_msg", "to_nanoseconds",
]
