"""Seeded percentile-bootstrap intervals for the classification metrics.

Objects are resampled with replacement; the same resamples are used for the model and every
baseline (a paired bootstrap), so their intervals describe the same sampling noise of the test
set. A metric that is undefined on a resample (``nan``, e.g. an AUC of a resample without stars)
is left out of that metric's percentiles; when fewer than ``MIN_DEFINED_FRACTION`` of the
resamples define it, the interval is reported as unknown (``None``) rather than made up from a
handful of values.

:func:`bootstrap_samples` is the one loop over the resamples; :func:`interval_blocks` turns its
output into the ``{"value", "ci95"}`` blocks of metrics.json, and
:mod:`astroflow.evaluate.paired_delta` into paired differences between scorers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Bootstrap:
    """Each metric of one scorer on all objects (``values``) and on every resample
    (``samples``, one array of ``n_resamples`` per metric, ``nan`` where undefined).

    Scorers bootstrapped with the same indices are paired: ``samples[name][b]`` of the model
    and of a baseline come from the same objects, which is what
    :mod:`astroflow.evaluate.paired_delta` takes differences of.
    """

    values: dict[str, float]
    samples: dict[str, np.ndarray]


def bootstrap_samples(
    y: np.ndarray,
    p: np.ndarray,
    metrics: Mapping[str, Metric],
    indices: np.ndarray,
) -> Bootstrap:
    """Each metric on all objects and on each resample of ``indices`` (the one bootstrap loop).

    Parameters
    ----------
    y, p : arrays
        True class (1 galaxy, 0 star) and ``p_galaxy`` (or, for the morphology metrics, true
        and predicted values of one quantity).
    metrics : mapping
        Name to ``metric(y, p) -> float``.
    indices : int array ``(n_resamples, len(y))``
        From :func:`bootstrap_indices`; shared between scorers for a paired comparison.
    """
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    samples = {name: np.empty(len(indices)) for name in metrics}
    for b, idx in enumerate(indices):
        yb, pb = y[idx], p[idx]
        for name, fn in metrics.items():
            samples[name][b] = fn(yb, pb)
    return Bootstrap({name: float(fn(y, p)) for name, fn in metrics.items()}, samples)


def interval_blocks(boot: Bootstrap, level: float = 0.95) -> dict[str, dict]:
    """``{name: {"value", "ci95"}}`` of a :class:`Bootstrap`, JSON-ready (undefined: None)."""
    out = {}
    for name, samples in boot.samples.items():
        lo, hi = percentile_interval(samples, level)
        out[name] = {
            "value": _json_number(boot.values[name]),
            "ci95": [_json_number(lo), _json_number(hi)],
        }
    return out


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
    y, p, metrics, indices
        As for :func:`bootstrap_samples`.
    level : float
        Central coverage of the interval.

    Returns
    -------
    dict
        ``{name: {"value": float | None, "ci95": [lo | None, hi | None]}}``, JSON-ready
        (undefined values are ``None``).
    """
    return interval_blocks(bootstrap_samples(y, p, metrics, indices), level)
