"""Stage runs against a temporary sqlite store: tags, params and end states."""

import mlflow
import pytest

from astroflow import config, tracking


@pytest.fixture()
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(tracking.PIPELINE_ID_ENV, "pipe-test")
    cfg = config.validate({"tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}})
    tracking.init_store(cfg)
    return cfg


def test_finished_run_carries_lineage(cfg):
    with tracking.stage_run(
        cfg, "train", run_name="train-x", dataset_digest="d1", upstream_run_ids={"reduce": "r0"}
    ) as run:
        mlflow.log_metric("val/auc", 0.9)
    got = mlflow.MlflowClient().get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    tags = got.data.tags
    assert tags["stage"] == "train"
    assert tags["pipeline_id"] == "pipe-test"
    assert tags["dataset_digest"] == "d1"
    assert tags["upstream.reduce"] == "r0"
    assert tags["config_hash"] == config.config_hash(tracking.stage_params(cfg, "train"))
    assert tags["git_commit"]
    assert got.data.params["train.max_epochs"] == str(cfg["train"]["max_epochs"])
    assert got.data.params["instrument.bands"] == '["u", "g", "r", "i", "z"]'
    assert got.data.metrics["val/auc"] == 0.9


def test_exception_ends_run_failed(cfg):
    with pytest.raises(RuntimeError), tracking.stage_run(cfg, "evaluate") as run:
        raise RuntimeError("boom")
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "FAILED"


def test_interrupt_ends_run_killed(cfg):
    with pytest.raises(KeyboardInterrupt), tracking.stage_run(cfg, "evaluate") as run:
        raise KeyboardInterrupt
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "KILLED"


def test_env_uri_overrides_config(cfg, tmp_path, monkeypatch):
    other = f"sqlite:///{tmp_path}/other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert tracking.tracking_uri(cfg) == other


def test_flatten_nested():
    flat = tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


def test_init_command_writes_record(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "store.json"
    uri = f"sqlite:///{tmp_path}/m.db"
    rc = tracking.main(["init", "--config-json", f'{{"tracking": {{"uri": "{uri}"}}}}',
                        "--out", str(out)])
    assert rc == 0
    assert uri in out.read_text()
    assert (tmp_path / "m.db").stat().st_size > 0


def test_second_store_in_same_process_is_not_overridden(cfg, tmp_path):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; it must not leak into the next run."""
    other = config.validate({"tracking": {"uri": f"sqlite:///{tmp_path}/second.db"}})
    with tracking.stage_run(cfg, "train"):
        pass
    with tracking.stage_run(other, "train") as run:
        pass
    client = mlflow.MlflowClient(tracking_uri=other["tracking"]["uri"])
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
