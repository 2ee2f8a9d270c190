"""Lineage of the shared tiny run: raw manifest, runs table, compare, reproduce, predict."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from pipeline_run import snakemake

from astroflow import tracking
from astroflow.lineage import predict, records, reproduce, runs

pytestmark = pytest.mark.slow


def _runs_by_stage(workdir: Path) -> tuple[mlflow.MlflowClient, dict]:
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    found = records.search(client, "astroflow", "attributes.status = 'FINISHED'")
    by_stage = {}
    for run in found:  # newest first: keep the newest run of each stage
        if run.data.tags.get("task") != "morphology":  # one train run: the classifier's
            by_stage.setdefault(run.data.tags["stage"], run)
    return client, by_stage


def test_reduce_run_records_every_raw_file(tiny_run):
    client, by_stage = _runs_by_stage(tiny_run)
    manifest = records.json_artifact(client, by_stage["reduce"], tracking.RAW_MANIFEST_ARTIFACT)
    on_disk = {str(p.relative_to(tiny_run)) for p in (tiny_run / "data/raw").rglob("*.fits")}
    listed = {f["path"] for f in manifest["files"]}
    assert on_disk <= listed
    assert listed - on_disk == {"data/catalogs/labels.ecsv"}
    for stage in ("reduce", "train", "evaluate"):
        tags = by_stage[stage].data.tags
        assert tags["raw_manifest_digest"] == manifest["digest"], stage
        assert tags["dataset_digest"] == by_stage["reduce"].data.tags["dataset_digest"]
        assert tags["workdir"] == str(tiny_run)
    assert by_stage["evaluate"].data.tags["upstream.reduce"] == by_stage["reduce"].info.run_id
    config = records.json_artifact(client, by_stage["train"], tracking.STAGE_CONFIG_ARTIFACT)
    assert config["train"]["max_epochs"] == 2
    digests = {d.dataset.digest for d in by_stage["train"].inputs.dataset_inputs}
    assert digests == {by_stage["train"].data.tags["dataset_digest"][:32]}


def test_runs_table_lists_the_pipeline(tiny_run, monkeypatch, capsys):
    monkeypatch.chdir(tiny_run)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert runs.main([]) == 0
    out = capsys.readouterr().out
    _, by_stage = _runs_by_stage(tiny_run)
    for stage in ("reduce", "train/kim_brunner", "evaluate/kim_brunner"):
        assert stage in out
    assert by_stage["reduce"].data.tags["dataset_digest"][:12] in out
    assert "model_auc=" in out


def test_tampered_raw_file_makes_reproduce_refuse(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tiny_run)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, by_stage = _runs_by_stage(tiny_run)
    target = tiny_run / "data/raw/science/F01/F01_i_e0.fits"
    original, stat = target.read_bytes(), target.stat()
    try:
        data = bytearray(original)
        data[-100] ^= 0x01  # one bit in the last amplifier's pixels
        target.write_bytes(bytes(data))
        rc = reproduce.main([by_stage["evaluate"].info.run_id, "--workdir", str(tmp_path / "r"),
                             "--allow-code-change"])
    finally:  # the fixture is shared: restore bytes and mtime
        target.write_bytes(original)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert rc == reproduce.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "REFUSED" in err and "data/raw/science/F01/F01_i_e0.fits" in err
    assert not (tmp_path / "r").exists()


def test_predict_with_registered_model_matches_evaluate(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_run)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "p.csv"
    # --no-tracking: the tiny run's store is shared by the other workflow tests, which count
    # its runs (predict's own run is tested in tests/reduce/test_reduce_no_labels.py)
    rc = predict.main(["--model", "astroflow-kim_brunner", "results/reduce/index.json",
                       "-o", str(out), "--no-tracking"])
    assert rc == 0
    got = pd.read_csv(out)
    evaluated = pd.read_parquet("results/evaluate/kim_brunner/predictions.parquet")
    assert len(got) == json.loads(Path("results/reduce/index.json").read_text())["n_objects"]
    # evaluate scores with test-time augmentation; compare against the same setting
    rc = predict.main(["--model", "results/train/kim_brunner/model", "results/reduce/index.json",
                       "-o", str(tmp_path / "tta.parquet"), "--tta", "--no-tracking"])
    assert rc == 0
    tta = pd.read_parquet(tmp_path / "tta.parquet").set_index("object_id")
    ev = evaluated.set_index("object_id")["p_galaxy"]
    assert (tta.loc[ev.index, "p_galaxy"] - ev).abs().max() < 1e-5
    assert got["p_galaxy"].between(0, 1).all()


def test_reproduce_gives_identical_metrics_and_one_key_change_shows_in_compare(
    tiny_run, tmp_path, monkeypatch, capsys
):
    """Reruns the tiny pipeline from the recorded raw archive (about a minute), then evaluate
    alone with one changed key: the two evaluate runs differ in that key only."""
    monkeypatch.chdir(tiny_run)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, by_stage = _runs_by_stage(tiny_run)
    workdir = tmp_path / "again"
    # --allow-code-change: other work may edit src/ while the tests run; CI has a fixed tree.
    rc = reproduce.main([by_stage["evaluate"].info.run_id, "--workdir", str(workdir),
                         "--allow-code-change"])
    out = capsys.readouterr().out
    assert rc == reproduce.EXIT_OK, out
    verdict = json.loads((workdir / "reproduce/verdict.json").read_text())
    assert verdict["verdict"] == "IDENTICAL", out
    assert "verdict: IDENTICAL" in out
    assert any(m["metric"] == "model_auc" for m in verdict["metrics"])

    cfg = yaml.safe_load((workdir / "reproduce/config.yaml").read_text())
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({"evaluate": {"n_bootstrap": 20}}))
    snakemake(workdir, "-c2", "--configfile", str(workdir / "reproduce/config.yaml"),
              str(changed))
    client, by_stage2 = _runs_by_stage(workdir)
    evals = records.search(client, "astroflow", "tags.stage = 'evaluate'")
    assert len(evals) == 2 and cfg["evaluate"]["n_bootstrap"] == 50
    diff = runs.compare_runs(evals[1], evals[0])
    assert diff["config"] == {"evaluate.n_bootstrap": ("50", "20")}
    assert "dataset_digest" in diff["same_lineage"]
    assert "raw_manifest_digest" in diff["same_lineage"]
