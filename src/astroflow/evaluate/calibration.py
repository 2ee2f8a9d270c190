"""Post-hoc probability calibration by temperature scaling (Guo et al. 2017).

A network trained with cross-entropy is often over- or under-confident: its ``p_galaxy`` ranks
objects well (AUC) but ``p = 0.8`` does not mean "80 % of such objects are galaxies".
Temperature scaling divides the logit by one number ``T`` fitted by maximum likelihood on the
validation split (never on test objects and never on the truth table: on the catalog labels of
``split == 'val'``). It is monotone, so AUC and the purity/completeness trade-off are unchanged,
while MSE, log loss and the calibration error can improve. ``T > 1`` softens an over-confident
model, ``T < 1`` sharpens an under-confident one.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize_scalar

log = logging.getLogger(__name__)

#: Probabilities are clipped to [EPS, 1 - EPS] before taking the logit.
EPS = 1e-7
#: Search range of log(T).
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of clipped probabilities."""
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)``."""
    return 1.0 / (1.0 + np.exp(-logit(p) / float(temperature)))


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The ``T`` that minimises the log loss of ``apply_temperature(p, T)`` against ``y``.

    Parameters
    ----------
    p : array
        Uncalibrated ``p_galaxy`` of validation objects.
    y : array
        Their classes (1 galaxy, 0 star); both classes must be present.

    Raises
    ------
    ValueError
        When ``y`` lacks a class or the arrays differ in length.
    """
    p = np.asarray(p, np.float64)
    y = np.asarray(y, np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"fit_temperature: p {p.shape} and y {y.shape} must be 1-d, one length")
    if y.size == 0 or y.min() == y.max():
        raise ValueError("fit_temperature: validation objects must contain both classes")
    z = logit(p)

    def nll(log_t: float) -> float:
        zt = z / np.exp(log_t)
        # log(1 + exp(-zt)) for galaxies, log(1 + exp(zt)) for stars, overflow-safe.
        return float(np.sum(np.logaddexp(0.0, np.where(y == 1, -zt, zt))))

    res = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded")
    temperature = float(np.exp(res.x))
    log.info("temperature scaling: T = %.3f on %d validation objects", temperature, y.size)
    return temperature
