"""One tiny pipeline run shared by every workflow test (running it costs about a minute)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "config" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` (a fresh directory), as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {log}\n{log.read_text()[-3000:]}" for log in sorted(workdir.glob("logs/**/*.log"))
        )
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode})\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-6000:]}\n{logs}"
        )
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Working directory of a finished `snakemake -c2 --configfile config/tiny.yaml` run."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir, "-c2", "--configfile", str(TINY))
    return workdir


@pytest.fixture(scope="session")
def tiny_metrics(tiny_run) -> dict:
    return json.loads((tiny_run / "results/evaluate/kim_brunner/metrics.json").read_text())
