"""Paired bootstrap differences ``model - baseline`` and a verdict for each.

The model and a baseline are bootstrapped with the same resample indices
(:func:`astroflow.evaluate.bootstrap.bootstrap_samples`), so on resample ``b`` both are scored
on the same objects. The difference of their metric on each resample is then a sample of the
difference's sampling distribution, with the noise of *which objects happened to be in the test
set* cancelling out; its percentile interval is much narrower than comparing the two scorers'
own intervals.

Verdict at 95 % (``VERDICTS``)
------------------------------
better
    The interval of the difference excludes 0 on the favourable side: above 0 for a metric
    where higher is better (AUC, purity, completeness, a Pearson correlation), below 0 where
    lower is better (NMAD; and the distance of a metric from its ideal value, ``|bias|`` from
    0 or ``|slope - 1|`` from 1, see :class:`Comparison`).
worse
    It excludes 0 on the unfavourable side.
undecided
    It contains 0 (an end exactly at 0 counts as containing it), or it is unknown (``null``:
    the metric is undefined on more than half of the resamples, e.g. a star metric in a bin
    without stars).

A delta is ``{"value": model - baseline on all objects, "ci95": [lo, hi], "verdict": ...}``.
A resample on which either scorer's metric is not finite (undefined, or an infinite morphology
scatter when most galaxies are unmeasured) leaves the difference's percentiles, as in
:func:`astroflow.evaluate.bootstrap.percentile_interval`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from astroflow.evaluate.bootstrap import Bootstrap, percentile_interval

#: The three verdicts, and how they are logged to MLflow (a metric must be a number).
VERDICT_CODE = {"better": 1.0, "undecided": 0.0, "worse": -1.0}
VERDICTS = tuple(VERDICT_CODE)


@dataclass(frozen=True)
class Comparison:
    """How one delta is made from a bootstrapped metric.

    Attributes
    ----------
    metric : str
        Key of the metric in the :class:`~astroflow.evaluate.bootstrap.Bootstrap`.
    higher_is_better : bool
        Orients the verdict.
    absolute : bool
        Compare ``|metric - ideal|``, the distance from the best value, instead of the metric
        (a bias, whose best value is 0 whatever its sign; a slope, whose best value is 1).
    ideal : float
        The best value of the metric when ``absolute``.
    """

    metric: str
    higher_is_better: bool
    absolute: bool = False
    ideal: float = 0.0

    def of(self, x: np.ndarray | float) -> np.ndarray | float:
        """The compared quantity: the metric, or its distance from ``ideal``."""
        return np.abs(np.asarray(x, dtype=np.float64) - self.ideal) if self.absolute else x


#: Classification deltas (metrics.json ``delta_vs``): higher is better for all three.
CLASSIFICATION_COMPARISONS = {
    name: Comparison(name, higher_is_better=True)
    for name in (
        "auc",
        "completeness_star_at_purity_0.97",
        "purity_galaxy_at_completeness_0.96",
    )
}
#: Morphology deltas, per quantity (``morphology.delta_vs``): lower is better for ``|bias|``,
#: NMAD, outlier fraction and ``|slope - 1|`` (better = interval below 0); higher is better for
#: the Pearson correlation (better = interval above 0).
MORPHOLOGY_COMPARISONS = {
    "abs_bias": Comparison("bias", higher_is_better=False, absolute=True),
    "nmad": Comparison("nmad", higher_is_better=False),
    "outlier_frac": Comparison("outlier_frac", higher_is_better=False),
    "pearson_r": Comparison("pearson_r", higher_is_better=True),
    "abs_slope_minus_1": Comparison("slope", higher_is_better=False, absolute=True, ideal=1.0),
}


def verdict(ci95: Sequence[float | None], higher_is_better: bool) -> str:
    """``better``, ``worse`` or ``undecided`` from the interval of ``model - baseline``."""
    lo, hi = ci95
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "undecided"
    if lo > 0:
        return "better" if higher_is_better else "worse"
    if hi < 0:
        return "worse" if higher_is_better else "better"
    return "undecided"


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def paired_delta(
    model: Bootstrap, baseline: Bootstrap, comparison: Comparison, level: float = 0.95
) -> dict:
    """``{"value", "ci95", "verdict"}`` of ``model - baseline`` for one comparison.

    Both must come from the same resample indices; their sample arrays are checked to be of
    one length (a different number of resamples cannot be paired).
    """
    a, b = model.samples[comparison.metric], baseline.samples[comparison.metric]
    if a.shape != b.shape:
        raise ValueError(f"paired_delta: {comparison.metric!r} has {a.shape[0]} model and "
                         f"{b.shape[0]} baseline resamples; pair them on the same indices")
    with np.errstate(invalid="ignore"):  # inf - inf on resamples where both are infinite
        diff = np.asarray(comparison.of(a) - comparison.of(b), dtype=np.float64)
        value = comparison.of(model.values[comparison.metric]) - comparison.of(
            baseline.values[comparison.metric])
    lo, hi = percentile_interval(diff, level)
    ci = [_finite_or_none(lo), _finite_or_none(hi)]
    return {"value": _finite_or_none(float(value)), "ci95": ci,
            "verdict": verdict(ci, comparison.higher_is_better)}


def deltas_vs(
    model: Bootstrap,
    baselines: Mapping[str, Bootstrap],
    comparisons: Mapping[str, Comparison],
    level: float = 0.95,
) -> dict[str, dict]:
    """``{baseline: {delta name: {"value", "ci95", "verdict"}}}`` for every baseline."""
    return {
        name: {key: paired_delta(model, base, c, level) for key, c in comparisons.items()}
        for name, base in baselines.items()
    }


def delta_mlflow_metrics(prefix: str, deltas: Mapping[str, Mapping]) -> dict[str, float]:
    """Flat MLflow metrics of one nesting level of deltas: ``<prefix>_<key>`` (the value),
    ``_lo``, ``_hi`` and ``_verdict`` (``VERDICT_CODE``: 1 better, 0 undecided, -1 worse);
    undefined numbers are left out (MLflow has no null), the verdict is always logged."""
    flat: dict[str, float] = {}
    for key, delta in deltas.items():
        stem = f"{prefix}_{key}"
        for suffix, value in (("", delta["value"]), ("_lo", delta["ci95"][0]),
                              ("_hi", delta["ci95"][1])):
            if value is not None:
                flat[stem + suffix] = float(value)
        flat[f"{stem}_verdict"] = VERDICT_CODE[delta["verdict"]]
    return flat
