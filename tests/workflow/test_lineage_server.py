"""The tiny pipeline against a real `mlflow server` over HTTP; lineage read back through REST."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pipeline_run import REPO, TINY

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rest(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture()
def server(tmp_path):
    """A real MLflow tracking server on 127.0.0.1 (sqlite backend, local artifacts)."""
    port = _free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not start:\n"
                                       + (tmp_path / "server.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_pipeline_over_http_records_lineage(server, tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "-c2", "--configfile", str(TINY)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in workdir.glob("logs/**/*.log"))
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    assert not (workdir / "mlflow.db").exists(), "runs went to a local store, not the server"

    experiment = _rest(server, "experiments/get-by-name?experiment_name=astroflow")["experiment"]
    found = _rest(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                          "max_results": 50})["runs"]
    by_stage, morphology = {}, []
    for run in found:
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        if tags.get("task") == "morphology":  # the regressor's train run (train.tasks)
            morphology.append(run["info"]["run_id"])
            continue
        by_stage[tags["stage"]] = (run, tags)
    assert set(by_stage) == {"reduce", "train", "evaluate"}
    assert {run["info"]["status"] for run, _ in by_stage.values()} == {"FINISHED"}
    (reduce_run, reduce_tags), (_, train_tags), (eval_run, eval_tags) = (
        by_stage["reduce"], by_stage["train"], by_stage["evaluate"])
    assert len({tags["pipeline_id"] for _, tags in by_stage.values()}) == 1
    assert eval_tags["upstream.train"] == by_stage["train"][0]["info"]["run_id"]
    assert [eval_tags["upstream.train_morphology"]] == morphology
    assert eval_tags["upstream.reduce"] == train_tags["upstream.reduce"] \
        == reduce_run["info"]["run_id"]
    assert eval_tags["raw_manifest_digest"] == reduce_tags["raw_manifest_digest"]
    assert eval_tags["dataset_digest"] == reduce_tags["dataset_digest"]
    index = json.loads((workdir / "results/reduce/index.json").read_text())
    assert eval_tags["dataset_digest"] == index["digest"]
    for key in ("git_commit", "git_dirty", "config_hash", "code_digest", "version.mlflow"):
        assert eval_tags[key], key

    # dataset inputs: the raw archive on the reduce run, the cutouts on the evaluate run
    raw_inputs = reduce_run["inputs"]["dataset_inputs"]
    assert any(d["dataset"]["name"].startswith("raw-") for d in raw_inputs)
    eval_inputs = eval_run["inputs"]["dataset_inputs"]
    assert [d["dataset"]["digest"] for d in eval_inputs] == [index["digest"][:32]]

    # the raw manifest artifact, downloaded through the server's artifact proxy
    listed = _rest(server, f"artifacts/list?run_id={reduce_run['info']['run_id']}&path=lineage")
    assert [f["path"] for f in listed["files"]] == ["lineage/raw_manifest.json"]
    art = (f"{server}/get-artifact?path=lineage/raw_manifest.json"
           f"&run_uuid={reduce_run['info']['run_id']}")
    with urllib.request.urlopen(art, timeout=30) as response:
        manifest = json.loads(response.read())
    raw = sorted(str(p.relative_to(workdir)) for p in Path(workdir, "data/raw").rglob("*.fits"))
    assert sorted(f["path"] for f in manifest["files"] if f["role"] != "labels") == raw
    assert manifest["digest"] == reduce_tags["raw_manifest_digest"]
