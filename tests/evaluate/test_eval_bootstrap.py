"""Bootstrap intervals: determinism, undefined resamples, and coverage at the nominal rate."""

import numpy as np
import pytest
from scipy.stats import norm

from astroflow.evaluate import metrics as m
from astroflow.evaluate.bootstrap import (
    bootstrap_indices,
    bootstrap_metrics,
    percentile_interval,
)


def _binormal(rng, n, separation):
    """Stars score N(0, 1), galaxies N(separation, 1), mapped to (0, 1) by a logistic."""
    y = rng.integers(0, 2, n)
    score = rng.normal(separation * y, 1.0)
    return y, 1 / (1 + np.exp(-score))


def test_seeded_and_paired():
    y, p = _binormal(np.random.default_rng(0), 200, 1.5)
    auc = {"auc": m.auc}
    a = bootstrap_metrics(y, p, auc, bootstrap_indices(200, 100, np.random.default_rng(5)))
    b = bootstrap_metrics(y, p, auc, bootstrap_indices(200, 100, np.random.default_rng(5)))
    c = bootstrap_metrics(y, p, auc, bootstrap_indices(200, 100, np.random.default_rng(6)))
    assert a == b
    assert a["auc"]["ci95"] != c["auc"]["ci95"]
    assert a["auc"]["value"] == pytest.approx(m.auc(y, p))
    lo, hi = a["auc"]["ci95"]
    assert lo < a["auc"]["value"] < hi


def test_undefined_resamples_give_null_not_crash():
    # No star at all: the AUC is undefined on every resample, the MSE is not.
    y = np.ones(31, dtype=int)
    p = np.linspace(0.2, 0.9, 31)
    out = bootstrap_metrics(y, p, {"auc": m.auc, "mse": m.mse},
                            bootstrap_indices(31, 200, np.random.default_rng(1)))
    assert out["auc"] == {"value": None, "ci95": [None, None]}
    assert out["mse"]["ci95"][0] is not None
    # Defined on fewer than half of the resamples: no interval is quoted.
    assert np.isnan(percentile_interval(np.array([np.nan, np.nan, 1.0]))[0])
    assert percentile_interval(np.array([np.nan, 2.0, 1.0]), level=0.0) == (1.5, 1.5)


def test_empty_input():
    out = bootstrap_metrics(np.zeros(0, dtype=int), np.zeros(0), {"auc": m.auc},
                            bootstrap_indices(0, 20, np.random.default_rng(0)))
    assert out == {"auc": {"value": None, "ci95": [None, None]}}


def test_interval_covers_truth_at_about_nominal_rate():
    """Percentile intervals from 200 resamples cover the population AUC and MSE ~95 % of the
    time over 150 independent simulated test sets (binomial sd of the rate: 0.018)."""
    separation = 1.2
    true_auc = norm.cdf(separation / np.sqrt(2))
    rng = np.random.default_rng(2024)
    y_pop, p_pop = _binormal(rng, 2_000_000, separation)
    true_mse = m.mse(y_pop, p_pop)
    n_sets, n, n_boot = 150, 300, 200
    covered = {"auc": 0, "mse": 0}
    for _ in range(n_sets):
        y, p = _binormal(rng, n, separation)
        out = bootstrap_metrics(y, p, {"auc": m.auc, "mse": m.mse},
                                bootstrap_indices(n, n_boot, rng))
        for name, truth in (("auc", true_auc), ("mse", true_mse)):
            lo, hi = out[name]["ci95"]
            covered[name] += lo <= truth <= hi
    for name, count in covered.items():
        rate = count / n_sets
        assert 0.88 <= rate <= 0.99, f"{name} coverage {rate:.3f}"
