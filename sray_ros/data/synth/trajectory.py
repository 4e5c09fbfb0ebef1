"""Handheld-like camera trajectories through a room layout.

The camera walks a smooth loop (an ellipse with low-frequency wobble) around the middle of the
room's largest free rectangle, at 1.2-1.8 m, and looks *across* the room (towards the far side of
the loop, where furniture stands against the walls), with a slow side-to-side pan, a downward pitch
of 5-30 deg and a little roll. Consecutive frames overlap strongly, as in a ScanNet scan.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sray_ros.geometry import look_at
from sray_ros.data.synth.layout import RoomLayout


def _free_rect(layout: RoomLayout) -> np.ndarray:
    """Largest axis-aligned rectangle ``[[x0, y0], [x1, y1]]`` of the floor not covered by a block."""
    sx, sy, _ = layout.size
    if not layout.blocks:
        return np.array([[0.0, 0.0], [sx, sy]])
    (bx0, by0), (bx1, by1) = layout.blocks[0]
    cands = [
        np.array([[0.0, 0.0], [sx, by0]]) if by0 > 0 else None,  # below the block
        np.array([[0.0, by1], [sx, sy]]) if by1 < sy else None,  # above
        np.array([[0.0, 0.0], [bx0, sy]]) if bx0 > 0 else None,  # left
        np.array([[bx1, 0.0], [sx, sy]]) if bx1 < sx else None,  # right
    ]
    cands = [c for c in cands if c is not None]
    return max(cands, key=lambda r: min(r[1] - r[0]) * 10 + np.prod(r[1] - r[0]))


def _blocked(layout: RoomLayout, p: np.ndarray, radius: float = 0.25) -> bool:
    for it in layout.items:
        b = it.bounds()
        if (b[0, 0] - radius < p[0] < b[1, 0] + radius and b[0, 1] - radius < p[1] < b[1, 1] + radius
                and b[0, 2] - radius < p[2] < b[1, 2] + radius):
            return True
    return False


def handheld_trajectory(layout: RoomLayout, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """``[F, 4, 4]`` camera-to-world poses (OpenCV optical frame) for one room."""
    rect = _free_rect(layout)
    centre = 0.5 * (rect[0] + rect[1])
    half = 0.5 * (rect[1] - rect[0])
    best = None
    for attempt in range(30):
        shrink = 1.0 - attempt / 30.0
        if attempt > 0:  # the loop ran into furniture: move its centre as well as shrinking it
            centre = 0.5 * (rect[0] + rect[1]) + rng.uniform(-0.4, 0.4, 2) * np.maximum(half - 0.5, 0.0)
        semi = np.maximum(0.1, (half - rng.uniform(0.8, 1.2)) * shrink)
        off = np.abs(centre - 0.5 * (rect[0] + rect[1]))
        semi = np.maximum(0.1, np.minimum(semi, half - off - 0.6))  # stay >= 0.6 m off the walls
        sweep = 2 * math.pi * rng.uniform(0.8, 1.3) * rng.choice([-1.0, 1.0])
        phi0 = rng.uniform(0, 2 * math.pi)
        h0 = rng.uniform(1.35, 1.65)
        t = np.linspace(0.0, 1.0, num_frames)
        phi = phi0 + sweep * t
        wob = [(rng.uniform(1, 3), rng.uniform(0, 2 * math.pi), rng.uniform(0.02, 0.08)) for _ in range(2)]
        pos = np.stack([centre[0] + semi[0] * np.cos(phi), centre[1] + semi[1] * np.sin(phi),
                        h0 + 0.12 * np.sin(2 * math.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6.3))], 1)
        for f, ph, a in wob:
            pos[:, 0] += a * np.sin(2 * math.pi * f * t + ph)
            pos[:, 1] += a * np.cos(2 * math.pi * f * t + ph * 1.3)
        pos[:, 2] = np.clip(pos[:, 2], 1.2, 1.8)
        blocked = sum(_blocked(layout, p) for p in pos)
        if best is None or blocked < best[0]:
            best = (blocked, pos, phi)
        if blocked == 0:
            break
    _, pos, phi = best  # the clearest loop found (all clear in the vast majority of rooms)
    pan_amp, pan_f, pan_ph = rng.uniform(0.2, 0.7), rng.uniform(1.0, 3.0), rng.uniform(0, 2 * math.pi)
    pitch0 = math.radians(rng.uniform(8, 25))
    pitch_amp = math.radians(rng.uniform(2, 8))
    yaw = phi + math.pi + pan_amp * np.sin(2 * math.pi * pan_f * t + pan_ph)
    pitch = pitch0 + pitch_amp * np.sin(2 * math.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6.3))
    roll = np.radians(rng.uniform(1, 4)) * np.sin(2 * math.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6.3))
    fwd = np.stack([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)], 1)
    poses = look_at(torch.from_numpy(pos), torch.from_numpy(pos + fwd)).numpy()
    c, s = np.cos(roll), np.sin(roll)
    roll_m = np.zeros((num_frames, 4, 4))
    roll_m[:, 0, 0], roll_m[:, 0, 1], roll_m[:, 1, 0], roll_m[:, 1, 1] = c, -s, s, c
    roll_m[:, 2, 2] = roll_m[:, 3, 3] = 1.0
    return poses @ roll_m  # roll about the optical axis
