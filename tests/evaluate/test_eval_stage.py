"""The evaluate stage on a tiny real dataset: Zarr stores, parquet tables, truth ECSV, MLflow."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import zarr
from evaluate_data import DISPLACED_ROWS, MomentScorer

from astroflow.evaluate import stage
from astroflow.evaluate.inputs import (
    CutoutReader,
    attach_split,
    load_objects,
    match_truth,
    truth_is_given,
)
from astroflow.evaluate.summary import validate_metrics


def test_cutout_reader_keeps_table_order(tiny_dataset):
    index, objects = load_objects(tiny_dataset.index)
    pick = objects.iloc[[290, 3, 151, 2, 3]]  # two fields, unsorted rows, a repeat
    cutouts = CutoutReader(index, tiny_dataset.index).read(pick)
    for k, (_, row) in enumerate(pick.iterrows()):
        store = tiny_dataset.index.parent / "fields" / f"{row['field']}.zarr"
        expected = zarr.open_group(str(store), mode="r")["images"][int(row["row"])]
        np.testing.assert_array_equal(cutouts[k], expected)
    batches = list(CutoutReader(index, tiny_dataset.index).batches(objects.iloc[:130], 64))
    assert [len(b) for b in batches] == [64, 64, 2]


def test_truth_matching(tiny_dataset):
    _, objects = load_objects(tiny_dataset.index)
    label, truth_id, sep = match_truth(objects, tiny_dataset.truth, 0.6)
    truth = tiny_dataset.objects["truth"].to_numpy()
    moved = np.zeros(len(objects), bool)
    moved[[*DISPLACED_ROWS, *(150 + r for r in DISPLACED_ROWS)]] = True  # truth 2" away
    assert (label[moved] == -1).all() and (sep[moved] > 1.9).all()
    np.testing.assert_array_equal(label[~moved], truth[~moved])
    assert truth_id[~moved].tolist() == [str(i) for i in np.flatnonzero(~moved)]
    assert (truth_id[moved] == None).all()  # noqa: E711 - elementwise on an object array
    assert truth_is_given(tiny_dataset.truth)
    assert not any(truth_is_given(t) for t in ("", "none", "None", None, "null"))


def test_missing_inputs_are_named(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere/index.json"):
        load_objects(tmp_path / "nowhere" / "index.json")
    _, objects = load_objects(tiny_dataset.index)
    with pytest.raises(FileNotFoundError, match="split.parquet"):
        attach_split(objects, tmp_path / "split.parquet")
    with pytest.raises(FileNotFoundError, match="cat.ecsv"):
        match_truth(objects, tmp_path / "cat.ecsv", 0.6)


def test_cli_arguments():
    base = ["--model", "m", "--index", "i.json", "--train-dir", "t", "--out-dir", "o"]
    args = stage.build_parser().parse_args([*base[:6], "--truth", *base[6:], "--threads", "3"])
    assert args.truth == "" and args.threads == 3 and str(args.out_dir) == "o"
    assert stage.build_parser().parse_args([*base, "--truth", "x.ecsv"]).truth == "x.ecsv"
    with pytest.raises(SystemExit):
        stage.build_parser().parse_args(base[2:])  # --model is required
    assert args.exposures == [] and args.calib is None  # SExtractor inputs are optional
    args = stage.build_parser().parse_args([*base, "--exposures", "a.fits", "b.fits",
                                            "--calib", "results/reduce/calib"])
    assert args.exposures == ["a.fits", "b.fits"] and args.calib == "results/reduce/calib"


def test_score_model_rejects_non_probabilities():
    batches = [np.zeros((3, 1, 4, 4)), np.zeros((2, 1, 4, 4))]
    p = stage.score_model(lambda x, tta: np.full(len(x), 0.3), iter(batches), 5, tta=False)
    assert p.shape == (5,)
    with pytest.raises(ValueError, match="not probabilities"):
        stage.score_model(lambda x, tta: np.full(len(x), 1.5), iter(batches), 5, tta=False)
    with pytest.raises(ValueError, match="2 scores for 3"):
        stage.score_model(lambda x, tta: np.zeros(2), iter(batches), 5, tta=False)


def _run(ds, out_dir, truth, cfg=None):
    scorer = MomentScorer()
    doc = stage.run(cfg or ds.cfg, "toy", ds.index, ds.train_dir, truth, out_dir, threads=1,
                    load_classifier=lambda model_dir: scorer)
    return doc, scorer


def test_run_against_truth(tiny_dataset, tmp_path):
    ds = tiny_dataset
    out = tmp_path / "evaluate" / "toy"
    doc, scorer = _run(ds, out, str(ds.truth))
    split = pd.read_parquet(ds.train_dir / "split.parquet")
    test_ids = set(split.loc[split["split"] == "test", "object_id"])
    moved = {f"F0{f}-{i:06d}" for f in (0, 1) for i in DISPLACED_ROWS}
    assert len(test_ids & moved) == 10  # rows 10, 11, 12, 25, 26 of each field
    assert doc["truth_source"] == "truth"
    assert doc["n_test"] == len(test_ids - moved)
    assert sum(scorer.calls) == len(test_ids)  # the model scored every test object once
    assert scorer.tta_flags and all(scorer.tta_flags)  # evaluate.tta reaches the classifier

    on_disk = json.loads((out / "metrics.json").read_text())
    validate_metrics(on_disk)
    assert on_disk == json.loads(json.dumps(doc))
    assert on_disk["model"]["auc"]["value"] > 0.7
    assert on_disk["baselines"]["forest"]["auc"]["value"] > 0.7
    assert [b["mag_lo"] for b in on_disk["by_magnitude"]] == [18.0, 21.0, 23.0]
    # No raw exposures given: the SExtractor baselines are skipped, and say why.
    for name in ("class_star", "spread_model"):
        assert on_disk["baselines"][name] == {"skipped": "no raw exposures given (--exposures)"}
        assert all(name not in b["baselines"] for b in on_disk["by_magnitude"])
    # Paired deltas against the scored baselines only, overall and in every bin.
    for block in (on_disk, *on_disk["by_magnitude"]):
        assert set(block["delta_vs"]) == {"concentration", "forest"}
    assert on_disk["calibration"] == {"method": "none"}

    pred = pd.read_parquet(out / "predictions.parquet")
    assert set(pred["object_id"]) == test_ids
    assert (pred["split"] == "test").all()
    for col in ("p_galaxy", "p_galaxy_concentration", "p_galaxy_forest", "label", "mag_r",
                "mag_g", "mag_i", "truth_id"):
        assert col in pred.columns, col
    truth_by_id = dict(zip(ds.objects["object_id"], ds.objects["truth"], strict=True))
    evaluated = pred[pred["evaluated"]]
    assert (evaluated["label"] == evaluated["object_id"].map(truth_by_id)).all()
    assert (pred.loc[pred["object_id"].isin(moved), "label"] == -1).all()

    for name in (*stage.PLOT_NAMES, "saliency"):  # the scorer has a torch form: saliency
        png = out / "plots" / f"{name}.png"
        assert png.stat().st_size > 5000, png
    assert not (out / "plots" / "reliability_calibration.png").exists()

    run_record = json.loads((out / "run.json").read_text())
    assert run_record["train_run_id"] == "train-run-123"
    mlflow.set_tracking_uri(ds.cfg["tracking"]["uri"])
    run = mlflow.get_run(run_record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "evaluate-toy"
    assert run.data.tags["stage"] == "evaluate"
    assert run.data.tags["upstream.train"] == "train-run-123"
    assert run.data.tags["dataset_digest"] == "tiny-digest"
    assert run.data.metrics["model_auc"] == pytest.approx(doc["model"]["auc"]["value"])
    assert "baseline_concentration_auc_lo" in run.data.metrics
    forest_auc = doc["delta_vs"]["forest"]["auc"]
    assert run.data.metrics["delta_vs_forest_auc"] == pytest.approx(forest_auc["value"])
    assert run.data.metrics["delta_vs_forest_auc_verdict"] == {
        "better": 1, "undecided": 0, "worse": -1}[forest_auc["verdict"]]
    assert run.data.metrics["n_test_unscored"] == len(test_ids & moved)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"metrics.json", "predictions.parquet", "plots"} <= artifacts


def test_run_with_temperature_calibration(tiny_dataset, tmp_path):
    ds = tiny_dataset
    cfg = {**ds.cfg, "evaluate": {**ds.cfg["evaluate"], "calibration": "temperature"}}
    out = tmp_path / "calibrated"
    doc, scorer = _run(ds, out, str(ds.truth), cfg)
    split = pd.read_parquet(ds.train_dir / "split.parquet")
    val_ids = set(split.loc[split["split"] == "val", "object_id"])
    n_val = int(ds.objects[ds.objects["object_id"].isin(val_ids)]["label"].ge(0).sum())
    calib = doc["calibration"]
    assert calib["method"] == "temperature" and calib["n_val"] == n_val > 0
    assert sum(scorer.calls) == doc["n_test"] + 10 + n_val  # test (10 unmatched) then val
    # Temperature scaling is monotone: the ranking metrics do not move.
    assert doc["model"]["auc"]["value"] == pytest.approx(calib["uncalibrated"]["auc"]["value"])
    pred = pd.read_parquet(out / "predictions.parquet")
    np.testing.assert_allclose(
        pred["p_galaxy"],
        1 / (1 + np.exp(-np.log(pred["p_galaxy_uncalibrated"].clip(1e-7, 1 - 1e-7)
                                / (1 - pred["p_galaxy_uncalibrated"].clip(1e-7, 1 - 1e-7)))
                         / calib["temperature"])), rtol=1e-6)
    assert (out / "plots" / "reliability_calibration.png").stat().st_size > 5000
    validate_metrics(json.loads((out / "metrics.json").read_text()))


def test_run_on_labels_and_reproducible(tiny_dataset, tmp_path):
    ds = tiny_dataset
    doc_a, _ = _run(ds, tmp_path / "a", "")
    doc_b, _ = _run(ds, tmp_path / "b", "none")
    assert doc_a["truth_source"] == "labels"
    # Both runs went to this test's own store.
    mlflow.set_tracking_uri(ds.cfg["tracking"]["uri"])
    for sub in ("a", "b"):
        run_id = json.loads((tmp_path / sub / "run.json").read_text())["run_id"]
        assert mlflow.get_run(run_id).data.params["evaluate.n_bootstrap"] == "40"
    assert doc_a == doc_b
    split = pd.read_parquet(ds.train_dir / "split.parquet")
    test = ds.objects.merge(split, on="object_id").query("split == 'test'")
    assert doc_a["n_test"] == int((test["label"] >= 0).sum())


@pytest.mark.slow
# MLflow warns while saving the pytorch model (type-hint inference in mlflow.types); it comes
# from the train stage's save path, not from evaluate.
@pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType.*:UserWarning")
def test_cli_with_a_saved_torch_model(tmp_path):
    """``astroflow evaluate`` end to end through the real classifier loader: an (untrained)
    Kim & Brunner network saved as the train stage saves it, 48-pixel cutouts."""
    torch = pytest.importorskip("torch")
    from evaluate_data import BANDS, make_tiny_dataset

    from astroflow.cli import main as cli_main
    from astroflow.train.mlflow_model import save_model_dir
    from astroflow.train.nets import StarGalaxyClassifier, build_net

    ds = make_tiny_dataset(tmp_path, n_per_field=60, cutout=48)
    torch.manual_seed(0)
    classifier = StarGalaxyClassifier(build_net("kim_brunner", len(BANDS), 44),
                                      band_scale_njy=[30.0] * len(BANDS), crop_size=44)
    save_model_dir(classifier, ds.train_dir / "model",
                   np.zeros((1, len(BANDS), 48, 48), dtype=np.float32))
    out = tmp_path / "evaluate" / "kim_brunner"
    cfg = {**ds.cfg, "evaluate": {**ds.cfg["evaluate"], "batch_size": 32}}
    rc = cli_main(["evaluate", "--config-json", json.dumps(cfg), "--model", "kim_brunner",
                   "--index", str(ds.index), "--train-dir", str(ds.train_dir),
                   "--truth", str(ds.truth), "--out-dir", str(out), "--threads", "1"])
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    validate_metrics(doc)
    pred = pd.read_parquet(out / "predictions.parquet")
    assert pred["p_galaxy"].between(0, 1).all() and pred["p_galaxy"].nunique() > 1
    # Saliency through autograd on the exported program that MLflow serves.
    assert (out / "plots" / "saliency.png").stat().st_size > 5000
    assert json.loads((out / "run.json").read_text())["train_run_id"] == "train-run-123"
