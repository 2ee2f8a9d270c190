"""One tiny pipeline run shared by every workflow test (running it costs a minute or two)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_run import TINY, snakemake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Working directory of a finished `snakemake -c2 --configfile config/tiny.yaml` run."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir, "-c2", "--configfile", str(TINY))
    return workdir


@pytest.fixture(scope="session")
def tiny_metrics(tiny_run) -> dict:
    return json.loads((tiny_run / "results/evaluate/kim_brunner/metrics.json").read_text())
