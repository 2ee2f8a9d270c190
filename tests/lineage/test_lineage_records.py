"""Lineage records in a temporary sqlite store: what stage_run logs and what `runs` reads."""

from __future__ import annotations

import json

import mlflow
import pytest

from astroflow import config, tracking
from astroflow.lineage import records, reproduce, runs


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One sqlite store for the module (creating its schema takes seconds)."""
    path = tmp_path_factory.mktemp("lineage_store") / "mlflow.db"
    return f"sqlite:///{path}"


@pytest.fixture()
def store(store_uri, tmp_path, monkeypatch, request):
    """A config tracking into its own experiment, an index file and a raw manifest."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PIPELINE_CONFIG_ENV, raising=False)
    monkeypatch.setenv(tracking.PIPELINE_ID_ENV, "pipe-lineage")
    experiment = request.node.name
    cfg = config.validate({"tracking": {"uri": store_uri, "experiment": experiment}})
    tracking.init_store(cfg)
    index = tmp_path / "index.json"
    index.write_text('{"digest": "d" }\n')
    manifest = {"digest": "f" * 64, "root": str(tmp_path), "workdir": str(tmp_path),
                "files": [], "n_files": 0}
    return cfg, store_uri, index, manifest


def _chain(cfg, index, manifest, n_bootstrap=200, truth=None):
    """A reduce -> train -> evaluate chain of real stage runs; returns their run ids."""
    with tracking.stage_run(cfg, "reduce", dataset_digest="a" * 64, dataset_source=index,
                            raw_manifest=manifest) as red:
        mlflow.log_metric("n_objects", 100)
    with tracking.stage_run(cfg, "train", dataset_digest="a" * 64, dataset_source=index,
                            upstream_run_ids={"reduce": red.info.run_id},
                            tags={"model": "kim_brunner"}) as tr:
        mlflow.log_metric("best/val_auc", 0.9)
    ecfg = config.validate({**cfg, "evaluate": {"n_bootstrap": n_bootstrap}})
    with tracking.stage_run(ecfg, "evaluate", dataset_digest="a" * 64, dataset_source=index,
                            upstream_run_ids={"train": tr.info.run_id},
                            input_files={"truth": truth} if truth else None) as ev:
        mlflow.log_metric("model_auc", 0.91 if n_bootstrap == 200 else 0.92)
    return red.info.run_id, tr.info.run_id, ev.info.run_id


def test_stage_runs_record_lineage(store, tmp_path):
    cfg, uri, index, manifest = store
    truth = tmp_path / "truth.ecsv"
    truth.write_text("ra dec class\n")
    red, tr, ev = _chain(cfg, index, manifest, truth=truth)
    client = mlflow.MlflowClient(uri)
    reduce_run, eval_run = client.get_run(red), client.get_run(ev)
    assert reduce_run.data.tags["raw_manifest_digest"] == manifest["digest"]
    # inherited through train: the evaluate run names the raw archive and the reduce run
    assert eval_run.data.tags["raw_manifest_digest"] == manifest["digest"]
    assert eval_run.data.tags["upstream.reduce"] == red
    assert eval_run.data.tags["upstream.train"] == tr
    assert eval_run.data.tags["code_digest"] == tracking.code_digest()
    assert len(eval_run.data.tags["input_sha256.truth"]) == 64
    assert records.json_artifact(client, reduce_run, tracking.RAW_MANIFEST_ARTIFACT) == manifest
    stage_cfg = records.json_artifact(client, client.get_run(tr), tracking.STAGE_CONFIG_ARTIFACT)
    assert stage_cfg["train"] == cfg["train"]
    datasets = eval_run.inputs.dataset_inputs
    assert [d.dataset.digest for d in datasets] == ["a" * tracking.MLFLOW_DIGEST_CHARS]
    assert {t.value for t in datasets[0].tags if t.key == "mlflow.data.context"} == {"evaluation"}
    raw = reduce_run.inputs.dataset_inputs
    assert {d.dataset.name for d in raw} == {"raw-ffffffffffff", "cutouts-aaaaaaaaaaaa"}


def test_pipeline_config_is_recorded_when_exported(store, monkeypatch):
    cfg, uri, index, manifest = store
    monkeypatch.setenv(tracking.PIPELINE_CONFIG_ENV, json.dumps({"seed": 7, "simulate": {}}))
    with tracking.stage_run(cfg, "train") as run:
        pass
    client = mlflow.MlflowClient(uri)
    recorded = records.json_artifact(client, client.get_run(run.info.run_id),
                                     tracking.PIPELINE_CONFIG_ARTIFACT)
    assert recorded == {"seed": 7, "simulate": {}}


def test_runs_table_and_compare(store, capsys):
    cfg, uri, index, manifest = store
    _, _, ev1 = _chain(cfg, index, manifest, n_bootstrap=200)
    _, _, ev2 = _chain(cfg, index, manifest, n_bootstrap=50)
    experiment = ["--experiment", cfg["tracking"]["experiment"]]
    assert runs.main(["--tracking-uri", uri, *experiment]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["run", "started"]
    assert len(table) == 1 + 6
    assert any("evaluate" in line and "model_auc=0.9200" in line for line in table)
    assert all("ffffffffffff" in line for line in table[1:])

    client = mlflow.MlflowClient(uri)
    diff = runs.compare_runs(client.get_run(ev1), client.get_run(ev2))
    assert diff["config"] == {"evaluate.n_bootstrap": ("200", "50")}
    assert diff["same_lineage"]["dataset_digest"] == "a" * 64
    assert diff["metrics"]["model_auc"] == (0.91, 0.92)
    assert runs.main(["compare", ev1[:10], ev2[:10], "--tracking-uri", uri, *experiment]) == 0
    out = capsys.readouterr().out
    assert "evaluate.n_bootstrap" in out and "dataset_digest = " + "a" * 64 in out


def test_compare_shows_paired_deltas_with_their_verdicts(store, capsys):
    """The evaluate stage logs each delta as value, _lo, _hi and _verdict; compare shows one
    line per delta with the interval and the verdict in words, not four raw metrics."""
    from astroflow.evaluate.paired_delta import delta_mlflow_metrics

    cfg, uri, index, manifest = store
    deltas = [
        {"auc": {"value": 0.021, "ci95": [0.004, 0.037], "verdict": "better"}},
        {"auc": {"value": 0.006, "ci95": [-0.01, None], "verdict": "undecided"}},
    ]
    ids = []
    for delta in deltas:
        with tracking.stage_run(cfg, "evaluate", dataset_digest="a" * 64) as ev:
            mlflow.log_metrics({"model_auc": 0.95,
                                **delta_mlflow_metrics("delta_vs_forest", delta)})
            ids.append(ev.info.run_id)
    client = mlflow.MlflowClient(uri)
    a, b = (client.get_run(i) for i in ids)
    diff = runs.compare_runs(a, b)
    assert diff["deltas"] == {"delta_vs_forest_auc": ("+0.0210 [+0.0040, +0.0370] better",
                                                      "+0.0060 [-0.0100, n/a] undecided")}
    assert set(diff["metrics"]) == {"model_auc"}  # the delta's four metrics are not repeated
    assert runs.main(["compare", ids[0], ids[1], "--tracking-uri", uri,
                      "--experiment", cfg["tracking"]["experiment"]]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "delta_vs_forest_auc" in x)
    assert line.startswith("  * ") and line.split()[-1] == "undecided" and "better" in line


def test_unknown_run_and_missing_store_are_named(store, tmp_path, capsys):
    cfg, uri, index, manifest = store
    assert runs.main(["compare", "0" * 32, "1" * 32, "--tracking-uri", uri]) == 1
    assert "run " + "0" * 32 + " not found" in capsys.readouterr().err
    with pytest.raises(records.LineageError, match="nothere.db"):
        records.store_uri(f"sqlite:///{tmp_path}/nothere.db")


def test_reproduce_refuses_reduce_runs_and_unknown_commits(store):
    cfg, uri, index, manifest = store
    red, tr, ev = _chain(cfg, index, manifest)
    client = mlflow.MlflowClient(uri)
    with pytest.raises(reproduce.Refused, match="reduce"):
        reproduce.make_plan(client, client.get_run(red))
    plan = reproduce.make_plan(client, client.get_run(ev))
    assert plan.target == "results/evaluate/kim_brunner/metrics.json"
    assert plan.config["train"]["models"] == ["kim_brunner"]
    client.set_tag(tr, "git_commit", "0123456789abcdef0123456789abcdef01234567")
    plan = reproduce.make_plan(client, client.get_run(ev))
    with pytest.raises(reproduce.Refused, match="0123456789abcdef.* is not in the repository"):
        reproduce.check_code(plan, allow_change=False)


def test_verdict_words(store):
    cfg, uri, index, manifest = store
    _, _, ev1 = _chain(cfg, index, manifest, n_bootstrap=200)
    _, _, ev2 = _chain(cfg, index, manifest, n_bootstrap=50)
    client = mlflow.MlflowClient(uri)
    plan = reproduce.make_plan(client, client.get_run(ev1))
    same = reproduce.verdict(plan, {"evaluate": client.get_run(ev1)}, rtol=0.02)
    assert same["verdict"] == "IDENTICAL"
    close = reproduce.verdict(plan, {"evaluate": client.get_run(ev2)}, rtol=0.02)
    assert close["verdict"] == "WITHIN TOLERANCE"
    far = reproduce.verdict(plan, {"evaluate": client.get_run(ev2)}, rtol=0.001)
    assert far["verdict"] == "DIFFERENT"
    assert "verdict: DIFFERENT" in reproduce.format_verdict(far)


def test_paired_deltas_are_compared_absolutely():
    """A delta near 0 that moves by 0.002 is within a 2 % tolerance; relatively it moved 200 %."""
    assert reproduce._difference("delta_vs_forest_auc", 0.001, 0.003) == pytest.approx(0.002)
    assert reproduce._difference("model_auc", 0.9, 0.918) == pytest.approx(0.02)
    assert reproduce._difference("n_test", 0.0, 1.0) == float("inf")
