"""``astroflow train`` end to end on the fixture dataset, tracked in a temporary sqlite store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import zarr

from astroflow.cli import main as cli_main
from astroflow.train.data import read_index
from astroflow.train.inference import load_checkpoint, load_classifier


@pytest.mark.slow
def test_train_stage_end_to_end(tmp_path, monkeypatch, reduce_index, train_cfg):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from astroflow import tracking

    with tracking.stage_run(
        train_cfg, stage="reduce", dataset_digest=read_index(reduce_index).digest
    ) as reduce_run:
        pass  # the reduce run that made this dataset: train links to it by the digest
    out = tmp_path / "results" / "train" / "kim_brunner"
    argv = [
        "train", "--config-json", json.dumps(train_cfg), "--model", "kim_brunner",
        "--index", str(reduce_index), "--out-dir", str(out), "--threads", "2",
    ]  # fmt: skip
    assert cli_main(argv) == 0

    for name in ("best.ckpt", "split.parquet", "run.json", "model/MLmodel"):
        assert (out / name).exists(), name
    assert not (out / "checkpoints").exists()
    index = read_index(reduce_index)
    split = pd.read_parquet(out / "split.parquet")
    assert list(split["object_id"]) == list(index.objects["object_id"])
    assert set(split["split"].astype(str)) == {"train", "val", "test", "buffer"}

    run_info = json.loads((out / "run.json").read_text())
    assert run_info["model"] == "kim_brunner"
    assert run_info["registered_model"] == "astroflow-kim_brunner"
    assert run_info["dataset_digest"] == index.digest

    client = MlflowClient(tracking_uri=train_cfg["tracking"]["uri"])
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "train"
    assert run.data.tags["dataset_digest"] == index.digest
    assert run.data.tags["upstream.reduce"] == reduce_run.info.run_id
    assert run.data.params["train.max_epochs"] == "2"
    history = client.get_metric_history(run.info.run_id, "val/auc")
    assert len(history) == 2  # one value per epoch
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2
    assert run.data.metrics["best/val_auc"] == pytest.approx(max(m.value for m in history))
    assert (
        run.data.metrics["split/n_train_labelled"]
        == ((split["split"] == "train").to_numpy() & (index.objects["label"].to_numpy() >= 0)).sum()
    )
    assert any(k.startswith("lr-") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint", "split.parquet", "run.json"} <= artifacts
    versions = client.search_model_versions("name='astroflow-kim_brunner'")
    assert [v.run_id for v in versions] == [run.info.run_id]

    images = zarr.open_group(index.stores["F01"], mode="r")["images"][:20]
    p_dir = load_classifier(out / "model").predict_proba(images)
    p_ckpt = load_checkpoint(out / "best.ckpt").predict_proba(images)
    np.testing.assert_allclose(p_dir, p_ckpt, rtol=0, atol=1e-6)
    assert ((p_dir > 0) & (p_dir < 1)).all()


def test_train_stage_rejects_band_mismatch(tmp_path, monkeypatch, reduce_index, train_cfg):
    monkeypatch.chdir(tmp_path)
    cfg = {**train_cfg, "instrument": {**train_cfg["instrument"], "bands": ["g", "r", "z"]}}
    cfg["instrument"]["zeropoint_mag"] = {"g": 26.3, "r": 26.2, "z": 25.2}
    cfg["simulate"] = {**cfg["simulate"], "sky_mag_arcsec2": {"g": 22.3, "r": 21.2, "z": 19.6}}
    argv = [
        "--config-json", json.dumps(cfg), "--model", "resnet", "--index", str(reduce_index),
        "--out-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    from astroflow.train.stage import main

    with pytest.raises(ValueError, match=r"index.json: bands \['g', 'r', 'i'\] differ"):
        main(argv)
