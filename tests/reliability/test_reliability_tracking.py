"""MLflow runs of killed jobs end KILLED, never RUNNING; no credentials reach logs or records.

SIGKILL runs no handler, so the killed job cannot close its run. Each run is tagged with its
process (host, pid, start time); the next job of the same rule and wildcards (``stage_run``),
or ``astroflow tracking close-orphans``, ends the runs whose process is gone as KILLED.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import reliability_archive as ra

from astroflow import tracking

CHILD = """
import os, signal, sys, time
from pathlib import Path
import json
from astroflow import tracking
cfg = json.loads(sys.argv[1]); name, mode, ready = sys.argv[2:5]
os.environ["ASTROFLOW_RULE"] = name.split("-")[0]
with tracking.stage_run(cfg, stage=name.split("-")[0], run_name=name) as run:
    Path(ready).write_text(run.info.run_id)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)
"""


def _start_child(cfg: dict, name: str, mode: str, ready: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), name, mode, str(ready)])


def _wait_ready(proc: subprocess.Popen, ready: Path, timeout_s: float = 180.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        assert time.monotonic() < deadline, f"child never opened its run ({ready})"
        time.sleep(0.05)
    time.sleep(0.05)  # the run id is written in one small write; let it land
    return ready.read_text()


def _status(cfg: dict, run_id: str) -> mlflow.entities.Run:
    mlflow.set_tracking_uri(cfg["tracking"]["uri"])
    return mlflow.MlflowClient().get_run(run_id)


def test_killed_jobs_runs_are_closed_as_killed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = ra.small_config(tmp_path)
    tracking.init_store(cfg)
    modes = {"train-kim_brunner": "kill", "evaluate-kim_brunner": "kill", "train-resnet": "sleep"}
    children = {n: _start_child(cfg, n, m, tmp_path / f"{n}.ready") for n, m in modes.items()}
    try:
        ids = {n: _wait_ready(p, tmp_path / f"{n}.ready") for n, p in children.items()}
        for name in ("train-kim_brunner", "evaluate-kim_brunner"):
            assert children[name].wait(timeout=60) == -9
            assert _status(cfg, ids[name]).info.status == "RUNNING"  # what SIGKILL leaves

        # The rerun of train-kim_brunner closes its own rule's orphan, nothing else.
        monkeypatch.setenv("ASTROFLOW_RULE", "train")
        with tracking.stage_run(cfg, stage="train", run_name="train-kim_brunner"):
            pass
        killed = _status(cfg, ids["train-kim_brunner"])
        assert killed.info.status == "KILLED"
        assert "ended without closing the run" in killed.data.tags["killed_reason"]
        assert _status(cfg, ids["evaluate-kim_brunner"]).info.status == "RUNNING"

        # `astroflow tracking close-orphans` closes every orphan, but not a live job's run.
        argv = ["close-orphans", "--config-json", json.dumps(cfg)]
        assert tracking.main(argv) == 0
        assert _status(cfg, ids["evaluate-kim_brunner"]).info.status == "KILLED"
        assert _status(cfg, ids["train-resnet"]).info.status == "RUNNING"
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)


def test_redact_uri_hides_user_and_password():
    uri = "https://alice:s3cr3t@mlflow.example.org:5443/prefix?x=1"
    assert tracking.redact_uri(uri) == "https://***@mlflow.example.org:5443/prefix?x=1"
    assert tracking.redact_uri("http://token@host/") == "http://***@host/"
    assert tracking.redact_uri("sqlite:///results/mlflow.db") == "sqlite:///results/mlflow.db"
    assert tracking.redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_credentials_reach_no_log_param_tag_or_artifact(tmp_path, monkeypatch, caplog):
    """The configured URI carries credentials; the store used is a local sqlite file (the
    environment overrides the config), so every record of the run can be read back."""
    secret = "s3cr3t-password"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = ra.small_config(tmp_path)
    cfg["tracking"]["uri"] = f"https://alice:{secret}@mlflow.example.org"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv(tracking.PIPELINE_CONFIG_ENV, json.dumps(cfg))
    caplog.set_level(logging.INFO, logger="astroflow")
    with tracking.stage_run(cfg, stage="reduce") as run:
        run_id = run.info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://alice:{secret}@mlflow.example.org")
    info = tracking.redact_uri(tracking.tracking_uri(cfg))
    assert secret not in info
    mlflow.set_tracking_uri(store)
    data = mlflow.MlflowClient().get_run(run_id).data
    assert secret not in json.dumps(data.params) and secret not in json.dumps(data.tags)
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "a")))
    texts = [p.read_text() for p in local.rglob("*.json")]
    assert len(texts) >= 2 and all(secret not in t for t in texts)
    assert all("***@mlflow.example.org" in t for t in texts if "tracking" in t)
    assert secret not in caplog.text


def test_astroflow_starts_no_server_on_all_interfaces():
    """astroflow starts no MLflow server itself (users start `mlflow ui/server`, and the docs
    say --host 127.0.0.1); no module passes a "server" argv element or binds 0.0.0.0."""
    import astroflow

    root = Path(astroflow.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "0.0.0.0" not in text, path
        assert '"server"' not in text and "'server'" not in text, path
