"""`kill -9` of `astroflow train` mid-fit, then a rerun: it resumes from ``last.ckpt`` and ends
with the same metrics and weights as a fit that was never interrupted (CPU, same seed); the
killed job's MLflow run ends KILLED.

The dataset is the train tests' small reduce output (2 fields, 3 bands, 320 objects), loaded
from ``tests/train/conftest.py`` by path so both suites train on the same data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from astroflow.config import validate
from astroflow.train.fit import LAST_CKPT

TRAIN_DATA = Path(__file__).resolve().parents[1] / "train" / "conftest.py"
TIMEOUT_S = 400


def _train_data():
    spec = importlib.util.spec_from_file_location("reliability_train_data", TRAIN_DATA)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg(data, store: Path) -> dict:
    return validate(
        {
            "seed": 5,
            "instrument": {"bands": data.BANDS, "pixel_scale_arcsec": data.PIXEL_SCALE_ARCSEC},
            "reduce": {"cutout_size": data.CUTOUT, "chunk_objects": data.CHUNK},
            "train": {
                "models": ["kim_brunner"],
                "max_epochs": 4,
                "batch_size": 16,
                "early_stopping_patience": 10,
                "accelerator": "cpu",
                "split": {"cell_arcsec": 30.0, "buffer_arcsec": 2.0},
            },
            "tracking": {"uri": f"sqlite:///{store}", "experiment": "astroflow-reliability"},
        },
        source="reliability train test",
    )


def _argv(cfg: dict, index: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "astroflow.cli", "train", "--config-json", json.dumps(cfg),
            "--model", "kim_brunner", "--index", str(index), "--out-dir", str(out),
            "--threads", "1"]


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def _run(argv: list[str], log: Path) -> None:
    with open(log, "w") as fh:
        rc = subprocess.run(argv, stdout=fh, stderr=fh, env=_env(), timeout=TIMEOUT_S).returncode
    assert rc == 0, log.read_text()[-4000:]


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_killed_fit_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    from astroflow import tracking

    data = _train_data()
    index = data.write_reduce_outputs(tmp_path / "reduce")
    ref_cfg, cfg = _cfg(data, tmp_path / "ref.db"), _cfg(data, tmp_path / "mlflow.db")
    tracking.init_store(cfg)
    _run(_argv(ref_cfg, index, tmp_path / "ref"), tmp_path / "ref.log")

    out = tmp_path / "out"
    killed_log = tmp_path / "killed.log"
    with open(killed_log, "w") as fh:
        proc = subprocess.Popen(_argv(cfg, index, out), stdout=fh, stderr=fh, env=_env())
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not (out / LAST_CKPT).exists():  # epoch 0 done: the fit is in epoch 1 now
            assert proc.poll() is None, killed_log.read_text()[-4000:]
            assert time.monotonic() < deadline, "no last.ckpt written"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    epoch = torch.load(out / LAST_CKPT, map_location="cpu", weights_only=True)["epoch"]
    assert epoch < cfg["train"]["max_epochs"] - 1, "killed too late: the fit had finished"
    assert not (out / "run.json").exists()

    _run(_argv(cfg, index, out), tmp_path / "rerun.log")
    assert f"resuming the interrupted fit from {out / LAST_CKPT}" in (
        tmp_path / "rerun.log"
    ).read_text()
    ref = json.loads((tmp_path / "ref" / "run.json").read_text())
    got = json.loads((out / "run.json").read_text())
    for key in ("best_val_auc", "epochs_trained", "split_counts", "dataset_digest"):
        assert got[key] == ref[key], key
    mlflow.set_tracking_uri(cfg["tracking"]["uri"])
    runs = mlflow.search_runs(experiment_names=[cfg["tracking"]["experiment"]],
                              output_format="list")
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FINISHED", "KILLED"]  # the rerun closed the killed job's run

    ref_w, got_w = _weights(tmp_path / "ref" / "best.ckpt"), _weights(out / "best.ckpt")
    assert ref_w.keys() == got_w.keys()
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)
    assert not (out / LAST_CKPT).exists()  # a finished fit is never resumed
