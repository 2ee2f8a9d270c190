"""Every quarantine reason is reachable; the rest of the field still reduces; strict fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from reduce_archive import (
    DET_SHAPE,
    detector_wcs,
    field_args,
    make_cfg,
    science_primary,
    write_raw,
)

from astroflow.reduce.stage import main

REASONS = {
    "empty.fits": "empty file",
    "garbage.fits": "unreadable FITS file",
    "truncated.fits": "truncated",
    "nofilter.fits": "missing header keyword FILTER",
    "noexptime.fits": "missing header keyword EXPTIME",
    "nodate.fits": "missing header keyword DATE-OBS",
    "nowcs.fits": "missing or invalid WCS",
    "wrongshape.fits": "wrong shape",
    "iband.fits": "no calibration for band 'i'",
    "saturated.fits": "fully saturated",
}


def _bad_files(archive, root):
    rng = np.random.default_rng(9)
    root.mkdir()
    good = archive.science_paths[0]
    sky = np.full(DET_SHAPE, 1500.0)
    paths = {}
    (root / "empty.fits").write_bytes(b"")
    (root / "garbage.fits").write_bytes(b"not FITS " * 500)
    raw = Path(good).read_bytes()
    (root / "truncated.fits").write_bytes(raw[: len(raw) // 2])
    for name, drop in (("nofilter", "FILTER"), ("noexptime", "EXPTIME"), ("nodate", "DATE-OBS")):
        primary = science_primary("F00", "r", 2000 + len(paths))
        del primary[drop]
        paths[name] = write_raw(root / f"{name}.fits", primary, sky, rng, wcs=detector_wcs())
    write_raw(root / "nowcs.fits", science_primary("F00", "r", 2010), sky, rng, wcs=None)
    write_raw(root / "iband.fits", science_primary("F00", "i", 2011), sky, rng, wcs=detector_wcs())
    write_raw(
        root / "saturated.fits",
        science_primary("F00", "g", 2012),
        sky * 1000,
        rng,
        wcs=detector_wcs(),
    )
    with fits.open(good) as hdul:
        hdul[2] = fits.ImageHDU(hdul[2].data[:, :40], header=hdul[2].header)
        hdul.writeto(root / "wrongshape.fits")
    return sorted(str(p) for p in root.iterdir())


@pytest.fixture()
def cfg_gri(tmp_path):
    """Bands g, r, i: the archive has no i flat, so an i exposure lacks calibration."""
    cfg = make_cfg(tmp_path)
    cfg["instrument"]["bands"] = ["g", "r", "i"]
    cfg["instrument"]["zeropoint_mag"]["i"] = 25.9
    return cfg


def test_each_reason_is_quarantined_and_the_field_continues(
    archive, calib_dir, cfg_gri, tmp_path, capsys
):
    bad = _bad_files(archive, tmp_path / "bad")
    out = tmp_path / "out"
    assert main(field_args(cfg_gri, archive, [*archive.science_paths, *bad], calib_dir, out)) == 0
    log_text = capsys.readouterr().err
    entries = json.loads((out / "F00.quarantine.json").read_text())
    by_file = {e["path"].rsplit("/", 1)[-1]: e for e in entries}
    assert set(by_file) == set(REASONS)
    for name, reason in REASONS.items():
        assert reason in by_file[name]["reason"], (name, by_file[name])
        assert set(by_file[name]) == {"path", "hdu", "reason"}
    assert by_file["wrongshape.fits"]["hdu"] == "AMP2"
    assert f"{len(REASONS)} file(s) quarantined" in log_text
    # only the good exposures were calibrated: one set aside is not counted as calibrated
    n_good = len(archive.science_paths)
    assert f"field F00: {n_good} exposure(s) calibrated" in log_text, log_text[-2000:]
    import pandas as pd

    table = pd.read_parquet(out / "F00.objects.parquet")
    assert len(table) == 16 and table["exposure_ids_g"].iloc[0] == "1000"


#: Reasons only the pixels or the masters can give: inspect and the plan cannot know them
#: (inspect lists a band without a flat under "missing" instead).
PIXEL_REASONS = {"iband.fits", "saturated.fits"}
#: The words both readers' reasons share, file by file.
SHARED_WORDS = {"empty.fits": "empty", "truncated.fits": "truncated",
                "nofilter.fits": "FILTER", "noexptime.fits": "EXPTIME",
                "nodate.fits": "DATE-OBS", "nowcs.fits": "WCS", "wrongshape.fits": "shape"}


def test_inspect_and_the_plan_say_what_reduce_does(archive, calib_dir, cfg_gri, tmp_path):
    """One ingestion path: on a mixed corpus, every file the plan (and inspect) sets aside is
    one reduce quarantines, for the same reason, and every file it keeps reduce keeps, except
    the reasons that need the pixels or the masters."""
    import shutil

    from astroflow.io.archive import scan_archive
    from astroflow.io.inspect import inspect_archive
    from astroflow.io.plan import plan_archive

    corpus = tmp_path / "corpus"
    _bad_files(archive, corpus)
    for path in archive.science_paths:
        shutil.copy(path, corpus)
    files = sorted(str(p) for p in corpus.iterdir())
    out = tmp_path / "out"
    assert main(field_args(cfg_gri, archive, files, calib_dir, out)) == 0
    reduced = {Path(e["path"]).name: e["reason"]
               for e in json.loads((out / "F00.quarantine.json").read_text())}
    planned = {Path(e["path"]).name: e["reason"]
               for e in plan_archive(scan_archive(corpus), cfg_gri["instrument"]).unusable}
    inspected = {Path(f.path).name: f.problem
                 for f in inspect_archive(corpus, cfg_gri).files if f.problem}
    assert planned == inspected
    assert set(planned) == set(reduced) - PIXEL_REASONS
    for name, word in SHARED_WORDS.items():
        assert word in planned[name] and word in reduced[name], (name, planned[name],
                                                                 reduced[name])
    assert "not a FITS file" in planned["garbage.fits"]


def test_strict_fails_naming_the_file(archive, calib_dir, tmp_path, capsys):
    cfg = make_cfg(tmp_path, strict=True)
    bad = tmp_path / "nofilter.fits"
    primary = science_primary("F00", "r", 3000)
    del primary["FILTER"]
    write_raw(
        bad, primary, np.full(DET_SHAPE, 1500.0), np.random.default_rng(1), wcs=detector_wcs()
    )
    out = tmp_path / "out"
    rc = main(field_args(cfg, archive, [*archive.science_paths, str(bad)], calib_dir, out))
    log_text = capsys.readouterr().err
    assert rc == 1
    assert str(bad) in log_text and "missing header keyword FILTER" in log_text
    assert not (out / "F00.zarr").exists()


def test_bad_calibration_frame_is_quarantined_in_masters(archive, tmp_path):
    cfg = make_cfg(tmp_path)
    empty = tmp_path / "empty_bias.fits"
    empty.write_bytes(b"")
    out = tmp_path / "calib"
    assert (
        main(
            [
                "calib",
                "--config-json",
                json.dumps(cfg),
                "--frames",
                *archive.calib_paths,
                str(empty),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / "masters.json").read_text())
    assert record["quarantine"] == [
        {"path": str(empty), "hdu": None, "reason": "empty file (0 bytes)"}
    ]


@pytest.mark.parametrize("threads", [1, 2])
def test_unusable_detection_exposure_is_set_aside_and_the_next_one_detects(
    archive, calib_dir, tmp_path, threads
):
    """The first r-band exposure (lowest EXPNUM) has no WCS: it is quarantined once, objects
    are detected on the next r exposure, and the field equals one reduced without it."""
    bad = tmp_path / "nowcs_first.fits"
    rng = np.random.default_rng(2)
    write_raw(bad, science_primary("F00", "r", 1), np.full(DET_SHAPE, 1500.0), rng, wcs=None)
    cfg = make_cfg(tmp_path)
    runs = {}
    for name, extra in (("with", [str(bad)]), ("without", [])):
        out = tmp_path / name
        exposures = [*archive.science_paths, *extra]
        assert main(field_args(cfg, archive, exposures, calib_dir, out, threads)) == 0
        runs[name] = out
    entries = json.loads((runs["with"] / "F00.quarantine.json").read_text())
    assert [e["path"] for e in entries] == [str(bad)]
    assert "missing or invalid WCS" in entries[0]["reason"]
    digest = [
        json.loads((runs[name] / "F00.zarr" / "zarr.json").read_text())["attributes"]["digest"]
        for name in ("with", "without")
    ]
    assert digest[0] == digest[1]  # the images and the whole object table


def test_a_master_changed_after_calib_fails_the_field(archive, calib_dir, tmp_path, capsys):
    """Loading trusts masters.json's sha256 of each master; the field job checks it beside its
    work and fails, naming the file, before writing anything with a wrong provenance."""
    import shutil

    calib = tmp_path / "calib"
    shutil.copytree(calib_dir, calib)
    bias = calib / "master_bias.fits"
    fits.writeto(bias, fits.getdata(bias) + 1.0, overwrite=True)
    out = tmp_path / "out"
    rc = main(field_args(make_cfg(tmp_path), archive, archive.science_paths, calib, out, 1))
    assert rc == 1
    log_text = capsys.readouterr().err
    assert f"{bias}: its sha256 differs from the one masters.json recorded" in log_text
    assert not (out / "F00.zarr").exists()


def test_files_written_by_others_are_named_never_a_traceback(archive, calib_dir, tmp_path):
    """astropy's own odd FITS files (invalid/ included) in an own archive: the plan names
    each with a reason; handed to a field job anyway, each is quarantined, the field reduces."""
    import shutil

    import astropy

    from astroflow.io.archive import scan_archive
    from astroflow.io.plan import plan_archive

    source = Path(astropy.__file__).parent / "io" / "fits" / "tests" / "data"
    corpus = tmp_path / "astropy"
    shutil.copytree(source, corpus)
    others = sorted(str(p) for p in corpus.rglob("*") if p.is_file())
    cfg = make_cfg(tmp_path)
    plan = plan_archive(scan_archive(corpus), cfg["instrument"])
    assert not plan.calib and not plan.science
    assert sorted(e["path"] for e in plan.unusable) == others
    assert all(e["reason"] for e in plan.unusable)
    out = tmp_path / "out"
    assert main(field_args(cfg, archive, [*archive.science_paths, *others], calib_dir, out)) == 0
    entries = json.loads((out / "F00.quarantine.json").read_text())
    assert sorted(e["path"] for e in entries) == others
    assert len(pd.read_parquet(out / "F00.objects.parquet")) == 16
