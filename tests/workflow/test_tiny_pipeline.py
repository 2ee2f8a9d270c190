"""The whole DAG on the tiny config: raw FITS -> Zarr -> model -> metrics, all tracked."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import zarr
from pipeline_run import REPO, TINY, snakemake

pytestmark = pytest.mark.slow


def test_dry_run_lists_every_stage(tmp_path):
    out = snakemake(tmp_path, "-n", "--configfile", str(TINY)).stdout
    for rule in ("tracking_init", "simulate_calib", "simulate_field", "simulate_catalogs",
                 "reduce_calib", "reduce_field", "reduce_index", "train", "train_morphology",
                 "evaluate", "all"):
        assert rule in out, f"rule {rule} missing from the dry run"


def test_job_params_carry_labels_mapping_but_not_the_task_list(tmp_path):
    """reduce reads data.labels_columns, so its jobs get it; train.tasks only shapes the DAG."""
    out = snakemake(tmp_path, "-n", "-p", "--configfile", str(TINY)).stdout
    reduce_cmds = [line for line in out.splitlines() if "astroflow reduce field" in line]
    assert reduce_cmds and all('"labels_columns"' in line for line in reduce_cmds)
    train_cmds = [line for line in out.splitlines() if "astroflow train" in line]
    assert len(train_cmds) == 2 and not any('"tasks"' in line for line in train_cmds)
    assert sum("--task morphology" in line for line in train_cmds) == 1


def test_lint_passes(tmp_path):
    proc = snakemake(tmp_path, "--lint", "--configfile", str(TINY), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_config_rejected_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_epochs: -1\n")
    proc = snakemake(tmp_path, "-n", "--configfile", str(TINY), str(bad), check=False)
    assert proc.returncode != 0
    assert "train.max_epochs" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_metrics_json(tiny_metrics):
    auc = tiny_metrics["model"]["auc"]
    assert tiny_metrics["n_test"] > 20
    assert 0.0 <= auc["ci95"][0] <= auc["value"] <= auc["ci95"][1] <= 1.0
    # the tiny model must learn something beyond chance on this easy-ish data
    assert auc["value"] > 0.6
    for name in ("concentration", "forest"):
        assert name in tiny_metrics["baselines"]


def test_zarr_store_contract(tiny_run):
    index = json.loads((tiny_run / "results/reduce/index.json").read_text())
    assert len(index["digest"]) == 64
    assert set(index["fields"]) == {"F00", "F01"}
    objects = pd.read_parquet(tiny_run / "results/reduce/objects.parquet")
    for field, entry in index["fields"].items():
        group = zarr.open_group(tiny_run / "results/reduce" / entry["store"], mode="r")
        images = group["images"]
        n = int((objects["field"] == field).sum())
        assert images.shape == (n, 3, 48, 48)
        assert images.dtype == np.float32
        assert group.attrs["flux_unit"] == "nJy"
        assert group.attrs["bands"] == ["g", "r", "i"]
        assert group.attrs["provenance"]["inputs"]
        assert np.isfinite(images[: min(n, 16)]).all()


def test_mlflow_runs_for_each_stage(tiny_run):
    mlflow.set_tracking_uri(f"sqlite:///{tiny_run / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["astroflow"], output_format="list")
    by_stage = {run.data.tags["stage"]: run for run in runs
                if run.data.tags.get("task") != "morphology"}
    assert {"reduce", "train", "evaluate"} <= set(by_stage)
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert len({run.data.tags["pipeline_id"] for run in runs}) == 1
    train, evaluate = by_stage["train"], by_stage["evaluate"]
    assert evaluate.data.tags["upstream.train"] == train.info.run_id
    assert train.data.tags["dataset_digest"] == evaluate.data.tags["dataset_digest"]
    assert "val/auc" in train.data.metrics
    assert train.data.params["train.max_epochs"] == "2"
    assert any(key.startswith("model_auc") for key in evaluate.data.metrics)
    client = mlflow.MlflowClient()
    assert client.search_model_versions("name='astroflow-kim_brunner'")
    morph = [run for run in runs if run.data.tags.get("task") == "morphology"]
    assert [run.data.tags["stage"] for run in morph] == ["train"]
    assert evaluate.data.tags["upstream.train_morphology"] == morph[0].info.run_id
    assert "val/nmad_sersic_dex" in morph[0].data.metrics
    assert "morphology_model_sersic_n_nmad" in evaluate.data.metrics
    assert client.search_model_versions("name='astroflow-kim_brunner-morphology'")


def test_morphology_metrics_and_outputs(tiny_run, tiny_metrics):
    """metrics.json validates and has finite morphology figures for model and baseline."""
    from astroflow.evaluate.summary import validate_metrics

    validate_metrics(tiny_metrics)
    morph = tiny_metrics["morphology"]
    assert morph["truth_source"] == "truth" and morph["n_test"] >= 5
    for block in (morph["model"], morph["baselines"]["moments"]):
        for quantity in ("sersic_n", "ellipticity"):
            for metric in ("bias", "nmad", "outlier_frac"):
                assert np.isfinite(block[quantity][metric]["value"]), (quantity, metric)
    evaluate = tiny_run / "results/evaluate/kim_brunner"
    for name in ("morphology_pred_vs_true", "morphology_residual_vs_mag"):
        assert (evaluate / "plots" / f"{name}.png").stat().st_size > 0
    pred = pd.read_parquet(evaluate / "predictions.parquet")
    scored = pred["sersic_n"].notna()
    assert int(scored.sum()) == morph["n_test"]
    assert (pred.loc[scored, "sersic_n"] > 0).all()
    assert pred.loc[scored, "ellipticity"].between(0, 1).all()
    assert pred.loc[scored, "true_sersic_n"].notna().all()


def test_morphology_model_uses_the_classification_split(tiny_run):
    train = tiny_run / "results/train/kim_brunner"
    a = pd.read_parquet(train / "split.parquet")
    b = pd.read_parquet(train / "morphology/split.parquet")
    pd.testing.assert_frame_equal(a, b)
    run = json.loads((train / "morphology/run.json").read_text())
    assert run["task"] == "morphology" and run["split_counts"]["n_train_labelled"] >= 2
    objects = pd.read_parquet(tiny_run / "results/reduce/objects.parquet")
    galaxies = objects[objects["label"] == 1]
    assert galaxies["label_sersic_n"].notna().mean() > 0.8  # flipped stars have none
    assert objects.loc[objects["label"] == -1, "label_sersic_n"].isna().all()


def test_rerun_does_nothing(tiny_run):
    out = snakemake(tiny_run, "-n", "--configfile", str(TINY)).stdout
    assert "Nothing to be done" in out or "nothing to be done" in out.lower()


def test_repository_layout():
    for rel in ("Snakefile", "workflow/rules/common.smk", "workflow/schemas/config.schema.yaml",
                "config/config.yaml", "config/tiny.yaml", "envs", "profiles", "src/astroflow",
                "benchmarks", "README.md", "pyproject.toml"):
        assert (REPO / rel).exists(), rel
