"""``data.labels: null`` (an archive without labels): the workflow stops after reduce, and
``predict.model`` adds the predict job. Dry runs of the repository's Snakefile on the tiny
config: the DAG, not the jobs."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import yaml
from pipeline_run import TINY, snakemake

from astroflow.config import ConfigError, validate

NO_LABELS = {"data": {"labels": None}}
PREDICT = {"predict": {"model": "astroflow-kim_brunner/3"}}


def test_config_accepts_no_labels_but_not_an_empty_path():
    assert validate(NO_LABELS)["data"]["labels"] is None
    assert validate({})["predict"]["model"] is None  # no predict job unless asked for
    with pytest.raises(ConfigError, match="data.labels"):
        validate({"data": {"labels": ""}})


def _dry_run(workdir, *overrides: dict) -> tuple[Counter, str]:
    """Jobs per rule of ``snakemake -n -p`` on the tiny config plus ``overrides``, and the
    printed shell commands."""
    files = []
    for k, override in enumerate(overrides):
        files.append(workdir / f"override{k}.yaml")
        files[-1].write_text(yaml.safe_dump(override))
    proc = snakemake(workdir, "-n", "-p", "--configfile", str(TINY), *map(str, files))
    out = proc.stdout + proc.stderr
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)})
    return jobs, out


@pytest.mark.parametrize("labelled", [True, False], ids=["labels", "no-labels"])
def test_without_labels_the_workflow_stops_after_reduce(tmp_path, labelled):
    jobs, out = _dry_run(tmp_path, *([] if labelled else [NO_LABELS]))
    assert jobs["reduce_field"] == 2 and jobs["reduce_index"] == 1 and jobs["reduce_calib"] == 1
    downstream = {"train", "train_morphology", "evaluate"}
    if labelled:
        assert downstream <= set(jobs)
        assert "--labels data/catalogs/labels.ecsv" in out
    else:
        assert not downstream & set(jobs), jobs
        assert "simulate_catalogs" not in jobs  # nothing reads the demo's catalogs
        assert "labels.ecsv" not in out
        assert re.search(r"astroflow reduce field .* --labels +--out-store", out)
    assert "predict" not in jobs


def test_predict_model_adds_one_predict_job(tmp_path):
    jobs, out = _dry_run(tmp_path, NO_LABELS, PREDICT)
    assert jobs["predict"] == 1 and jobs["reduce_index"] == 1
    assert not {"train", "evaluate"} & set(jobs)
    command = re.search(r"astroflow predict .*", out)[0]
    assert "--model astroflow-kim_brunner/3 results/reduce/index.json" in command
    assert "-o results/predict/astroflow-kim_brunner_3.parquet" in command
    assert "--tta" not in command
    block = out.split("rule predict:", 1)[1].split("output:", 1)[0]
    assert "results/train/" not in block  # no labels: nothing trained here to wait for


def test_predict_of_the_model_trained_here_waits_for_its_train_job(tmp_path):
    jobs, out = _dry_run(tmp_path, {"predict": {"model": "astroflow-kim_brunner"}})
    assert jobs["predict"] == 1 and jobs["train"] == 1 and jobs["evaluate"] == 1
    block = out.split("rule predict:", 1)[1].split("output:", 1)[0]
    assert "results/train/kim_brunner/run.json" in block
