"""Calibration as the archive allows: missing masters and masters refused by their checks.

Real FITS files written with astropy: an archive with no calibration frames at all (reduced
uncorrected when ``reduce.allow_uncorrected`` allows it, else stopped with one line naming what
is missing and the key), and masters that fail their quality checks refused with a reason
naming their frames. Sections and overscan: ``test_sections.py``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reduce_archive import BANDS, DET_SHAPE, field_args, make_cfg, write_raw

from astroflow.io.fits_read import FrameError
from astroflow.reduce.assemble import Layout
from astroflow.reduce.calibrate import calibrate_exposure
from astroflow.reduce.masters import build_masters, load_masters
from astroflow.reduce.stage import main

# --- no calibration frames -------------------------------------------------------------------


def test_no_calibration_frames_with_allow_reduces_uncorrected_and_says_so(
    archive, tmp_path, capsys, caplog
):
    """An archive without bias, dark or flat frames (infrared, pre-reduced): with
    ``allow_uncorrected: true`` the masters record holds no master, and the field is reduced
    with the overscan alone, the log naming every correction it goes without."""
    cfg = make_cfg(tmp_path, allow_uncorrected=True, exposure_cache=False)
    calib = tmp_path / "calib"
    with caplog.at_level(logging.WARNING):
        record = build_masters([], cfg, calib)
    assert "no master bias: exposures are reduced without bias subtraction" in caplog.text
    assert "no usable dark frames: dark correction will be skipped" in caplog.text
    assert "no usable flat for band r: its exposures will be reduced without" in caplog.text
    assert (record["bias"], record["dark"], record["flat"]) == (None, None, {})
    assert record["quarantine"] == [] and record["refused"] == []
    assert json.loads((calib / "masters.json").read_text())["bias"] is None
    assert not list(calib.glob("*.fits"))
    masters = load_masters(calib, Layout.from_config(cfg))
    assert masters.missing("g") == ["bias", "dark", "flat"] and masters.inputs == {}

    out = tmp_path / "fields"
    assert main(field_args(cfg, archive, archive.science_paths, calib, out, threads=1)) == 0
    err = capsys.readouterr().err
    assert (
        "field F00: no master bias, no master dark, no master flat for band(s) g, r: those "
        "corrections are not applied (reduce.allow_uncorrected)" in err
    )
    assert json.loads((out / "F00.quarantine.json").read_text()) == []
    table = pd.read_parquet(out / "F00.objects.parquet")
    assert len(table) == 16  # every injected object, through the flat's few per cent and the bias


@pytest.mark.parametrize(
    ("keep", "allow", "message"),
    [
        (
            "none",
            False,
            "no usable bias frame among 0 calibration frames (instrument profile 'afcam'; see "
            "`astroflow inspect`): set reduce.allow_uncorrected: true (or list bias in it) to "
            "reduce without bias subtraction",
        ),
        (
            "none",
            ["flat"],
            "no usable bias or dark frame among 0 calibration frames (instrument profile "
            "'afcam'; see `astroflow inspect`): set reduce.allow_uncorrected: true (or list bias "
            "and dark in it) to reduce without bias subtraction and dark correction",
        ),
        (
            "no darks",
            [],
            "no usable dark frame among 9 calibration frames (instrument profile 'afcam'; see "
            "`astroflow inspect`): set reduce.allow_uncorrected: true (or list dark in it) to "
            "reduce without dark correction",
        ),
    ],
)
def test_missing_calibration_not_allowed_stops_with_one_line(
    archive, tmp_path, keep, allow, message
):
    """Without the key, what is missing stops `reduce calib` before any master is written."""
    cfg = make_cfg(tmp_path, allow_uncorrected=allow)
    frames = [] if keep == "none" else [p for p in archive.calib_paths if "dark_" not in p]
    with pytest.raises(ValueError) as caught:
        build_masters(frames, cfg, tmp_path / "calib")
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "calib" / "masters.json").exists()


def test_calib_cli_error_is_one_line_without_a_traceback(archive, tmp_path, capsys):
    flats = [p for p in archive.calib_paths if "flat_" in p]
    cfg = make_cfg(tmp_path)
    argv = ["calib", "--config-json", json.dumps(cfg), "--frames", *flats, "--out",
            str(tmp_path / "calib")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "reduce calib: no usable bias frame among 6 calibration frames" in err
    assert "set reduce.allow_uncorrected: true (or list bias in it)" in err


def test_masters_without_a_bias_are_applied_as_far_as_they_go(archive, tmp_path, caplog):
    """Darks and flats but no bias frames, allowed: the dark is made without a bias (it then
    holds what the overscan left of the bias, which the test camera keeps small) and the
    science exposures are dark-subtracted and flat-fielded."""
    cfg = make_cfg(tmp_path, allow_uncorrected=["bias", "dark"])
    frames = [p for p in archive.calib_paths if "bias_" not in p]
    with caplog.at_level(logging.WARNING):
        record = build_masters(frames, cfg, tmp_path / "calib")
    assert record["bias"] is None and record["dark"] is not None
    assert sorted(record["flat"]) == BANDS
    assert "no master bias: exposures are reduced without bias subtraction" in caplog.text
    masters = load_masters(tmp_path / "calib", Layout.from_config(cfg))
    exposure = calibrate_exposure(archive.science_paths[0], cfg, masters)
    assert exposure.band == "g" and np.isfinite(exposure.psf_fwhm_pix)


# --- quality checks of the masters -------------------------------------------------------------


def _flat_frames(root: Path, band: str, lamp_e, rng, n: int = 3) -> list[str]:
    """``n`` flats of ``band`` through the test camera, ``lamp_e`` electrons per pixel."""
    paths = []
    for i in range(n):
        e = rng.poisson(np.broadcast_to(lamp_e, DET_SHAPE)).astype(float)
        primary = {"IMAGETYP": "flat", "FILTER": band, "EXPTIME": 5.0, "EXPNUM": 900 + i}
        paths.append(write_raw(root / f"bad_flat_{band}_{i}.fits", primary, e, rng))
    return paths


def test_saturated_flat_is_refused_naming_its_frames(archive, tmp_path, caplog):
    """g flats with 77 % of their pixels above SATURATE: the master flat g is refused (its
    frames quarantined, each named in the reason) and the g exposures follow the missing-flat
    rule: quarantined, or reduced without flat-field correction when allowed."""
    rng = np.random.default_rng(11)
    lamp = np.full(DET_SHAPE, 20000.0)
    lamp[:, :99] = 150000.0  # 99 of 128 columns (77.3 %): 75000 ADU and more, clipped at 65535
    bad = _flat_frames(tmp_path / "raw", "g", lamp, rng)
    frames = [p for p in archive.calib_paths if "flat_g" not in p] + bad
    cfg = make_cfg(tmp_path)
    with caplog.at_level(logging.WARNING):
        record = build_masters(frames, cfg, tmp_path / "calib")
    assert sorted(record["flat"]) == ["r"]
    (refused,) = record["refused"]
    assert refused["master"] == "flat g" and refused["frames"] == sorted(bad)
    reason = refused["reason"]
    assert reason.startswith("master flat g refused: 77.")
    assert "% of its pixels saturated in its frames" in reason
    assert "reduce.master_checks.max_saturated_fraction 0.01" in reason
    assert reason.endswith("frames: " + ", ".join(sorted(bad)))
    assert refused["quality"]["saturated_fraction"] == pytest.approx(0.77, abs=0.01)
    assert record["quarantine"] == [{"path": p, "hdu": None, "reason": reason} for p in sorted(bad)]
    assert reason in caplog.text
    assert "no usable flat for band g: its exposures will be quarantined" in caplog.text

    layout = Layout.from_config(cfg)
    masters = load_masters(tmp_path / "calib", layout)
    g_exposure = next(p for p in archive.science_paths if "_g_" in p)
    with pytest.raises(FrameError, match="no calibration for band 'g' .no master flat; refused"):
        calibrate_exposure(g_exposure, cfg, masters)
    allowed = make_cfg(tmp_path, allow_uncorrected=["dark", "flat"])
    assert calibrate_exposure(g_exposure, allowed, masters).band == "g"


def test_faint_flat_and_light_struck_bias_are_refused(archive, tmp_path):
    """Level checks: a flat of 300 e- is refused (flat r then missing); a bias frame with
    light on it (2000 e- after the overscan) is refused, and with no other bias the run stops
    with the refusal in the one-line message."""
    rng = np.random.default_rng(12)
    faint = _flat_frames(tmp_path / "raw", "r", 300.0, rng)
    frames = [p for p in archive.calib_paths if "flat_r" not in p] + faint
    record = build_masters(frames, make_cfg(tmp_path), tmp_path / "calib")
    assert sorted(record["flat"]) == ["g"]
    reason = record["refused"][0]["reason"]
    assert re.search(r"level \d+ e- \(< reduce.master_checks.min_flat_level_e 1000.0\)", reason)

    lit = write_raw(
        tmp_path / "raw" / "lit_bias.fits",
        {"IMAGETYP": "bias", "EXPTIME": 0.0, "EXPNUM": 950},
        archive.bias_e + rng.poisson(2000.0, DET_SHAPE),
        rng,
    )
    with pytest.raises(ValueError) as caught:
        build_masters([lit], make_cfg(tmp_path), tmp_path / "calib2")
    text = str(caught.value)
    assert text.startswith("no usable bias frame among 1 calibration frames")
    assert re.search(r"master bias refused: level (19|20)\d\d\.\d e- after overscan", text)
    assert "reduce.master_checks.max_bias_level_e 500.0" in text


def test_masters_record_their_quality_figures(archive, tmp_path):
    """The test archive's masters pass every check, and masters.json records the figures."""
    record = build_masters(archive.calib_paths, make_cfg(tmp_path), tmp_path / "calib")
    assert record["refused"] == []
    dark = record["dark"]["quality"]
    assert dark["level_e_per_s"] == pytest.approx(0.05, abs=0.01)
    assert dark["hot_fraction"] == pytest.approx(5 / DET_SHAPE[0] / DET_SHAPE[1], abs=1e-4)
    for entry in [record["bias"], record["dark"], *record["flat"].values()]:
        quality = entry["quality"]
        assert quality["saturated_fraction"] == 0.0
        assert quality["noise"] >= quality["expected_noise"]  # nothing clipped


def test_demo_survey_masters_pass_with_margin(tmp_path):
    """The simulator's calibration frames (the tiny survey: the demo camera on a smaller
    detector, 2 bias, 1 dark and 2 flats per band) pass every default limit with a factor of
    2 to spare, so the checks refuse broken frames, not the demo's."""
    from astroflow.config import load_config
    from astroflow.reduce.masters import MasterChecks
    from astroflow.simulate.stage import simulate_calib

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "config" / "config.yaml", repo / "config" / "tiny.yaml")
    paths = simulate_calib(cfg, tmp_path / "raw")
    record = build_masters(paths, cfg, tmp_path / "calib")
    limits = MasterChecks.from_config(cfg["reduce"])
    assert record["refused"] == [] and sorted(record["flat"]) == sorted(cfg["instrument"]["bands"])
    masters = [record["bias"], record["dark"], *record["flat"].values()]
    for quality in (m["quality"] for m in masters):
        assert quality["saturated_fraction"] <= limits.max_saturated_fraction / 2
        assert quality["noise"] >= 2 * limits.min_noise_ratio * quality["expected_noise"]
    assert abs(record["bias"]["quality"]["level_e"]) <= limits.max_bias_level_e / 2
    assert record["dark"]["quality"]["level_e_per_s"] <= limits.max_dark_e_per_s / 2
    assert record["dark"]["quality"]["hot_fraction"] <= limits.max_bad_fraction / 2
    for band in record["flat"].values():
        quality = band["quality"]
        assert quality["level_e"] >= 2 * limits.min_flat_level_e
        assert quality["noise"] <= limits.max_flat_noise / 2
        assert quality["unusable_fraction"] <= limits.max_bad_fraction / 2
