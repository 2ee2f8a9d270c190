"""New exposures in an archive: only the field they touch is reduced again, the dataset digest
changes and the reduce run's raw manifest grows by exactly that file."""

from __future__ import annotations

import json
import shutil
import warnings

import mlflow
import pytest
import yaml
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from pipeline_run import TINY, snakemake

pytestmark = pytest.mark.slow


def _reduce_runs(workdir):
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["astroflow"], filter_string="tags.stage = 'reduce'",
                              order_by=["attributes.start_time ASC"], output_format="list")
    return [run for run in runs if run.info.status == "FINISHED"]


def _manifest(run):
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                               artifact_path="lineage/raw_manifest.json")
    with open(path) as fh:
        return json.load(fh)


def test_added_exposure_rereduces_only_its_field(tiny_run, tmp_path):
    # The tiny run's raw archive, now treated as a user's archive (no simulator).
    shutil.copytree(tiny_run / "data", tmp_path / "data")
    overlay = tmp_path / "archive.yaml"
    overlay.write_text(yaml.safe_dump({"simulate": {"enabled": False}}))
    target = "results/reduce/index.json"
    snakemake(tmp_path, target, "-c2", "--configfile", str(TINY), str(overlay))
    before = json.loads((tmp_path / target).read_text())

    # A second r-band epoch of F00 arrives (same pixels, its own exposure number).
    science = tmp_path / "data/raw/science/F00"
    with fits.open(science / "F00_r_e0.fits") as hdus, warnings.catch_warnings():
        # the simulator writes non-standard cards on purpose: keep them as they are
        warnings.simplefilter("ignore", VerifyWarning)
        hdus[0].header["EXPNUM"] = hdus[0].header["EXPNUM"] + 50
        hdus.writeto(science / "F00_r_e1.fits", output_verify="ignore")
    rerun = snakemake(tmp_path, target, "-c2", "--configfile", str(TINY), str(overlay))
    log = rerun.stdout + rerun.stderr
    after = json.loads((tmp_path / target).read_text())

    assert "wildcards: field=F00" in log
    assert "wildcards: field=F01" not in log, "an untouched field was reduced again"
    assert after["fields"]["F01"]["digest"] == before["fields"]["F01"]["digest"]
    assert after["fields"]["F00"]["digest"] != before["fields"]["F00"]["digest"]
    assert after["digest"] != before["digest"]

    first, second = _reduce_runs(tmp_path)[-2:]
    assert first.data.tags["dataset_digest"] == before["digest"]
    assert second.data.tags["dataset_digest"] == after["digest"]
    old = {f["path"] for f in _manifest(first)["files"]}
    new = {f["path"] for f in _manifest(second)["files"]}
    assert new - old == {"data/raw/science/F00/F00_r_e1.fits"}
    assert old <= new
