"""Morphology metrics: bias, scatter and outliers of predicted Sersic index and ellipticity.

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


def quantity_metrics(quantity: str) -> dict[str, Metric]:
    """``{bias, nmad, outlier_frac}`` of ``quantity`` as ``metric(true, pred)`` functions."""
    threshold = OUTLIER_THRESHOLD[quantity]
    return {
        "bias": lambda t, p: bias(residuals(quantity, t, p)),
        "nmad": lambda t, p: nmad(residuals(quantity, t, p)),
        "outlier_frac": lambda t, p: outlier_frac(residuals(quantity, t, p), threshold),
    }


#: Per quantity, the metrics under the names metrics.json uses.
MORPHOLOGY_METRICS: dict[str, dict[str, Metric]] = {q: quantity_metrics(q) for q in QUANTITIES}
