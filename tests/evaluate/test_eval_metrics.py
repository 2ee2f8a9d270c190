"""Metrics against hand-computed cases and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, precision_recall_curve, roc_auc_score

from astroflow.evaluate import metrics as m


def test_hand_computed_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # Pairs (galaxy > star): 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3 of 4.
    assert m.auc(y, p) == pytest.approx(0.75)
    assert m.mse(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(0.1)
    assert m.logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(
        -(np.log(0.8) + np.log(0.6)) / 2
    )
    # CAL: bin [0, 0.1): mean p 0.05 vs fraction 0.5; bin [0.9, 1]: 0.95 vs 1; equal weights.
    assert m.cal(np.array([0, 1, 1, 1]), np.array([0.05, 0.05, 0.95, 0.95])) == pytest.approx(
        0.25
    )
    # 3 called galaxies (p >= 0.5) for 2 true galaxies.
    assert m.delta_n_galaxy_frac(np.array([1, 1, 0, 0]), np.array([0.6, 0.4, 0.7, 0.8])) == (
        pytest.approx(0.5)
    )


def test_auc_counts_ties_as_half():
    assert m.auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_purity_at_completeness_hand_case():
    galaxies = [0.9, 0.8, 0.7, 0.6, 0.2]
    stars = [0.85, 0.65, 0.1]
    y = np.array([1] * 5 + [0] * 3)
    p = np.array(galaxies + stars)
    # 0.96 of 5 galaxies needs all 5: threshold 0.2 also takes stars 0.85 and 0.65.
    assert m.purity_galaxy_at_completeness(y, p) == pytest.approx(5 / 7)
    # 0.8 needs 4: threshold 0.6, still both stars.
    assert m.purity_at_completeness(y == 1, p, 0.8) == pytest.approx(4 / 6)


def test_purity_at_completeness_rounding_of_target():
    # 0.96 * 25 = 24.000000000000004 in floating point: 24 galaxies must be enough.
    y = np.array([1] * 25 + [0])
    p = np.r_[np.linspace(1.0, 0.5, 24), 0.05, 0.3]
    assert m.purity_at_completeness(y == 1, p, 0.96) == pytest.approx(1.0)


def test_star_completeness_at_purity_hand_case():
    # Sorted by p (most star-like first): s 0.1, g 0.15, s 0.2, s 0.3, g 0.9.
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.15, 0.9])
    assert m.completeness_star_at_purity(y, p) == pytest.approx(1 / 3)
    assert m.completeness_at_purity(y == 0, 1 - p, 0.7) == pytest.approx(1.0)
    # The most star-like object is a galaxy and ties cannot be split: no cut is pure enough.
    assert m.completeness_at_purity(np.array([False, True]), np.array([1.0, 0.5]), 0.97) == 0.0


def test_undefined_metrics_are_nan():
    only_gal = np.ones(5, dtype=int)
    p = np.linspace(0.1, 0.9, 5)
    assert np.isnan(m.auc(only_gal, p))
    assert np.isnan(m.completeness_star_at_purity(only_gal, p))
    assert np.isnan(m.delta_n_galaxy_frac(np.zeros(5, dtype=int), p))
    assert np.isnan(m.class_purity(only_gal, np.full(5, 0.9), 0))  # nothing called a star
    assert np.isnan(m.mse(np.zeros(0, dtype=int), np.zeros(0)))
    assert np.isnan(m.cal(np.zeros(0, dtype=int), np.zeros(0)))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one length"):
        m.auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    # Rounded to two decimals so that ties occur, as with a saturating classifier.
    p = np.round(np.clip(0.25 + 0.5 * y + rng.normal(0, 0.25, y.size), 0, 1), 2)
    return y, p


def test_against_sklearn(scored):
    y, p = scored
    assert m.auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert m.mse(y, p) == pytest.approx(brier_score_loss(y, p))
    pc = np.clip(p, 0.01, 0.99)
    assert m.logloss(y, pc) == pytest.approx(log_loss(y, pc))


def test_operating_points_against_sklearn_curve(scored):
    y, p = scored
    prec, rec, _ = precision_recall_curve(y, p, drop_intermediate=False)
    prec, rec = prec[:-1], rec[:-1]  # drop sklearn's (precision 1, recall 0) end point
    # Highest threshold with recall >= 0.96 is the last index (thresholds increase).
    i = np.flatnonzero(rec >= 0.96)[-1]
    assert m.purity_galaxy_at_completeness(y, p) == pytest.approx(prec[i])

    prec_s, rec_s, _ = precision_recall_curve(1 - y, 1 - p, drop_intermediate=False)
    ok = prec_s[:-1] >= 0.97
    expected = rec_s[:-1][ok].max() if ok.any() else 0.0
    assert m.completeness_star_at_purity(y, p) == pytest.approx(expected)
    # A looser purity must reach a non-trivial completeness on these separable scores.
    loose = prec_s[:-1] >= 0.8
    assert m.completeness_at_purity(y == 0, 1 - p, 0.8) == pytest.approx(rec_s[:-1][loose].max())
    assert m.completeness_at_purity(y == 0, 1 - p, 0.8) > 0.3


def test_selection_really_reaches_the_completeness(scored):
    y, p = scored
    purity = m.purity_galaxy_at_completeness(y, p)
    # Rebuild the threshold independently and check completeness and purity.
    thresholds = np.unique(p)
    comp = np.array([np.mean(p[y == 1] >= t) for t in thresholds])
    t = thresholds[comp >= 0.96].max()
    sel = p >= t
    assert np.mean(p[y == 1] >= t) >= 0.96
    assert purity == pytest.approx(np.mean(y[sel] == 1))


def test_class_purity_and_completeness():
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.3, 0.7, 0.1])
    assert m.class_purity(y, p, 1) == pytest.approx(2 / 3)
    assert m.class_completeness(y, p, 1) == pytest.approx(2 / 3)
    assert m.class_purity(y, p, 0) == pytest.approx(1 / 2)
    assert m.class_completeness(y, p, 0) == pytest.approx(1 / 2)
    assert set(m.BY_CLASS) == {"purity_galaxy", "completeness_galaxy", "purity_star",
                               "completeness_star"}
