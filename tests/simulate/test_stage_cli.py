"""The command line: bad values fail clearly, and SExtractor reads what we write."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from sim_helpers import tiny_config

from astroflow.simulate import layout, stage
from astroflow.simulate.camera import Detector


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"simulate": {"star_fraction": 1.5}}, "simulate.star_fraction"),
        ({"simulate": {"seeing_fwhm_arcsec": {"mean": -1.0, "sigma": 0.1}}},
         "simulate.seeing_fwhm_arcsec.mean"),
        ({"instrument": {"bands": ["g", "H"], "zeropoint_mag": {"g": 26.0, "H": 25.0}},
          "simulate": {"sky_mag_arcsec2": {"g": 22.0, "H": 20.0}},
          "reduce": {"detection_band": "g"}}, "instrument.bands"),
    ],
)
def test_bad_value_names_the_key(tmp_path, capsys, change, key):
    cfg = tiny_config()
    for section, values in change.items():
        cfg[section].update(values)
    rc = stage.main(["calib", "--config-json", json.dumps(cfg), "--raw-dir", str(tmp_path)])
    assert rc == 2
    assert key in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.fits"))


def test_unknown_field_is_refused(tmp_path, capsys):
    cfg = tiny_config()
    rc = stage.main(["field", "--config-json", json.dumps(cfg), "--field", "F07", "--raw-dir",
                     str(tmp_path), "--truth-out", str(tmp_path / "t.ecsv")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "F07" in err and "simulate.n_fields" in err


def test_top_level_cli_dispatches(tmp_path):
    cfg = tiny_config(n_bias=1, n_dark=0, n_flat=1)
    cfg["instrument"]["bands"] = ["r"]
    proc = subprocess.run(
        ["astroflow", "simulate", "calib", "--config-json", json.dumps(cfg), "--raw-dir",
         str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "calib 2/2" in proc.stderr
    assert sorted(map(str, tmp_path.rglob("*.fits"))) == sorted(layout.calib_files(cfg, tmp_path))


def test_bleeding_conserves_charge_along_the_column():
    rng = np.random.default_rng(1)
    e = rng.uniform(100, 200, (60, 20))
    e[28:32, 7] = 5e4
    before = e.sum()
    n = Detector.bleed(e, full_well_e=15000.0)
    assert n == 1
    assert e.max() <= 15000.0
    assert e.sum() == pytest.approx(before)
    assert np.sum(e[:, 7] == 15000.0) > 4
    assert np.all(e[:, 6] < 300) and np.all(e[:, 8] < 300)


def test_saturated_pixels_clip_at_saturate():
    cfg = tiny_config()
    det = Detector(cfg)
    electrons = np.full((det.ny, det.nx), 100.0)
    electrons[10:20, 5] = 1e6
    amps = det.read_out(electrons, np.random.default_rng(0))
    assert amps[0][10:20, 5].tolist() == [det.amps[0].saturate_adu] * 10
    assert amps[0].max() == det.amps[0].saturate_adu


@pytest.mark.skipif(shutil.which("source-extractor") is None,
                    reason="source-extractor binary not installed (apt install source-extractor)")
def test_source_extractor_reads_a_raw_exposure(tiny_archive, tmp_path):
    cfg = tiny_archive["cfg"]
    path = layout.science_files(cfg, tiny_archive["raw_dir"], "F00")[1]
    nnw = "/usr/share/source-extractor/default.nnw"
    if not os.path.exists(nnw):
        pytest.skip(f"source-extractor's neural network file {nnw} is missing")
    (tmp_path / "sim.param").write_text(
        "NUMBER\nALPHA_J2000\nDELTA_J2000\nFLUX_AUTO\nFLAGS\nCLASS_STAR\n")
    (tmp_path / "sim.sex").write_text("")
    catalog = tmp_path / "sim.cat"
    proc = subprocess.run(
        ["source-extractor", f"{path}[1]", "-c", str(tmp_path / "sim.sex"),
         "-PARAMETERS_NAME", str(tmp_path / "sim.param"), "-FILTER", "N", "-STARNNW_NAME", nnw,
         "-CATALOG_TYPE", "ASCII_HEAD", "-CATALOG_NAME", str(catalog),
         "-PIXEL_SCALE", str(cfg["instrument"]["pixel_scale_arcsec"]), "-SEEING_FWHM", "0.9",
         "-DETECT_THRESH", "5", "-VERBOSE_TYPE", "QUIET"],
        capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = np.array([[float(v) for v in line.split()] for line in catalog.read_text().splitlines()
                     if not line.startswith("#")])
    assert len(rows) > 10
    # The brightest unflagged detections sit on truth objects: the amp WCS is right.
    clean = rows[rows[:, 4] == 0]
    best = clean[np.argsort(clean[:, 3])[::-1][:5]]
    truth = tiny_archive["truth"]
    _, sep, _ = SkyCoord(best[:, 1], best[:, 2], unit="deg").match_to_catalog_sky(
        SkyCoord(truth["ra"], truth["dec"]))
    assert np.all(sep.arcsec < 0.5), sep.arcsec
