"""Morphology metrics: bias, scatter, outliers, correlation and slope of predicted Sersic index
and ellipticity against the truth.

Conventions (the same everywhere in astroflow): ``true`` and ``pred`` are 1-d arrays of one
quantity; every metric is ``metric(true, pred) -> float`` (the signature the seeded bootstrap of
:mod:`astroflow.evaluate.bootstrap` takes), ``nan`` for no objects.

Residuals
---------
sersic_n
    In dex, ``r = log10(n_pred) - log10(n_true)``: the index matters in ratio (a factor 1.4
    is as wrong at n = 1 as at n = 4).
ellipticity
    Plain difference of ``|g| = (1 - q) / (1 + q)``, ``r = e_pred - e_true``.

A prediction that is not a finite (for n: positive) number is a failed measurement (the
classical baseline on a cutout it cannot measure); it gets ``r = +inf``, so it counts as an
outlier and sits in the upper tail of the bias and the NMAD instead of silently leaving the
sample.

Metrics
-------
bias
    ``median(r)``.
nmad
    ``1.4826 * median(|r - median(r)|)``: the normal-equivalent standard deviation, robust to
    the outliers reported separately.
outlier_frac
    Fraction of objects with ``|r| > OUTLIER_THRESHOLD[quantity]``: 0.15 dex in n (a factor
    1.41, the step between neighbouring classes of the usual n = 1, 1.5, 2, 2.5, 3, 4 grid is
    0.08 to 0.18 dex) and 0.1 in ``|g|`` (the spread of galaxy ellipticities is ~0.2).

The three above cannot tell a scorer that measures from one that predicts about the mean: a
constant at the population's median has no bias and the population's own NMAD, which can be
small. Two more metrics, of the prediction against the truth in the space the residuals use
(``log10 n``; ``|g|``), can:

pearson_r
    Pearson correlation of predicted and true values. 1 for a perfect scorer, below 1 for an
    unbiased one with scatter, 0 for a constant: a scorer whose predictions do not vary says
    nothing about which galaxy is which, so its correlation is taken as 0 (not undefined).
    Undefined (nan) with fewer than two objects or when the true values do not vary.
slope
    Least-squares slope of predicted on true, ``cov(t, p) / var(t)``: 1 when the predictions
    follow the truth one to one, 0 for a constant, between 0 and 1 when they are drawn
    towards the mean (the mean of a posterior shrinks like that where the image says little).
    Undefined when the true values do not vary.

A failed prediction enters these two at the median of the scorer's measured predictions of
the same objects (the value that says nothing about that galaxy), so that a scorer is judged
on all galaxies, not on the subset it could measure; with no measured prediction both are
undefined.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: The regressed quantities, in the order of the model's outputs.
QUANTITIES = ("sersic_n", "ellipticity")
#: ``|r|`` above which a prediction is an outlier (dex for sersic_n).
OUTLIER_THRESHOLD = {"sersic_n": 0.15, "ellipticity": 0.1}
NMAD_FACTOR = 1.4826

Metric = Callable[[np.ndarray, np.ndarray], float]


def residuals(quantity: str, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``r`` of ``quantity`` (see the module docstring); ``+inf`` for a failed prediction."""
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(
            f"true and predicted {quantity} must be 1-d of one length, got "
            f"{true.shape} and {pred.shape}"
        )
    if quantity == "sersic_n":
        ok = np.isfinite(pred) & (pred > 0)
        r = np.full(pred.shape, np.inf)
        r[ok] = np.log10(pred[ok]) - np.log10(true[ok])
        return r
    if quantity == "ellipticity":
        return np.where(np.isfinite(pred), pred - true, np.inf)
    raise ValueError(f"unknown morphology quantity {quantity!r}; choose one of {QUANTITIES}")


def bias(r: np.ndarray) -> float:
    """Median residual; nan for no objects."""
    r = np.asarray(r, dtype=np.float64)
    return float(np.median(r)) if r.size else float("nan")


def nmad(r: np.ndarray) -> float:
    """``1.4826 * median(|r - median(r)|)``; nan for no objects."""
    r = np.asarray(r, dtype=np.float64)
    if r.size == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):  # inf - inf when most residuals are failures
        dev = np.abs(r - np.median(r))
    return float(NMAD_FACTOR * np.median(np.nan_to_num(dev, nan=np.inf)))


def outlier_frac(r: np.ndarray, threshold: float) -> float:
    """Fraction of ``|r| > threshold``; nan for no objects."""
    r = np.asarray(r, dtype=np.float64)
    return float(np.mean(np.abs(r) > threshold)) if r.size else float("nan")


def scored_values(quantity: str, true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """``(t, p)`` in the space of the residuals (log10 for sersic_n), failed predictions at
    the median of the measured ones; ``p`` is all nan when nothing was measured."""
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    r = residuals(quantity, true, pred)  # checks shapes and the quantity; inf = failed
    ok = np.isfinite(r)
    if quantity == "sersic_n":
        with np.errstate(divide="ignore", invalid="ignore"):
            true, pred = np.log10(true), np.log10(pred)
    fill = np.median(pred[ok]) if ok.any() else np.nan
    return true, np.where(ok, pred, fill)


def _is_constant(x: np.ndarray) -> bool:
    """No spread beyond float rounding (a scorer that predicts one value for every object)."""
    spread = float(np.ptp(x))
    return spread <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


def _degenerate(t: np.ndarray, p: np.ndarray) -> float | None:
    """What r and slope are where they are not computed: nan with fewer than two objects, a
    constant ``t`` or a non-finite value; 0 for a constant ``p``; None otherwise."""
    if t.size < 2 or not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))) or _is_constant(t):
        return float("nan")
    return 0.0 if _is_constant(p) else None


def pearson_r(t: np.ndarray, p: np.ndarray) -> float:
    """Pearson correlation of ``p`` with ``t``; 0 for a constant ``p``; nan with fewer than
    two objects, a constant ``t`` or a non-finite value."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if (special := _degenerate(t, p)) is not None:
        return special
    dt, dp = t - t.mean(), p - p.mean()
    r = np.sum(dt * dp) / np.sqrt(np.sum(dt * dt) * np.sum(dp * dp))
    return float(np.clip(r, -1.0, 1.0))


def slope(t: np.ndarray, p: np.ndarray) -> float:
    """Least-squares slope of ``p`` on ``t``, ``cov(t, p) / var(t)``; 0 for a constant ``p``;
    nan with fewer than two objects, a constant ``t`` or a non-finite value."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if (special := _degenerate(t, p)) is not None:
        return special
    dt = t - t.mean()
    return float(np.sum(dt * (p - p.mean())) / np.sum(dt * dt))


def quantity_metrics(quantity: str) -> dict[str, Metric]:
    """``{bias, nmad, outlier_frac, pearson_r, slope}`` of ``quantity`` as
    ``metric(true, pred)`` functions."""
    threshold = OUTLIER_THRESHOLD[quantity]
    return {
        "bias": lambda t, p: bias(residuals(quantity, t, p)),
        "nmad": lambda t, p: nmad(residuals(quantity, t, p)),
        "outlier_frac": lambda t, p: outlier_frac(residuals(quantity, t, p), threshold),
        "pearson_r": lambda t, p: pearson_r(*scored_values(quantity, t, p)),
        "slope": lambda t, p: slope(*scored_values(quantity, t, p)),
    }


#: Per quantity, the metrics under the names metrics.json uses.
MORPHOLOGY_METRICS: dict[str, dict[str, Metric]] = {q: quantity_metrics(q) for q in QUANTITIES}
