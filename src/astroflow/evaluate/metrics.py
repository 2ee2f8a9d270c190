"""Kim & Brunner (2016) metrics for a binary star/galaxy classifier, as pure numpy functions.

Conventions (the same everywhere in astroflow): ``y`` is the true class with ``1 = galaxy`` and
``0 = star``; ``p`` is the classifier's ``p_galaxy`` in [0, 1]. Every function takes plain arrays
and returns a float, ``nan`` where the metric is undefined on these objects (e.g. an AUC with no
stars), so a bootstrap resample or a thin magnitude bin gives ``nan`` (``null`` in JSON) instead
of an exception.

Definitions
-----------
auc
    Area under the ROC curve, the Mann-Whitney probability that a random galaxy scores above a
    random star (ties count one half).
mse
    Mean squared error of ``p`` against ``y`` (the Brier score).
logloss
    Mean negative log likelihood, with ``p`` clipped to ``[1e-15, 1 - 1e-15]``.
cal
    Calibration error: ``p`` is put in ``CAL_BINS`` equal-width bins on [0, 1]; in each bin the
    absolute difference between the mean ``p`` and the observed galaxy fraction is taken, and the
    bins are averaged with weights equal to their share of the objects (the "expected calibration
    error"). Zero for a perfectly calibrated classifier.
purity_galaxy_at_completeness_0.96
    Objects with ``p >= t`` are called galaxies; ``t`` is the highest threshold whose galaxy
    completeness is still >= 0.96 (the operating point of Kim & Brunner). The value is the galaxy
    purity (fraction of called galaxies that are galaxies) there.
completeness_star_at_purity_0.97
    Objects with ``p <= t`` are called stars; over all thresholds whose star purity is >= 0.97,
    the largest star completeness (fraction of stars called stars). 0 if no threshold reaches
    the purity.
delta_n_galaxy_frac
    ``|N_called - N_true| / N_true`` with ``N_called`` the number of objects with ``p >= 0.5``
    and ``N_true`` the number of true galaxies: the relative error of a galaxy count made with
    the classifier at the natural threshold.

By magnitude, ``purity_*`` and ``completeness_*`` of each class are also reported at the
natural threshold (galaxy if ``p >= 0.5``, star otherwise); see :func:`class_purity` and
:func:`class_completeness`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata

#: Number of equal-width probability bins of the calibration error.
CAL_BINS = 10
#: Galaxy completeness at which galaxy purity is quoted (Kim & Brunner 2016).
GALAXY_COMPLETENESS = 0.96
#: Star purity at which star completeness is quoted (Kim & Brunner 2016).
STAR_PURITY = 0.97
#: Natural threshold: an object is called a galaxy when ``p_galaxy >= THRESHOLD``.
THRESHOLD = 0.5
_LOG_CLIP = 1e-15


def _as_arrays(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(
            f"labels and scores must be 1-d of one length, got {y.shape} and {p.shape}"
        )
    return y, p


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (nan without both classes)."""
    y, p = _as_arrays(y, p)
    n_gal = int(y.sum())
    n_star = y.size - n_gal
    if n_gal == 0 or n_star == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n_gal * (n_gal + 1) / 2) / (n_gal * n_star))


def mse(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of ``p`` against ``y`` (Brier score); nan for no objects."""
    y, p = _as_arrays(y, p)
    if y.size == 0:
        return float("nan")
    return float(np.mean((p - y) ** 2))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log likelihood (natural log), ``p`` clipped away from 0 and 1."""
    y, p = _as_arrays(y, p)
    if y.size == 0:
        return float("nan")
    p = np.clip(p, _LOG_CLIP, 1 - _LOG_CLIP)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def cal(y: np.ndarray, p: np.ndarray, n_bins: int = CAL_BINS) -> float:
    """Calibration error: count-weighted mean over ``p`` bins of ``|mean p - galaxy fraction|``."""
    y, p = _as_arrays(y, p)
    if y.size == 0:
        return float("nan")
    idx = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    filled = counts > 0
    gap = np.abs(sum_p[filled] - sum_y[filled]) / counts[filled]
    return float(np.sum(gap * counts[filled]) / y.size)


def purity_at_completeness(is_class: np.ndarray, score: np.ndarray, completeness: float) -> float:
    """Purity of ``score >= t`` at the highest ``t`` with completeness >= ``completeness``.

    Parameters
    ----------
    is_class : bool array
        True for members of the class being selected.
    score : float array
        Larger means more like the class.
    completeness : float
        Minimum fraction of the class that must be selected.

    Returns
    -------
    float
        nan when the class is absent.
    """
    is_class = np.asarray(is_class, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n_class = int(is_class.sum())
    if n_class == 0:
        return float("nan")
    # round() keeps 0.96 * 25 = 24.000000000000004 from asking for 25 objects.
    k = max(1, int(np.ceil(round(completeness * n_class, 9))))
    threshold = np.sort(score[is_class])[::-1][k - 1]
    selected = score >= threshold
    return float(np.sum(selected & is_class) / np.sum(selected))


def completeness_at_purity(is_class: np.ndarray, score: np.ndarray, purity: float) -> float:
    """Largest completeness of ``score >= t`` over thresholds whose purity is >= ``purity``.

    Thresholds run over the distinct scores, so tied objects are selected together. Returns 0
    when no threshold reaches the purity and nan when the class is absent.
    """
    is_class = np.asarray(is_class, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n_class = int(is_class.sum())
    if n_class == 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    s_sorted = score[order]
    tp = np.cumsum(is_class[order])
    n_sel = np.arange(1, score.size + 1)
    # The end of each group of tied scores is a valid cut; inside a group it is not.
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp, n_sel = tp[last_of_tie], n_sel[last_of_tie]
    ok = tp >= purity * n_sel - 1e-12
    if not ok.any():
        return 0.0
    return float(tp[ok].max() / n_class)


def purity_galaxy_at_completeness(y: np.ndarray, p: np.ndarray) -> float:
    """Galaxy purity at galaxy completeness ``GALAXY_COMPLETENESS`` (0.96)."""
    y, p = _as_arrays(y, p)
    return purity_at_completeness(y == 1, p, GALAXY_COMPLETENESS)


def completeness_star_at_purity(y: np.ndarray, p: np.ndarray) -> float:
    """Star completeness at star purity ``STAR_PURITY`` (0.97); the star score is ``1 - p``."""
    y, p = _as_arrays(y, p)
    return completeness_at_purity(y == 0, 1.0 - p, STAR_PURITY)


def delta_n_galaxy_frac(y: np.ndarray, p: np.ndarray) -> float:
    """``|N(p >= 0.5) - N_galaxies| / N_galaxies``; nan without galaxies."""
    y, p = _as_arrays(y, p)
    n_true = int(y.sum())
    if n_true == 0:
        return float("nan")
    return float(abs(int(np.sum(p >= THRESHOLD)) - n_true) / n_true)


def class_purity(y: np.ndarray, p: np.ndarray, cls: int) -> float:
    """Purity of class ``cls`` (1 galaxy, 0 star) at the natural threshold; nan if none called."""
    y, p = _as_arrays(y, p)
    called = (p >= THRESHOLD) if cls == 1 else (p < THRESHOLD)
    n_called = int(called.sum())
    if n_called == 0:
        return float("nan")
    return float(np.sum(called & (y == cls)) / n_called)


def class_completeness(y: np.ndarray, p: np.ndarray, cls: int) -> float:
    """Completeness of class ``cls`` at the natural threshold; nan if the class is absent."""
    y, p = _as_arrays(y, p)
    members = y == cls
    n_members = int(members.sum())
    if n_members == 0:
        return float("nan")
    called = (p >= THRESHOLD) if cls == 1 else (p < THRESHOLD)
    return float(np.sum(called & members) / n_members)


Metric = Callable[[np.ndarray, np.ndarray], float]

#: The headline metrics, under the names metrics.json uses.
HEADLINE: dict[str, Metric] = {
    "auc": auc,
    "mse": mse,
    "logloss": logloss,
    "cal": cal,
    "purity_galaxy_at_completeness_0.96": purity_galaxy_at_completeness,
    "completeness_star_at_purity_0.97": completeness_star_at_purity,
    "delta_n_galaxy_frac": delta_n_galaxy_frac,
}

#: Purity and completeness of each class at the natural threshold (the by-magnitude curves).
BY_CLASS: dict[str, Metric] = {
    "purity_galaxy": lambda y, p: class_purity(y, p, 1),
    "completeness_galaxy": lambda y, p: class_completeness(y, p, 1),
    "purity_star": lambda y, p: class_purity(y, p, 0),
    "completeness_star": lambda y, p: class_completeness(y, p, 0),
}
