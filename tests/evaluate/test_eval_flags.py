"""Object flags in evaluate: the headline on clean objects, each flag scored on its own."""

import json

import jsonschema
import numpy as np
import pandas as pd
import pytest
from evaluate_data import MomentScorer

from astroflow.evaluate import stage
from astroflow.evaluate.metrics import auc
from astroflow.evaluate.summary import SCHEMA_PATH, flag_blocks, validate_metrics
from astroflow.reduce.flags import FLAG_BITS


def test_flag_blocks_score_each_flag_on_its_own_objects():
    rng = np.random.default_rng(1)
    y = np.array([1, 0] * 50)
    good = np.where(y == 1, 0.9, 0.1)
    flags = np.zeros(100, np.int32)
    flags[:20] = FLAG_BITS["edge"]  # the model is wrong on every edge object
    flags[20:30] = FLAG_BITS["neighbour"]
    p = np.where(flags == FLAG_BITS["edge"], 1 - good, good)
    block = flag_blocks(y, {"model": p, "forest": good}, flags, ["edge"], 30, rng)
    assert block["excluded"] == ["edge"] and block["n_excluded"] == 20
    edge = block["by_flag"]["edge"]
    assert (edge["bit"], edge["excluded"], edge["n"]) == (1, True, 20)
    assert (edge["n_galaxy"], edge["n_star"]) == (10, 10)
    assert edge["scorers"]["model"]["auc"]["value"] == 0.0
    assert edge["scorers"]["forest"]["auc"]["value"] == 1.0
    assert block["by_flag"]["neighbour"]["excluded"] is False
    assert block["by_flag"]["neighbour"]["scorers"]["model"]["auc"]["value"] == 1.0
    empty = block["by_flag"]["band_missing"]
    assert empty["n"] == 0 and empty["scorers"]["model"]["auc"] == {"value": None,
                                                                   "ci95": [None, None]}
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(block, {**schema["properties"]["flags"], "$defs": schema["$defs"]})


@pytest.fixture
def flagged_dataset(tiny_dataset):
    """The tiny dataset with every third test object at the edge, every fifth with a
    neighbour (some both)."""
    path = tiny_dataset.index.with_name("objects.parquet")
    objects = pd.read_parquet(path)
    k = np.arange(len(objects))
    flags = (np.where(k % 3 == 0, FLAG_BITS["edge"], 0)
             | np.where(k % 5 == 0, FLAG_BITS["neighbour"], 0))
    objects.assign(flags=flags.astype(np.int32)).to_parquet(path)
    return tiny_dataset


def test_headline_on_clean_objects_and_a_block_per_flag(flagged_dataset, tmp_path):
    ds = flagged_dataset
    doc = stage.run(ds.cfg, "toy", ds.index, ds.train_dir, "", tmp_path / "out", threads=1,
                    load_classifier=lambda model_dir: MomentScorer())
    pred = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    with_class = pred[pred["label"] >= 0]
    edge = (with_class["flags"] & FLAG_BITS["edge"]) != 0
    assert ds.cfg["evaluate"]["exclude_flags"] == [
        "edge", "bad_pixels", "saturated_core", "cosmic_ray_core", "band_missing"]
    assert edge.any() and (~edge).any()
    # the headline counts and scores the clean objects only (neighbour is not excluded)
    assert doc["n_test"] == int((~edge).sum())
    assert (pred["headline"] == ((pred["label"] >= 0) & ((pred["flags"] & 1) == 0))).all()
    clean = with_class[~edge]
    assert doc["model"]["auc"]["value"] == pytest.approx(auc(clean["label"], clean["p_galaxy"]))
    block = doc["flags"]
    assert block["n_excluded"] == int(edge.sum())
    for name in ("edge", "neighbour"):
        rows = with_class[(with_class["flags"] & FLAG_BITS[name]) != 0]
        entry = block["by_flag"][name]
        assert entry["n"] == len(rows) and entry["excluded"] == (name == "edge")
        for scorer, column in (("model", "p_galaxy"), ("forest", "p_galaxy_forest")):
            assert entry["scorers"][scorer]["auc"]["value"] == pytest.approx(
                auc(rows["label"], rows[column]))
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    validate_metrics(on_disk)
    assert on_disk["flags"] == json.loads(json.dumps(block))


def test_no_flags_column_scores_every_object(tiny_dataset, tmp_path):
    ds = tiny_dataset
    doc = stage.run(ds.cfg, "toy", ds.index, ds.train_dir, "", tmp_path / "out", threads=1,
                    load_classifier=lambda model_dir: MomentScorer())
    pred = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert doc["n_test"] == int((pred["label"] >= 0).sum())
    assert doc["flags"]["n_excluded"] == 0 and (pred["flags"] == 0).all()
