"""An evaluation that notices a regressor predicting the mean: Pearson r and slope of predicted
against true, the training-mean baseline, and the paired verdicts against it (issue 25)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from astroflow.evaluate.morphology import (
    TRAINING_MEAN,
    TrainingMean,
    summarize_morphology,
    training_mean,
)
from astroflow.evaluate.morphology_metrics import (
    MORPHOLOGY_METRICS,
    QUANTITIES,
    pearson_r,
    scored_values,
    slope,
)
from astroflow.evaluate.paired_delta import MORPHOLOGY_COMPARISONS, Comparison

MAG_BINS = [18.0, 20.0, 22.0, 24.0]


def test_pearson_and_slope_by_hand():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson_r(t, 2 * t + 1) == pytest.approx(1.0)
    assert slope(t, 2 * t + 1) == pytest.approx(2.0)
    assert pearson_r(t, -t) == pytest.approx(-1.0)
    # p = (1, 3, 2, 4): cov 1, var t 1.25, var p 1.25 (population) -> r = slope = 0.8
    p = np.array([1.0, 3.0, 2.0, 4.0])
    assert pearson_r(t, p) == pytest.approx(0.8)
    assert slope(t, p) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    t, p = rng.normal(size=200), rng.normal(size=200)
    assert pearson_r(t, p) == pytest.approx(np.corrcoef(t, p)[0, 1])
    assert slope(t, p) == pytest.approx(np.polyfit(t, p, 1)[0])


def test_a_constant_prediction_has_r_and_slope_zero_and_a_constant_truth_none():
    t = np.array([0.1, 0.3, 0.2, 0.5])
    assert pearson_r(t, np.full(4, 0.25)) == 0.0
    assert slope(t, np.full(4, 0.25)) == 0.0
    assert pearson_r(t, np.full(4, 0.1 + 0.2)) == 0.0  # float rounding is not variation
    for fn in (pearson_r, slope):
        assert np.isnan(fn(np.full(4, 0.2), t))  # nothing to correlate with
        assert np.isnan(fn(t[:1], t[:1]))
        assert np.isnan(fn(np.array([]), np.array([])))


def test_sersic_n_is_correlated_in_log_and_failures_enter_at_the_median():
    n_true = np.array([1.0, 2.0, 4.0, 1.5, 3.0])
    metrics = MORPHOLOGY_METRICS["sersic_n"]
    # n_pred = n_true ** 0.5 is a straight line of slope 0.5 in log10.
    assert metrics["pearson_r"](n_true, np.sqrt(n_true)) == pytest.approx(1.0)
    assert metrics["slope"](n_true, np.sqrt(n_true)) == pytest.approx(0.5)
    pred = np.array([1.0, 2.0, 4.0, np.nan, -1.0])
    t, p = scored_values("sersic_n", n_true, pred)
    np.testing.assert_allclose(t, np.log10(n_true))
    np.testing.assert_allclose(p, np.log10([1.0, 2.0, 4.0, 2.0, 2.0]))  # median of measured
    e_true = np.array([0.1, 0.2, 0.3])
    _, p = scored_values("ellipticity", e_true, np.array([0.1, np.inf, 0.5]))
    np.testing.assert_allclose(p, [0.1, 0.3, 0.5])
    # Nothing measured: no correlation to report.
    assert np.isnan(metrics["pearson_r"](n_true, np.full(5, np.nan)))


def test_slope_distance_from_one_is_compared():
    c = MORPHOLOGY_COMPARISONS["abs_slope_minus_1"]
    assert c == Comparison("slope", higher_is_better=False, absolute=True, ideal=1.0)
    np.testing.assert_allclose(c.of(np.array([0.5, 1.5, 1.0, 0.0])), [0.5, 0.5, 0.0, 1.0])
    assert MORPHOLOGY_COMPARISONS["pearson_r"].higher_is_better
    assert MORPHOLOGY_COMPARISONS["abs_bias"].of(-0.2) == pytest.approx(0.2)


def test_training_mean_is_the_mean_of_the_training_galaxies_with_catalog_morphology():
    train = pd.DataFrame({
        "label": [1, 1, 1, 0, -1, 1, 1],
        "label_sersic_n": [1.0, 4.0, 2.0, np.nan, 3.0, np.nan, 0.0],
        "label_ellipticity": [0.1, 0.3, 0.2, np.nan, 0.6, 0.5, 0.4],
    })
    mean = training_mean(train)
    # Rows 0-2 only: a star, an unlabelled object, no n, n <= 0 are left out.
    assert mean.n_galaxies == 3
    assert mean.sersic_n == pytest.approx(2.0)  # 10 ** mean(log10 [1, 4, 2]) = 8 ** (1/3)
    assert mean.ellipticity == pytest.approx(0.2)
    np.testing.assert_allclose(mean.prediction(2), [[2.0, 0.2], [2.0, 0.2]])
    with pytest.raises(ValueError, match="no column"):
        training_mean(train.drop(columns="label_ellipticity"))
    with pytest.raises(ValueError, match="no labelled galaxy"):
        training_mean(train.assign(label=0))


def _population(n=400, seed=0):
    """True (n, |g|) like the simulator's (n on a grid, Rayleigh |g|), magnitudes, and the
    training mean from a separate draw of the same population."""
    rng = np.random.default_rng(seed)
    grid = np.array([1.0, 1.5, 2.0, 2.5, 3.0, 4.0])

    def draw(k):
        return np.column_stack([rng.choice(grid, k), np.minimum(rng.rayleigh(0.18, k), 0.7)])

    train = draw(2000)
    mean = TrainingMean(float(10 ** np.log10(train[:, 0]).mean()), float(train[:, 1].mean()),
                        len(train))
    return draw(n), rng.uniform(18.0, 24.0, n), mean, rng


def _summary(true, preds, mag, mean, seed=1):
    return summarize_morphology(true, preds, mag, MAG_BINS, 200, np.random.default_rng(seed),
                                "truth", train_mean=mean)


def _cells(block):
    """(where, scorer block, delta_vs block) overall and per magnitude bin."""
    yield "all", block, block["delta_vs"]
    for i, b in enumerate(block["by_magnitude"]):
        yield i, b, b["delta_vs"]


def test_training_mean_baseline_is_scored_with_r_and_slope_zero():
    true, mag, mean, _ = _population()
    block = _summary(true, {"model": true.copy()}, mag, mean)
    assert block["training_mean"] == mean.as_dict()
    for where, b, _ in _cells(block):
        for quantity in QUANTITIES:
            base = b["baselines"][TRAINING_MEAN][quantity]
            assert base["pearson_r"] == {"value": 0.0, "ci95": [0.0, 0.0]}, where
            assert base["slope"] == {"value": 0.0, "ci95": [0.0, 0.0]}, where
    with pytest.raises(ValueError, match="made from train_mean"):
        _summary(true, {"model": true, TRAINING_MEAN: true}, mag, mean)


@pytest.mark.parametrize("constant", ["training_mean", "other"])
def test_a_constant_predictor_never_beats_the_training_mean_on_r(constant):
    true, mag, mean, _ = _population(seed=2)
    value = mean.prediction(len(true)) if constant == "training_mean" else np.tile(
        [3.0, 0.12], (len(true), 1))
    block = _summary(true, {"model": value}, mag, mean)
    for where, b, deltas in _cells(block):
        for quantity in QUANTITIES:
            assert b["model"][quantity]["pearson_r"]["value"] == 0.0, where
            assert b["model"][quantity]["slope"]["value"] == 0.0, where
            versus = deltas[TRAINING_MEAN][quantity]
            for key in ("pearson_r", "abs_slope_minus_1"):
                assert versus[key] == {"value": 0.0, "ci95": [0.0, 0.0],
                                       "verdict": "undecided"}, (where, quantity, key)
            if constant == "training_mean":  # the baseline itself: nothing can be better
                assert {d["verdict"] for d in versus.values()} == {"undecided"}, where
            else:  # a worse constant: a larger bias, never a better verdict
                assert "better" not in {d["verdict"] for d in versus.values()}, where
    if constant == "other":
        assert block["delta_vs"][TRAINING_MEAN]["ellipticity"]["abs_bias"]["verdict"] == "worse"


def test_a_perfect_predictor_has_r_and_slope_one_and_beats_the_training_mean():
    true, mag, mean, _ = _population(seed=3)
    block = _summary(true, {"model": true.copy()}, mag, mean)
    for where, b, deltas in _cells(block):
        for quantity in QUANTITIES:
            model = b["model"][quantity]
            assert model["pearson_r"]["value"] == pytest.approx(1.0), where
            assert model["slope"]["value"] == pytest.approx(1.0), where
            assert model["pearson_r"]["ci95"] == pytest.approx([1.0, 1.0])
            versus = deltas[TRAINING_MEAN][quantity]
            for key in ("pearson_r", "abs_slope_minus_1", "nmad", "outlier_frac"):
                assert versus[key]["verdict"] == "better", (where, quantity, key)
            assert versus["pearson_r"]["value"] == pytest.approx(1.0)
            assert versus["abs_slope_minus_1"]["value"] == pytest.approx(-1.0)
            assert versus["abs_bias"]["value"] <= 0.0
            assert versus["abs_bias"]["verdict"] != "worse"


def test_noisy_but_unbiased_has_r_below_one_as_the_noise_says_and_slope_near_one():
    true, mag, mean, rng = _population(n=2000, seed=4)
    sigma_e, sigma_dex = 0.08, 0.1
    model = np.column_stack([true[:, 0] * 10 ** rng.normal(0.0, sigma_dex, len(true)),
                             true[:, 1] + rng.normal(0.0, sigma_e, len(true))])
    block = _summary(true, {"model": model}, mag, mean)
    for k, (quantity, sigma) in enumerate((("sersic_n", sigma_dex), ("ellipticity", sigma_e))):
        t, p = scored_values(quantity, true[:, k], model[:, k])
        got = block["model"][quantity]
        assert got["pearson_r"]["value"] == pytest.approx(np.corrcoef(t, p)[0, 1])
        # Independent noise: r = sd(t) / sqrt(sd(t)^2 + sigma^2), slope 1.
        expected = t.std() / np.hypot(t.std(), sigma)
        assert got["pearson_r"]["value"] == pytest.approx(expected, abs=0.03)
        assert got["pearson_r"]["ci95"][1] < 1.0
        lo, hi = got["slope"]["ci95"]
        assert lo < 1.0 < hi, quantity
        versus = block["delta_vs"][TRAINING_MEAN][quantity]
        assert versus["pearson_r"]["verdict"] == "better"
        assert versus["abs_slope_minus_1"]["verdict"] == "better"


def test_a_model_drawn_to_the_mean_wins_on_nmad_and_loses_on_r_and_slope():
    """Issue 25's survey: the regressor's |g| NMAD beat the moments' because a prediction near
    the mean has a small NMAD; the correlation and the slope tell the two apart."""
    true, mag, mean, rng = _population(n=2000, seed=5)
    e = true[:, 1]
    collapsed = mean.ellipticity + 0.15 * (e - mean.ellipticity) + rng.normal(0, 0.03, len(e))
    measured = e + rng.normal(0.0, 0.12, len(e))  # unbiased but noisy, like a measurement
    n = true[:, 0] * 10 ** rng.normal(0, 0.1, len(e))
    block = _summary(true, {"model": np.column_stack([n, collapsed]),
                            "moments": np.column_stack([n, measured])}, mag, mean)
    versus = block["delta_vs"]["moments"]["ellipticity"]
    assert versus["nmad"]["verdict"] == "better"  # what the old metrics said
    assert versus["pearson_r"]["verdict"] == "worse"
    assert versus["abs_slope_minus_1"]["verdict"] == "worse"
    assert block["model"]["ellipticity"]["slope"]["value"] == pytest.approx(0.15, abs=0.03)


def test_evaluate_morphology_scores_the_training_mean_of_the_train_rows_and_draws(tmp_path):
    """The stage's entry point: the training mean comes from the training rows' catalog labels,
    both plots are written, and predictions get no training-mean column (it is a constant)."""
    from astroflow.evaluate.morphology import PLOT_NAMES, evaluate_morphology

    rng = np.random.default_rng(6)

    def table(k):
        return pd.DataFrame({
            "label": np.where(rng.random(k) < 0.8, 1, 0),
            "label_sersic_n": rng.choice([1.0, 2.0, 4.0], k),
            "label_ellipticity": rng.uniform(0.0, 0.5, k),
            "mag_r": rng.uniform(18.0, 24.0, k),
        })

    train, test = table(50), table(40)
    galaxy = test["label"].to_numpy() == 1
    cfg = {"seed": 1, "reduce": {"detection_band": "r"}, "instrument": {"bands": ["g", "r"]},
           "evaluate": {"batch_size": 16, "tta": False, "mag_bins": MAG_BINS,
                        "n_bootstrap": 20}}
    truth = test[["label_sersic_n", "label_ellipticity"]].to_numpy()

    def batches(rows, size):
        for start in range(0, len(rows), size):
            yield rng.normal(0.0, 1.0, (len(rows[start:start + size]), 2, 32, 32))

    done = [0]

    def predict(images, tta):  # a perfect regressor, batch by batch in table order
        done[0] += len(images)
        return truth[galaxy][done[0] - len(images):done[0]]

    result = evaluate_morphology(cfg, train, test, None, "labels", predict, batches, tmp_path)
    block = result.block
    expected = training_mean(train)
    assert block["training_mean"] == expected.as_dict()
    assert block["n_test"] == int(galaxy.sum())
    assert block["model"]["ellipticity"]["pearson_r"]["value"] == pytest.approx(1.0)
    assert block["delta_vs"][TRAINING_MEAN]["ellipticity"]["pearson_r"]["verdict"] == "better"
    for name in PLOT_NAMES:
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert not any(TRAINING_MEAN in column for column in result.columns)
