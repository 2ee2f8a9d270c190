"""An archive without labels (``data.labels: null``): reduce it, then apply a trained model.

The field job runs without a labels catalog (every object's label -1); the reduced archive is
scored by ``astroflow predict`` with a registered model, whose run links to the model's train
run and to the reduce run of the dataset, in a temporary sqlite store.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import zarr
from reduce_archive import BANDS, field_args, make_cfg

from astroflow.reduce.stage import main as reduce_main


def _without_labels(args: list[str], how: str) -> list[str]:
    """``reduce field`` arguments as the rule renders them with ``data.labels: null``
    (``--labels`` with no value), or with ``--labels`` left out."""
    i = args.index("--labels")
    return args[: i + 1] + args[i + 2 :] if how == "no value" else args[:i] + args[i + 2 :]


@pytest.mark.parametrize("how", ["no value", "absent"])
def test_field_without_labels_catalog_labels_every_object_minus_one(
    archive, calib_dir, tmp_path, how
):
    cfg = make_cfg(tmp_path)
    args = field_args(cfg, archive, archive.science_paths, calib_dir, tmp_path, threads=1)
    assert reduce_main(_without_labels(args, how)) == 0

    table = pd.read_parquet(tmp_path / "F00.objects.parquet")
    assert len(table) == 16  # every injected object, as with labels
    assert table["label"].dtype == np.int8
    assert (table["label"] == -1).all()
    assert table[["label_sersic_n", "label_ellipticity"]].isna().all().all()
    provenance = zarr.open_group(str(tmp_path / "F00.zarr"), mode="r").attrs["provenance"]
    assert provenance["labels"] is None
    assert archive.labels_path not in provenance["inputs"]
    assert set(archive.science_paths) <= set(provenance["inputs"])
    assert json.loads((tmp_path / "F00.quarantine.json").read_text()) == []


@pytest.fixture(scope="module")
def unlabelled(archive, calib_dir, tmp_path_factory):
    """(cfg, index.json, reduce run id) of the archive reduced without labels, the reduce run
    in a temporary sqlite store."""
    import mlflow

    root = tmp_path_factory.mktemp("unlabelled")
    cfg = make_cfg(root)
    args = field_args(cfg, archive, archive.science_paths, calib_dir, root / "fields", threads=1)
    assert reduce_main(_without_labels(args, "no value")) == 0
    argv = ["index", "--config-json", json.dumps(cfg), "--field-dir", str(root / "fields"),
            "--fields", "F00", "--out-dir", str(root / "reduce")]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:  # the config's store, whatever an earlier test set
        mp.setenv("MLFLOW_TRACKING_URI", cfg["tracking"]["uri"])
        assert reduce_main(argv) == 0
    client = mlflow.MlflowClient(cfg["tracking"]["uri"])
    exp = client.get_experiment_by_name(cfg["tracking"]["experiment"])
    (reduce_run,) = client.search_runs([exp.experiment_id], "tags.stage = 'reduce'")
    return cfg, root / "reduce" / "index.json", reduce_run


def _register(cfg: dict, name: str, seed: int, tags: dict):
    """A classifier (untrained: its weights from ``seed``) logged by a train-stage run and
    registered as a new version of ``name``; returns (module, run id)."""
    import torch

    from astroflow import tracking
    from astroflow.train.mlflow_model import log_and_register
    from astroflow.train.nets import StarGalaxyClassifier, build_net

    torch.manual_seed(seed)
    classifier = StarGalaxyClassifier(build_net("kim_brunner", len(BANDS), 24), [50.0, 80.0], 24)
    example = np.random.default_rng(seed).normal(0, 50, (2, len(BANDS), 32, 32)).astype("f4")
    with tracking.stage_run(cfg, stage="train", run_name="train-kim_brunner", tags=tags) as run:
        log_and_register(classifier.eval(), example, name)
    return classifier, run.info.run_id


def test_predict_scores_the_unlabelled_archive_in_a_linked_run(
    unlabelled, tmp_path, monkeypatch
):
    import mlflow
    import torch

    from astroflow.lineage import predict
    from astroflow.train.mlflow_model import ARTIFACT_NAME

    cfg, index_path, reduce_run = unlabelled
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name = "astroflow-nolabels-test"
    trained_elsewhere = {"model": "kim_brunner", "task": "classification",
                         "raw_manifest_digest": "an-archive-with-labels"}
    _register(cfg, name, seed=1, tags=trained_elsewhere)
    newest, train_run = _register(cfg, name, seed=2, tags=trained_elsewhere)

    out = tmp_path / "p.parquet"
    argv = ["--model", name, str(index_path), "-o", str(out), "--config-json", json.dumps(cfg)]
    assert predict.main(argv) == 0

    table = pd.read_parquet(out)
    objects = pd.read_parquet(index_path.parent / "objects.parquet")
    assert list(table.columns) == ["object_id", "field", "row", "ra", "dec", "p_galaxy"]
    assert table["object_id"].tolist() == objects["object_id"].tolist()
    images = zarr.open_group(str(index_path.parent.parent / "fields/F00.zarr"), mode="r")
    with torch.inference_mode():  # the latest version (seed 2), not version 1
        expected = torch.sigmoid(newest(torch.from_numpy(images["images"][:]))).numpy()
    np.testing.assert_allclose(table["p_galaxy"], expected, rtol=0, atol=1e-5)

    client = mlflow.MlflowClient(cfg["tracking"]["uri"])
    exp = client.get_experiment_by_name(cfg["tracking"]["experiment"])
    (run,) = client.search_runs([exp.experiment_id], "tags.stage = 'predict'")
    tags = run.data.tags
    index = json.loads(index_path.read_text())
    assert run.info.status == "FINISHED"
    assert tags["upstream.train"] == train_run
    assert tags["upstream.reduce"] == reduce_run.info.run_id
    assert tags["dataset_digest"] == index["digest"]
    assert tags["model.name"] == name and tags["model.version"] == "2"
    assert tags["model.uri"] == f"models:/{name}/2" and tags["model.ref"] == name
    # the raw archive is the scored one (the reduce run's), not the one the model saw
    assert tags["raw_manifest_digest"] == reduce_run.data.tags["raw_manifest_digest"]
    assert tags["raw_manifest_digest"] != trained_elsewhere["raw_manifest_digest"]
    assert run.data.metrics["n_objects"] == len(objects)
    assert {d.dataset.digest for d in run.inputs.dataset_inputs} == {index["digest"][:32]}

    again = tmp_path / "again.csv"
    # another store left as the process-wide one (as an earlier stage or test leaves it) must
    # not be where the registered model is looked for. set_tracking_uri exports
    # MLFLOW_TRACKING_URI: setenv first, so that teardown restores the variable as it was
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset at teardown")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'another.db'}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert predict.main([*argv[:3], "-o", str(again), "--config-json", json.dumps(cfg),
                         "--no-tracking"]) == 0
    np.testing.assert_allclose(pd.read_csv(again)["p_galaxy"], table["p_galaxy"], atol=1e-6)
    # the same model by its run: runs:/<run>/<logged model name>
    by_run = tmp_path / "by_run.csv"
    assert predict.main(["--model", f"runs:/{train_run}/{ARTIFACT_NAME}", str(index_path),
                         "-o", str(by_run), "--config-json", json.dumps(cfg),
                         "--no-tracking"]) == 0
    np.testing.assert_allclose(pd.read_csv(by_run)["p_galaxy"], table["p_galaxy"], atol=1e-6)
    assert len(client.search_runs([exp.experiment_id], "tags.stage = 'predict'")) == 1
