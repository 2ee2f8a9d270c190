"""Paired deltas model - baseline and their verdicts, on cases whose answer is known."""

import json

import numpy as np
import pytest

from astroflow.evaluate import metrics as m
from astroflow.evaluate.bootstrap import bootstrap_indices, bootstrap_samples, interval_blocks
from astroflow.evaluate.morphology import (
    TrainingMean,
    morphology_mlflow_metrics,
    summarize_morphology,
)
from astroflow.evaluate.paired_delta import (
    CLASSIFICATION_COMPARISONS,
    MORPHOLOGY_COMPARISONS,
    paired_delta,
    verdict,
)
from astroflow.evaluate.summary import summarize, validate_metrics
from astroflow.evaluate.verdict_table import classification_table, morphology_table

DELTAS = set(CLASSIFICATION_COMPARISONS)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _every_delta(doc):
    """``(where, baseline, metric, delta)`` of the overall and every per-bin delta."""
    for where, block in [("all", doc), *((f"bin {i}", b) for i, b in
                                         enumerate(doc["by_magnitude"]))]:
        for name, deltas in block["delta_vs"].items():
            for key, delta in deltas.items():
                yield where, name, key, delta


def _perfect_and_random(seed=0, n=400):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, y.astype(float), rng.random(n), rng.uniform(18, 24, n)


def test_verdict_rule_and_orientation():
    assert verdict([0.01, 0.2], higher_is_better=True) == "better"
    assert verdict([-0.2, -0.01], higher_is_better=True) == "worse"
    assert verdict([-0.2, -0.01], higher_is_better=False) == "better"
    assert verdict([0.01, 0.2], higher_is_better=False) == "worse"
    for ci in ([-0.1, 0.1], [0.0, 0.2], [-0.2, 0.0], [0.0, 0.0], [None, None], [None, 0.3]):
        assert verdict(ci, higher_is_better=True) == "undecided", ci


def test_identical_scorers_are_undecided_everywhere():
    y, _, p, mag = _perfect_and_random()
    p = np.clip(0.3 * y + 0.7 * p, 0, 1)  # an informative scorer, not a perfect one
    doc = summarize(y, {"model": p, "concentration": p.copy(), "forest": p.copy()}, mag,
                    [18, 20, 22, 24], 100, np.random.default_rng(1), "truth")
    validate_metrics(doc)
    json.dumps(doc, allow_nan=False)
    seen = list(_every_delta(doc))
    assert len(seen) == 4 * 2 * len(DELTAS)  # overall + 3 bins, 2 baselines
    for where, name, key, delta in seen:
        lo, hi = delta["ci95"]
        assert lo <= 0 <= hi, (where, name, key, delta)
        assert delta["value"] == 0 and delta["verdict"] == "undecided", (where, name, key)
        # Paired: on every resample both scorers see the same objects, so the difference is
        # exactly 0 each time (separate resamples would spread it around 0).
        assert delta["ci95"] == [0.0, 0.0], (where, name, key, delta)


def test_perfect_beats_random_and_random_loses_to_perfect():
    y, perfect, random, mag = _perfect_and_random()
    edges = [18, 21, 24]
    better = summarize(y, {"model": perfect, "concentration": random, "forest": random},
                       mag, edges, 100, np.random.default_rng(2), "truth")
    worse = summarize(y, {"model": random, "concentration": perfect, "forest": perfect},
                      mag, edges, 100, np.random.default_rng(2), "truth")
    for doc, word in ((better, "better"), (worse, "worse")):
        validate_metrics(doc)
        seen = list(_every_delta(doc))
        assert len(seen) == 3 * 2 * len(DELTAS)
        for where, name, key, delta in seen:
            lo, hi = delta["ci95"]
            assert not lo <= 0 <= hi, (where, name, key, delta)
            assert delta["verdict"] == word, (where, name, key, delta)
    # AUC 1 against ~0.5: the delta is about +0.5 with the model first, -0.5 reversed.
    assert better["delta_vs"]["forest"]["auc"]["value"] == pytest.approx(0.5, abs=0.07)
    assert worse["delta_vs"]["forest"]["auc"]["value"] == pytest.approx(
        -better["delta_vs"]["forest"]["auc"]["value"])


def test_each_bin_is_judged_on_its_own_objects():
    """The model is perfect on bright objects and random on faint ones, the baseline the
    other way round: better in the bright bin, worse in the faint bin."""
    y, perfect, random, mag = _perfect_and_random(seed=3, n=600)
    bright = mag < 21
    model = np.where(bright, perfect, random)
    baseline = np.where(bright, random, perfect)
    doc = summarize(y, {"model": model, "concentration": baseline, "forest": model.copy()},
                    mag, [18, 21, 24], 100, np.random.default_rng(4), "truth")
    bright_bin, faint_bin = doc["by_magnitude"]
    for key in DELTAS:
        assert bright_bin["delta_vs"]["concentration"][key]["verdict"] == "better", key
        assert faint_bin["delta_vs"]["concentration"][key]["verdict"] == "worse", key
        for b in (bright_bin, faint_bin):
            assert b["delta_vs"]["forest"][key]["verdict"] == "undecided", key
    # The verdict table of the plot shows exactly these verdicts, overall column first.
    table = classification_table(doc)
    rows = dict(table.rows)
    assert table.columns[0].startswith("all") and len(table.columns) == 3
    assert [c["verdict"] for c in rows["vs concentration: AUC"][1:]] == ["better", "worse"]


def test_a_bin_without_stars_is_undecided_not_an_error():
    y, perfect, random, mag = _perfect_and_random(seed=5)
    y[mag >= 23] = 1  # the faint bin holds galaxies only: AUC and star metrics undefined
    perfect = y.astype(float)
    doc = summarize(y, {"model": perfect, "concentration": random, "forest": random},
                    mag, [18, 23, 24], 50, np.random.default_rng(0), "truth")
    validate_metrics(doc)
    faint = doc["by_magnitude"][1]["delta_vs"]["forest"]
    assert faint["auc"] == {"value": None, "ci95": [None, None], "verdict": "undecided"}
    assert faint["completeness_star_at_purity_0.97"]["verdict"] == "undecided"
    assert faint["purity_galaxy_at_completeness_0.96"]["verdict"] == "undecided"  # both 1


def _binormal_pair(rng, n, extra_noise):
    """A model and a noisier baseline scoring the same latent galaxy-ness."""
    y = rng.integers(0, 2, n)
    s = y + rng.normal(0, 1, n)
    return y, _sigmoid(s), _sigmoid(s + rng.normal(0, extra_noise, n))


def test_pairing_decides_where_the_separate_intervals_overlap():
    """The baseline is the model plus noise (true AUC gap ~0.05 at n = 400). The scorers'
    own intervals overlap every time, yet the paired delta finds the model better in most
    test sets; the same difference over independent resamples rarely does."""
    rng = np.random.default_rng(7)
    auc, comparison = {"auc": m.auc}, CLASSIFICATION_COMPARISONS["auc"]
    n_sets, paired, unpaired, overlap = 30, 0, 0, 0
    for _ in range(n_sets):
        y, p_model, p_base = _binormal_pair(rng, 400, 0.8)
        idx = bootstrap_indices(len(y), 200, rng)
        model = bootstrap_samples(y, p_model, auc, idx)
        base = bootstrap_samples(y, p_base, auc, idx)
        apart = bootstrap_samples(y, p_base, auc, bootstrap_indices(len(y), 200, rng))
        paired += paired_delta(model, base, comparison)["verdict"] == "better"
        unpaired += paired_delta(model, apart, comparison)["verdict"] == "better"
        model_lo = interval_blocks(model)["auc"]["ci95"][0]
        overlap += model_lo < interval_blocks(base)["auc"]["ci95"][1]
    assert overlap >= 0.8 * n_sets
    assert paired >= 0.65 * n_sets
    assert unpaired <= 0.4 * n_sets


def test_equally_good_scorers_are_rarely_called_different():
    """Two different scorers of equal quality: the 95 % interval of the difference contains 0
    in about 95 % of the test sets (binomial sd over 40 sets: 0.034)."""
    rng = np.random.default_rng(11)
    undecided = 0
    n_sets = 40
    for _ in range(n_sets):
        y = rng.integers(0, 2, 300)
        s = y + rng.normal(0, 1, 300)
        a, b = _sigmoid(s + rng.normal(0, 0.5, 300)), _sigmoid(s + rng.normal(0, 0.5, 300))
        idx = bootstrap_indices(300, 200, rng)
        d = paired_delta(bootstrap_samples(y, a, {"auc": m.auc}, idx),
                         bootstrap_samples(y, b, {"auc": m.auc}, idx),
                         CLASSIFICATION_COMPARISONS["auc"])
        undecided += d["verdict"] == "undecided"
    assert undecided >= 0.85 * n_sets


def test_unpaired_sample_counts_are_refused():
    y, p, _, _ = _perfect_and_random(n=50)
    a = bootstrap_samples(y, p, {"auc": m.auc}, bootstrap_indices(50, 20, np.random.default_rng(0)))
    b = bootstrap_samples(y, p, {"auc": m.auc}, bootstrap_indices(50, 30, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="same indices"):
        paired_delta(a, b, CLASSIFICATION_COMPARISONS["auc"])


def _morphology(seed=0, n=300):
    """True (n, |g|), a close model and a biased, scattered moments baseline."""
    rng = np.random.default_rng(seed)
    true = np.column_stack([rng.choice([1.0, 2.0, 4.0], n), rng.uniform(0.05, 0.6, n)])
    close = true * np.column_stack([10 ** rng.normal(0, 0.03, n), np.ones(n)])
    close[:, 1] += rng.normal(0, 0.02, n)
    rough = true * np.column_stack([10 ** rng.normal(-0.25, 0.2, n), np.ones(n)])
    rough[:, 1] += rng.normal(-0.1, 0.1, n)
    return true, close, rough, rng.uniform(18, 24, n)


@pytest.mark.parametrize("model_is_close", [True, False])
def test_morphology_verdicts_are_oriented_lower_is_better(model_is_close):
    true, close, rough, mag = _morphology()
    model, moments = (close, rough) if model_is_close else (rough, close)
    block = summarize_morphology(true, {"model": model, "moments": moments}, mag,
                                 [18, 21, 24], 100, np.random.default_rng(1), "truth",
                                 train_mean=TrainingMean(2.0, 0.3, 100))
    word = "better" if model_is_close else "worse"
    for where, b in [("all", block), *enumerate(block["by_magnitude"])]:
        quantities = b["delta_vs"]["moments"]
        assert set(quantities) == {"sersic_n", "ellipticity"}
        for quantity, deltas in quantities.items():
            assert set(deltas) == set(MORPHOLOGY_COMPARISONS)
            for key, delta in deltas.items():
                if key == "abs_slope_minus_1":  # both slopes are ~1 here: tested elsewhere
                    continue
                assert delta["verdict"] == word, (where, quantity, key, delta)
                # Higher is better for the correlation, lower for the rest.
                closer = delta["value"] > 0 if key == "pearson_r" else delta["value"] < 0
                assert closer == model_is_close, (where, quantity, key)
    # |bias| is compared, not the signed bias: the baseline's bias is negative.
    bias = {name: abs(s["sersic_n"]["bias"]["value"]) for name, s in
            (("model", block["model"]), ("moments", block["baselines"]["moments"]))}
    assert block["delta_vs"]["moments"]["sersic_n"]["abs_bias"]["value"] == pytest.approx(
        bias["model"] - bias["moments"])
    flat = morphology_mlflow_metrics(block)
    assert flat["morphology_delta_vs_moments_ellipticity_nmad_verdict"] == (
        1.0 if model_is_close else -1.0)
    # Rows per baseline (moments, training_mean), quantity and comparison.
    assert len(morphology_table(block).rows) == 2 * 2 * len(MORPHOLOGY_COMPARISONS)


def test_morphology_identical_scorers_are_undecided():
    true, close, _, mag = _morphology(seed=2)
    block = summarize_morphology(true, {"model": close, "moments": close.copy()}, mag,
                                 [18, 21, 24], 60, np.random.default_rng(3), "truth",
                                 train_mean=TrainingMean(2.0, 0.3, 100))
    for b in (block, *block["by_magnitude"]):
        for deltas in b["delta_vs"]["moments"].values():
            for key, delta in deltas.items():
                assert delta["value"] == 0 and delta["ci95"] == [0.0, 0.0], key
                assert delta["verdict"] == "undecided", key
