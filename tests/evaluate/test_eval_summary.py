"""The metrics document: shape (schema), per-bin behaviour, MLflow flattening."""

import json

import jsonschema
import numpy as np
import pytest

from astroflow.evaluate.metrics import HEADLINE
from astroflow.evaluate.summary import (
    headline_mlflow_metrics,
    magnitude_bin_masks,
    summarize,
    validate_metrics,
)


def _scores(rng, y):
    return {
        "model": np.clip(0.2 + 0.6 * y + rng.normal(0, 0.2, y.size), 0, 1),
        "concentration": rng.random(y.size),
        "forest": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, y.size), 0, 1),
    }


def test_bin_masks_edges_and_nan():
    mag = np.array([17.0, 20.999, 21.0, 26.0, np.nan, 30.0])
    masks = magnitude_bin_masks(mag, [17.0, 21.0, 26.0])
    np.testing.assert_array_equal(masks[0], [True, True, False, False, False, False])
    np.testing.assert_array_equal(masks[1], [False, False, True, True, False, False])


def test_summary_document_and_thin_bins():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 2, n)
    mag = rng.uniform(18, 24, n)
    # Bin [22, 23) holds galaxies only, bin [25, 26) nothing at all.
    y[(mag >= 22) & (mag < 23)] = 1
    doc = summarize(y, _scores(rng, y), mag, [18, 22, 23, 24, 25, 26], 50,
                    np.random.default_rng(1), "labels")
    validate_metrics(doc)
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN anywhere
    assert doc["n_test"] == n and doc["truth_source"] == "labels"
    assert set(doc["model"]) == set(HEADLINE)
    assert set(doc["baselines"]) == {"concentration", "forest"}
    assert doc["model"]["auc"]["value"] > doc["baselines"]["concentration"]["auc"]["value"]
    assert [b["n"] for b in doc["by_magnitude"]] == [
        int(((mag >= lo) & (mag < hi)).sum()) for lo, hi in [(18, 22), (22, 23), (23, 24)]
    ] + [0, 0]
    gal_only = doc["by_magnitude"][1]
    assert gal_only["n_star"] == 0
    assert gal_only["model"]["auc"] == {"value": None, "ci95": [None, None]}
    assert gal_only["model"]["completeness_star"]["value"] is None
    assert gal_only["model"]["completeness_galaxy"]["value"] is not None
    empty = doc["by_magnitude"][4]
    assert empty["model"]["mse"]["value"] is None
    for block in (doc["model"], *doc["baselines"].values()):
        for metric in block.values():
            lo, hi = metric["ci95"]
            assert lo <= metric["value"] <= hi


def test_same_seed_same_document():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 120)
    scores, mag = _scores(rng, y), rng.uniform(18, 24, 120)
    a = summarize(y, scores, mag, [18, 24], 30, np.random.default_rng(9), "truth")
    b = summarize(y, scores, mag, [18, 24], 30, np.random.default_rng(9), "truth")
    assert a == b


def test_schema_rejects_a_wrong_shape():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 50)
    doc = summarize(y, _scores(rng, y), rng.uniform(18, 24, 50), [18, 24], 20,
                    np.random.default_rng(0), "truth")
    del doc["model"]["cal"]
    with pytest.raises(jsonschema.ValidationError, match="cal"):
        validate_metrics(doc)
    doc = summarize(y, _scores(rng, y), rng.uniform(18, 24, 50), [18, 24], 20,
                    np.random.default_rng(0), "truth")
    doc["truth_source"] = "guess"
    with pytest.raises(jsonschema.ValidationError):
        validate_metrics(doc)


def test_mismatched_scores_are_an_error():
    with pytest.raises(ValueError, match="forest"):
        summarize(np.array([0, 1]), {"model": np.array([0.1, 0.9]), "forest": np.zeros(3)},
                  np.array([20.0, 21.0]), [18, 24], 10, np.random.default_rng(0), "truth")


def test_mlflow_flattening():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 80)
    doc = summarize(y, _scores(rng, y), rng.uniform(18, 24, 80), [18, 24], 20,
                    np.random.default_rng(0), "truth")
    flat = headline_mlflow_metrics(doc)
    assert flat["model_auc"] == doc["model"]["auc"]["value"]
    assert flat["model_auc_lo"] == doc["model"]["auc"]["ci95"][0]
    assert flat["baseline_forest_purity_galaxy_at_completeness_0.96_hi"] == (
        doc["baselines"]["forest"]["purity_galaxy_at_completeness_0.96"]["ci95"][1]
    )
    forest_auc = doc["delta_vs"]["forest"]["auc"]
    assert flat["delta_vs_forest_auc"] == forest_auc["value"]
    assert flat["delta_vs_forest_auc_hi"] == forest_auc["ci95"][1]
    assert flat["delta_vs_forest_auc_verdict"] == {"better": 1, "undecided": 0,
                                                   "worse": -1}[forest_auc["verdict"]]
    # scorers x headline metrics x (value, lo, hi); baselines x deltas x (value, lo, hi,
    # verdict) overall only (the per-bin deltas stay in metrics.json); n_test
    assert len(flat) == 3 * 7 * 3 + 2 * 3 * 4 + 1
