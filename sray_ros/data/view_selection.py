"""Source-view selection for a target camera.

Score of a candidate view i for target t (lower is better)::

    score_i = ||c_i - c_t|| + angle_weight * angle(d_i, d_t)

with camera centres ``c`` in metres, viewing directions ``d`` (optical axes) and the angle in
radians. The default ``angle_weight = 0.5 m/rad`` makes 10 cm of camera offset cost as much as
about 11 deg of viewing-direction difference, which suits room-scale handheld scans: a view at the
same spot looking elsewhere shares little, a view a little to the side looking at the same thing
shares most. Views whose direction differs by more than ``max_angle_deg`` (default 120 deg) are only
used after all others. The target itself (or any view at the same pose) is excluded by index.

Training (:func:`sample_source_views`): NeuRay-style density variation, pick ``m`` views uniformly
among the ``k`` best-scoring ones with ``k`` drawn per call from ``[m, k_max]``, so the model sees
both dense (close) and sparse (far) source sets. Deterministic for a given ``numpy.random.Generator``
state / seed.
"""

from __future__ import annotations

import numpy as np

DEFAULT_ANGLE_WEIGHT = 0.5  # metres per radian
DEFAULT_MAX_ANGLE_DEG = 120.0


def view_scores(target_c2w: np.ndarray, pool_c2w: np.ndarray, angle_weight: float = DEFAULT_ANGLE_WEIGHT,
                max_angle_deg: float = DEFAULT_MAX_ANGLE_DEG) -> np.ndarray:
    """Scores ``[N]`` of pool views ``[N, 4, 4]`` for a target pose ``[4, 4]`` (lower = better).

    Views beyond ``max_angle_deg`` get ``+1e3`` so they rank after every other view.
    """
    target_c2w = np.asarray(target_c2w, np.float64)
    pool_c2w = np.asarray(pool_c2w, np.float64)
    dist = np.linalg.norm(pool_c2w[:, :3, 3] - target_c2w[:3, 3], axis=-1)
    cosang = np.clip(pool_c2w[:, :3, 2] @ target_c2w[:3, 2], -1.0, 1.0)
    angle = np.arccos(cosang)
    score = dist + angle_weight * angle
    return score + 1e3 * (angle > np.radians(max_angle_deg))


def _candidates(scores: np.ndarray, exclude) -> np.ndarray:
    order = np.argsort(scores, kind="stable")
    if exclude is None:
        return order
    ex = {int(exclude)} if np.isscalar(exclude) else {int(e) for e in exclude}
    return np.array([i for i in order if int(i) not in ex], dtype=np.int64)


def select_source_views(target_c2w: np.ndarray, pool_c2w: np.ndarray, num_views: int, exclude=None,
                        angle_weight: float = DEFAULT_ANGLE_WEIGHT,
                        max_angle_deg: float = DEFAULT_MAX_ANGLE_DEG) -> np.ndarray:
    """Indices of the ``num_views`` best pool views (best first), never those in ``exclude``.

    Test time: pass the target's own index in ``exclude`` when it is part of the pool. Returns fewer
    indices only when the pool is smaller than ``num_views``.
    """
    order = _candidates(view_scores(target_c2w, pool_c2w, angle_weight, max_angle_deg), exclude)
    return order[:num_views]


def sample_source_views(target_c2w: np.ndarray, pool_c2w: np.ndarray, num_views: int,
                        rng: np.random.Generator | int | None, exclude=None, k_max: int | None = None,
                        angle_weight: float = DEFAULT_ANGLE_WEIGHT,
                        max_angle_deg: float = DEFAULT_MAX_ANGLE_DEG) -> np.ndarray:
    """Training-time choice: ``num_views`` indices drawn from the ``k`` nearest, ``k ~ U[num_views, k_max]``.

    ``k_max`` defaults to ``3 * num_views``. Sorted by score (best first). ``rng``: a Generator or a seed.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    order = _candidates(view_scores(target_c2w, pool_c2w, angle_weight, max_angle_deg), exclude)
    if len(order) <= num_views:
        return order
    k_max = min(len(order), k_max if k_max is not None else 3 * num_views)
    k = int(rng.integers(num_views, max(k_max, num_views) + 1))
    picked = np.sort(rng.choice(k, size=num_views, replace=False))
    return order[picked]
