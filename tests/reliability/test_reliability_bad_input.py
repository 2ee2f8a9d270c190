"""Bad input: every kind is set aside with a named reason and the rest of the field completes.

One real `astroflow reduce field` run reduces the two good exposures of the simulated field
together with a corrupted copy of each kind (``bad_run``); each kind's test then checks its own
quarantine entry, while shared tests check that the good exposures' objects are all there, that
the log gives the count, and that `astroflow reduce index` records it in the MLflow reduce run.
Kinds whose outcome needs a run of its own (a band without calibration, a blank region, bad
labels, a bad config value) run their own, equally small, reductions.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import reliability_archive as ra
import zarr

from astroflow.config import ConfigError
from astroflow.reduce.stage import main as reduce_main

#: kind -> (corruption, hdu named in the entry, words the reason must contain)
KINDS = {
    "empty": (ra.empty_file, None, "empty file"),
    "truncated": (ra.truncated, None, "truncated"),
    "not_fits": (ra.not_fits, None, "unreadable FITS file"),
    "extension_missing": (ra.extension_missing, None, "no image extension number 2"),
    "wrong_shape": (ra.wrong_shape, "AMP2", "wrong shape"),
    "no_filter": (ra.drop_key("FILTER"), "PRIMARY", "missing header keyword FILTER"),
    "no_exptime": (ra.drop_key("EXPTIME"), "PRIMARY", "missing header keyword EXPTIME"),
    "no_date_obs": (ra.drop_key("DATE-OBS"), "PRIMARY", "missing header keyword DATE-OBS"),
    "no_wcs": (ra.no_wcs, "AMP1", "missing or invalid WCS"),
    "invalid_wcs": (ra.invalid_wcs, "AMP1", "invalid WCS"),
    "saturated": (ra.saturated, None, "fully saturated"),
    "wrong_bitpix": (ra.wrong_bitpix, None, "BITPIX"),
    "duplicate_expnum": (ra.duplicate, None, "duplicate"),
}
KNOWN_BUGS: dict[str, str] = {}


def _reduce(argv: list[str]) -> tuple[int, str]:
    """`astroflow reduce ...` in-process; returns (exit code, log text)."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        rc = reduce_main(argv)
    return rc, buffer.getvalue()


def _quarantine(out: Path) -> list[dict]:
    return json.loads((out / f"{ra.FIELD}.quarantine.json").read_text())


@pytest.fixture(scope="module")
def good_run(archive, masters, tmp_path_factory) -> SimpleNamespace:
    """The field reduced from its good exposures only: what every bad run must still give."""
    out = tmp_path_factory.mktemp("good_run")
    rc, log = _reduce(ra.field_argv(archive.cfg, archive.science, masters, archive.labels, out))
    assert rc == 0, log
    objects = pd.read_parquet(out / f"{ra.FIELD}.objects.parquet")
    assert len(objects) > 20 and _quarantine(out) == []
    return SimpleNamespace(out=out, objects=objects)


@pytest.fixture(scope="module")
def bad_run(archive, masters, tmp_path_factory) -> SimpleNamespace:
    """Good exposures plus one corrupted copy (of the g exposure) per kind, reduced at once,
    then gathered by `astroflow reduce index` into an MLflow run."""
    root = tmp_path_factory.mktemp("bad_run")
    (root / "bad").mkdir()
    source = archive.science_in("g")
    bad = {kind: fn(source, root / "bad" / f"{kind}.fits") for kind, (fn, *_) in KINDS.items()}
    out = root / "fields"
    argv = ra.field_argv(archive.cfg, [*archive.science, *bad.values()], masters,
                         archive.labels, out)
    rc, log = _reduce(argv)
    assert rc == 0, log
    cfg = ra.small_config(root)
    index_argv = ["index", "--config-json", json.dumps(cfg), "--field-dir", str(out),
                  "--fields", ra.FIELD, "--out-dir", str(root)]
    rc, index_log = _reduce(index_argv)
    assert rc == 0, index_log
    entries = {Path(e["path"]).name: e for e in _quarantine(out)}
    return SimpleNamespace(root=root, out=out, bad=bad, log=log, index_log=index_log,
                           entries=entries, cfg=cfg)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[k]))
        if k in KNOWN_BUGS
        else k
        for k in KINDS
    ],
)
def test_bad_exposure_is_quarantined_with_its_reason(bad_run, kind):
    _, hdu, words = KINDS[kind]
    path = bad_run.bad[kind]
    entry = bad_run.entries.get(Path(path).name)
    assert entry is not None, f"{path} not in the quarantine list"
    assert entry["path"] == path and entry["hdu"] == hdu
    assert words in entry["reason"], entry
    assert f"quarantined {path}" in bad_run.log  # the log names the file too


def test_good_exposures_still_give_every_object(bad_run, good_run, archive):
    objects = pd.read_parquet(bad_run.out / f"{ra.FIELD}.objects.parquet")
    expected = good_run.objects
    assert len(objects) == len(expected)
    np.testing.assert_array_equal(objects[["ra", "dec"]], expected[["ra", "dec"]])
    assert (objects["exposure_ids_r"] == expected["exposure_ids_r"]).all()
    good_g = expected["exposure_ids_g"].iloc[0]
    assert all(good_g in ids.split(",") for ids in objects["exposure_ids_g"] if ids)
    store = zarr.open_group(str(bad_run.out / f"{ra.FIELD}.zarr"), mode="r")
    assert store["images"].shape[0] == len(objects)
    assert np.isfinite(store["images"][:]).all()


def test_log_and_index_count_what_was_set_aside(bad_run):
    n = len(bad_run.entries)
    assert n >= len(KINDS) - len(KNOWN_BUGS)
    assert f"{n} file(s) quarantined" in bad_run.log
    index = json.loads((bad_run.root / "index.json").read_text())
    assert index["n_quarantined"] == n
    assert f"{n} file(s) quarantined" in bad_run.index_log


def test_quarantine_count_is_in_the_mlflow_reduce_run(bad_run):
    mlflow.set_tracking_uri(bad_run.cfg["tracking"]["uri"])
    runs = mlflow.search_runs(
        experiment_names=[bad_run.cfg["tracking"]["experiment"]],
        filter_string="tags.stage = 'reduce'",
        output_format="list",
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["n_quarantined"] == len(bad_run.entries)
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                artifact_path="quarantine.json",
                                                dst_path=str(bad_run.root / "download"))
    assert {Path(e["path"]).name for e in json.loads(Path(local).read_text())} == set(
        bad_run.entries
    )


def test_blank_pixels_are_masked_and_the_exposure_kept(archive, masters, good_run, tmp_path):
    """NaN (BLANK) pixels in a region: the exposure is used, the region masked, no NaN stored."""
    blank = ra.blank_region(archive.science_in("g"), tmp_path / "blank.fits")
    out = tmp_path / "out"
    argv = ra.field_argv(archive.cfg, [archive.science_in("r"), blank], masters,
                         archive.labels, out)
    rc, log = _reduce(argv)
    assert rc == 0, log
    assert _quarantine(out) == [] and "0 file(s) quarantined" in log
    objects = pd.read_parquet(out / f"{ra.FIELD}.objects.parquet")
    assert (objects["exposure_ids_g"] == str(ra.unique_expnum(tmp_path / "blank.fits"))).any()
    store = zarr.open_group(str(out / f"{ra.FIELD}.zarr"), mode="r")
    images, mask = store["images"][:], store["mask"][:]
    assert np.isfinite(images).all()
    # The blank block is detector x 20..109, y 60..159 (see ra.blank_region).
    inside = (objects["x"].between(24, 105) & objects["y"].between(64, 155)).to_numpy()
    assert inside.any(), "no object falls in the blank block: move it"
    centre = archive.cfg["reduce"]["cutout_size"] // 2
    g, r = 0, 1
    assert (mask[inside, g, centre, centre] & 1).all()  # the blank pixels are flagged bad
    # The clean band is untouched: its mask is the good run's (a saturated star of the r
    # exposure lies in the block, so r has bit 1 there of its own).
    good_mask = zarr.open_group(str(good_run.out / f"{ra.FIELD}.zarr"), mode="r")["mask"][:]
    np.testing.assert_array_equal(objects[["ra", "dec"]], good_run.objects[["ra", "dec"]])
    np.testing.assert_array_equal(mask[:, r], good_mask[:, r])


def test_band_without_calibration_is_set_aside(archive, tmp_path):
    """No flat for g: the g exposure is quarantined, r still gives every object."""
    calib = tmp_path / "calib"
    frames = [p for p in archive.calib if "flat_g" not in p]
    rc, log = _reduce(["calib", "--config-json", json.dumps(archive.cfg), "--frames", *frames,
                       "--out", str(calib)])
    assert rc == 0, log
    out = tmp_path / "out"
    rc, log = _reduce(ra.field_argv(archive.cfg, archive.science, calib, archive.labels, out))
    assert rc == 0, log
    entries = _quarantine(out)
    assert [e["path"] for e in entries] == [archive.science_in("g")]
    assert "no calibration for band 'g'" in entries[0]["reason"]
    assert "1 file(s) quarantined" in log
    objects = pd.read_parquet(out / f"{ra.FIELD}.objects.parquet")
    assert len(objects) > 20 and (objects["exposure_ids_g"] == "").all()


def _labels_with(archive, tmp_path, extra_rows: list[str]) -> str:
    path = tmp_path / "labels.ecsv"
    path.write_text(Path(archive.labels).read_text() + "\n".join(extra_rows) + "\n")
    return str(path)


def test_labels_outside_every_field_change_nothing(archive, masters, good_run, tmp_path):
    labels = _labels_with(archive, tmp_path, ["10.0 -60.0 galaxy", "300.5 45.0 star"])
    out = tmp_path / "out"
    rc, log = _reduce(ra.field_argv(archive.cfg, archive.science, masters, labels, out))
    assert rc == 0, log
    objects = pd.read_parquet(out / f"{ra.FIELD}.objects.parquet")
    assert (objects["label"].to_numpy() == good_run.objects["label"].to_numpy()).all()


def test_malformed_label_rows_are_set_aside(archive, masters, good_run, tmp_path):
    labels = _labels_with(archive, tmp_path, ["not-a-number 2.0 galaxy", "150.0 2.0"])
    out = tmp_path / "out"
    rc, log = _reduce(ra.field_argv(archive.cfg, archive.science, masters, labels, out))
    assert rc == 0, log
    (entry,) = _quarantine(out)
    assert entry["path"] == labels and "malformed" in entry["reason"]
    objects = pd.read_parquet(out / f"{ra.FIELD}.objects.parquet")
    assert (objects["label"].to_numpy() == good_run.objects["label"].to_numpy()).all()


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("reduce", "cutout_size", 0), ("reduce", "detect_sigma", -3.0), ("train", "max_epochs", 0)],
)
def test_config_out_of_range_is_rejected_before_anything_runs(
    archive, masters, tmp_path, section, key, value
):
    cfg = json.loads(json.dumps(archive.cfg))
    cfg[section][key] = value
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: "):
        reduce_main(ra.field_argv(cfg, archive.science, masters, archive.labels, out))
    assert not out.exists()
