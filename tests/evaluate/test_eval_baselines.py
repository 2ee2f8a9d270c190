"""Catalog baselines: fitted on training labels, NaN-safe, seeded, scored on test objects."""

import numpy as np
import pandas as pd
import pytest
from evaluate_data import BANDS, synthetic_catalog

from astroflow.evaluate.baselines import (
    SDSS_CONCENTRATION_CUT_MAG,
    ConcentrationBaseline,
    ForestBaseline,
    forest_feature_names,
    forest_features,
    score_baselines,
)
from astroflow.evaluate.metrics import auc


@pytest.fixture
def train_test():
    rng = np.random.default_rng(11)
    train = synthetic_catalog(rng, 600)
    train["label"] = train["truth"]
    train.loc[train.index[::5], "label"] = -1  # unlabelled rows must be ignored
    test = synthetic_catalog(rng, 300)
    # Non-detections: missing magnitudes and a missing concentration.
    test.loc[test.index[:10], "mag_g"] = np.nan
    test.loc[test.index[10:15], "mag_i"] = np.inf
    test.loc[test.index[15:20], "concentration"] = np.nan
    train.loc[train.index[:10], "mag_g"] = np.nan
    return train, test


def test_concentration_baseline_is_the_sdss_cut_at_half(train_test):
    train, test = train_test
    base = ConcentrationBaseline().fit(train)
    p = base.predict_proba(test)
    assert 0 < base.scale_mag < 1
    c = test["concentration"].to_numpy()
    ok = np.isfinite(c)
    np.testing.assert_array_equal(p[ok] >= 0.5, c[ok] >= SDSS_CONCENTRATION_CUT_MAG)
    labelled = train["label"] >= 0
    assert p[~ok] == pytest.approx(np.full((~ok).sum(), train.loc[labelled, "label"].mean()))
    assert auc(test["truth"].to_numpy(), p) > 0.85


def test_concentration_scale_follows_the_data():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300), np.ones(300)].astype(int)
    sharp = pd.DataFrame({"label": y, "concentration": np.where(y == 1, 0.6, -0.3)
                          + rng.normal(0, 0.02, 600)})
    blurred = sharp.assign(concentration=sharp["concentration"] + rng.normal(0, 0.3, 600))
    assert ConcentrationBaseline().fit(sharp).scale_mag < ConcentrationBaseline().fit(
        blurred).scale_mag


def test_forest_features_and_nan_safety(train_test):
    train, test = train_test
    x = forest_features(test, BANDS)
    assert x.shape == (len(test), len(forest_feature_names(BANDS)))
    assert np.isnan(x[10:15, BANDS.index("i")]).all()  # inf became NaN
    np.testing.assert_allclose(x[20:, len(BANDS)], test["mag_g"][20:] - test["mag_r"][20:])
    forest = ForestBaseline(BANDS, seed=3, n_estimators=100).fit(train)
    p = forest.predict_proba(test)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert auc(test["truth"].to_numpy(), p) > 0.85
    again = ForestBaseline(BANDS, seed=3, n_estimators=100).fit(train).predict_proba(test)
    np.testing.assert_array_equal(p, again)


def test_missing_column_is_named(train_test):
    train, _ = train_test
    with pytest.raises(KeyError, match="ellipticity"):
        forest_features(train.drop(columns=["ellipticity"]), BANDS)


def test_no_training_labels_is_an_error(train_test):
    train, test = train_test
    with pytest.raises(ValueError, match="no labelled objects"):
        score_baselines(train.assign(label=-1), test, BANDS, seed=1)


def test_score_baselines_covers_every_test_object(train_test):
    train, test = train_test
    scores = score_baselines(train, test, BANDS, seed=1)
    assert set(scores) == {"concentration", "forest"}
    assert all(s.shape == (len(test),) for s in scores.values())
