"""Seeded percentile-bootstrap intervals for the classification metrics.

Objects are resampled with replacement; the same resamples are used for the model and every
baseline (a paired bootstrap), so their intervals describe the same sampling noise of the test
set. A metric that is undefined on a resample (``nan``, e.g. an AUC of a resample without stars)
is left out of that metric's percentiles; when fewer than ``MIN_DEFINED_FRACTION`` of the
resamples define it, the interval is reported as unknown (``None``) rather than made up from a
handful of values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from astroflow.evaluate.metrics import Metric

#: Fraction of resamples on which a metric must be defined for its interval to be quoted.
MIN_DEFINED_FRACTION = 0.5


def bootstrap_indices(n_objects: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of ``n_resamples`` resamples with replacement, shape ``(n_resamples, n)``."""
    if n_objects == 0:
        return np.zeros((n_resamples, 0), dtype=np.int64)
    return rng.integers(0, n_objects, size=(n_resamples, n_objects))


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the defined (finite) ``samples``; ``nan`` pair if too few."""
    samples = np.asarray(samples, dtype=np.float64)
    finite = samples[np.isfinite(samples)]
    if samples.size == 0 or finite.size < MIN_DEFINED_FRACTION * samples.size:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def _json_number(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def bootstrap_metrics(
    y: np.ndarray,
    p: np.ndarray,
    metrics: Mapping[str, Metric],
    indices: np.ndarray,
    level: float = 0.95,
) -> dict[str, dict]:
    """Each metric on all objects plus its percentile bootstrap interval.

    Parameters
    ----------
    y, p : arrays
        True class (1 galaxy, 0 star) and ``p_galaxy``.
    metrics : mapping
        Name to ``metric(y, p) -> float``.
    indices : int array ``(n_resamples, len(y))``
        From :func:`bootstrap_indices`; shared between scorers for a paired comparison.
    level : float
        Central coverage of the interval.

    Returns
    -------
    dict
        ``{name: {"value": float | None, "ci95": [lo | None, hi | None]}}``, JSON-ready
        (undefined values are ``None``).
    """
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    samples = {name: np.empty(len(indices)) for name in metrics}
    for b, idx in enumerate(indices):
        yb, pb = y[idx], p[idx]
        for name, fn in metrics.items():
            samples[name][b] = fn(yb, pb)
    out = {}
    for name, fn in metrics.items():
        lo, hi = percentile_interval(samples[name], level)
        out[name] = {
            "value": _json_number(fn(y, p)),
            "ci95": [_json_number(lo), _json_number(hi)],
        }
    return out
