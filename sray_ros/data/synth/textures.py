"""Procedural textures (uint8 RGB numpy images) for walls, floors, ceilings and generated objects.

Texture detail matters beyond looks: S-Ray matches image features across source views, so flat
untextured surfaces would make the synthetic data easier than real rooms.
"""

from __future__ import annotations

import cv2
import numpy as np


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Tileable low-frequency noise in [0, 1], ``[size, size]`` (bicubic upsampling of a wrapped grid)."""
    grid = rng.random((cells, cells)).astype(np.float32)
    tiled = np.tile(grid, (3, 3))
    big = cv2.resize(tiled, (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[size:2 * size, size:2 * size], 0.0, 1.0)


def _rgb(base: np.ndarray, shade: np.ndarray) -> np.ndarray:
    img = base[None, None, :] * shade[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def random_color(rng: np.random.Generator, sat=(0.05, 0.5), val=(0.45, 0.95)) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def paint(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    base = random_color(rng, sat=(0.02, 0.35), val=(0.6, 0.95))
    shade = 0.9 + 0.1 * _smooth_noise(rng, size, 8) + 0.04 * (rng.random((size, size)) - 0.5)
    return _rgb(base, shade)


def wallpaper(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    img = paint(rng, size).astype(np.float32)
    period = int(rng.choice([16, 32, 64]))
    stripes = ((np.arange(size) // (period // 2)) % 2).astype(np.float32)
    img *= (1.0 - rng.uniform(0.05, 0.15) * stripes)[None, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def wood_planks(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    base = random_color(rng, sat=(0.35, 0.7), val=(0.35, 0.8))
    base[0] = max(base[0], base[2] * 1.3)
    n_planks = int(rng.choice([4, 8]))
    plank = size // n_planks
    shade = np.ones((size, size), np.float32)
    for i in range(n_planks):
        grain = _smooth_noise(rng, size, 32)[:plank, :]
        grain = cv2.resize(grain, (size, plank))  # stretched along the plank: wood grain
        shade[i * plank:(i + 1) * plank] = 0.8 + 0.25 * rng.random() + 0.15 * (grain - 0.5)
        shade[i * plank] = 0.55
    return _rgb(base, shade)


def tiles(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    base = random_color(rng, sat=(0.0, 0.4), val=(0.5, 0.95))
    n = int(rng.choice([2, 4, 8]))
    step = size // n
    shade = 0.92 + 0.08 * _smooth_noise(rng, size, 16)
    for i in range(n):
        for j in range(n):
            shade[i * step:(i + 1) * step, j * step:(j + 1) * step] *= 0.94 + 0.12 * rng.random()
    shade[::step, :] = 0.6
    shade[:, ::step] = 0.6
    return _rgb(base, shade)


def carpet(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    base = random_color(rng, sat=(0.1, 0.6), val=(0.3, 0.8))
    shade = 0.8 + 0.2 * _smooth_noise(rng, size, 24) + 0.15 * (rng.random((size, size)) - 0.5)
    return _rgb(base, shade)


def concrete(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    base = random_color(rng, sat=(0.0, 0.08), val=(0.5, 0.8))
    shade = 0.8 + 0.15 * _smooth_noise(rng, size, 6) + 0.1 * _smooth_noise(rng, size, 40)
    return _rgb(base, shade)


def fabric(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    base = random_color(rng, sat=(0.1, 0.7), val=(0.4, 0.95))
    x = np.arange(size, dtype=np.float32)
    shade = 0.85 + 0.1 * np.sin(x / size * 2 * np.pi * int(rng.integers(2, 8)))[None, :]
    shade = shade + 0.06 * (rng.random((size, size)) - 0.5)
    return _rgb(base, np.broadcast_to(shade, (size, size)).copy())


def artwork(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A 'painting': smooth colour fields + blobs inside a frame border."""
    img = np.zeros((size, size, 3), np.float32)
    for c in range(3):
        img[..., c] = 255 * _smooth_noise(rng, size, int(rng.integers(2, 6)))
    for _ in range(int(rng.integers(2, 8))):
        cx, cy, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 12, size // 4))]
        cv2.circle(img, (cx, cy), r, random_color(rng, sat=(0.3, 1.0)).tolist(), -1)
    border = max(2, size // 14)
    frame = random_color(rng, sat=(0.0, 0.5), val=(0.1, 0.7))
    img[:border], img[-border:], img[:, :border], img[:, -border:] = frame, frame, frame, frame
    return np.clip(img, 0, 255).astype(np.uint8)


def mirror(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    shade = 0.75 + 0.2 * y + 0.05 * _smooth_noise(rng, size, 4)
    img = _rgb(np.array([200.0, 215.0, 225.0]), np.broadcast_to(shade, (size, size)).copy())
    img[:3], img[-3:], img[:, :3], img[:, -3:] = 90, 90, 90, 90
    return img


def stone(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    base = random_color(rng, sat=(0.0, 0.25), val=(0.2, 0.9))
    shade = 0.85 + 0.2 * _smooth_noise(rng, size, 12) + 0.12 * (rng.random((size, size)) - 0.5)
    return _rgb(base, shade)


FLOORS = (wood_planks, tiles, carpet, concrete)
WALLS = (paint, paint, wallpaper, tiles)
