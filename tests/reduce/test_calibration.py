"""Calibration recovers the injected bias, dark, flat, gains, sky, PSF and cosmic rays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reduce_archive import (
    AMP_NX,
    BANDS,
    DET_SHAPE,
    GAINS,
    PIXEL_SCALE,
    PSF_SIGMA_PIX,
    SKY_E_PER_S,
    make_cfg,
)

from astroflow.io import read_frame
from astroflow.reduce.assemble import Layout, amp_to_electrons
from astroflow.reduce.calibrate import MASK_BAD, MASK_COSMIC, calibrate_exposure
from astroflow.reduce.masters import Masters, load_masters


@pytest.fixture(scope="module")
def masters(calib_dir, tmp_path_factory):
    return load_masters(calib_dir, Layout.from_config(make_cfg(tmp_path_factory.mktemp("c"))))


def test_master_bias_recovers_injected_pattern(archive, masters):
    diff = masters.bias_e - archive.bias_e
    # 3 frames x 4 e- read noise (+ ADU rounding): per-pixel scatter ~2.5 e-, no offset per amp
    assert np.std(diff) < 3.5
    for k in range(2):
        assert abs(np.mean(diff[:, k * AMP_NX : (k + 1) * AMP_NX])) < 0.3


def test_master_dark_recovers_rate_and_hot_pixels(archive, masters):
    hot = archive.dark_e_per_s > 1
    assert masters.dark_e_per_s is not None
    np.testing.assert_allclose(masters.dark_e_per_s[hot], archive.dark_e_per_s[hot], rtol=0.05)
    assert abs(np.median(masters.dark_e_per_s[~hot]) - 0.05) < 0.01


@pytest.mark.parametrize("band", BANDS)
def test_master_flat_recovers_pixel_response_across_amps(archive, masters, band):
    ratio = masters.flats[band] / archive.flats[band]
    assert np.std(ratio) < 0.008  # 3 flats of 20000 e-: ~0.45 % per pixel
    # both amps on the same scale: the per-amp gains were applied
    assert abs(np.median(ratio[:, :AMP_NX]) - np.median(ratio[:, AMP_NX:])) < 0.002


def test_amp_gain_converts_adu_to_electrons(archive, tmp_path):
    cfg = make_cfg(tmp_path)
    layout = Layout.from_config(cfg)
    bias_path = archive.calib_paths[0]
    frame = read_frame(bias_path)
    for k, amp in enumerate(frame.amps):
        e = amp_to_electrons(amp, bias_path, layout)
        assert e.gain_e_per_adu == GAINS[k]
        truth = archive.bias_e[:, k * AMP_NX : (k + 1) * AMP_NX]
        # overscan removed, pattern in electrons recovered within read noise
        assert abs(np.mean(e.image_e - truth)) < 0.5
        assert np.std(e.image_e - truth) < 6


@pytest.mark.parametrize("cosmic_method", ["sharpness", "lacosmic"])
def test_science_exposure_sky_psf_depth_and_cosmics(archive, masters, tmp_path, cosmic_method):
    cfg = make_cfg(tmp_path)
    cfg["reduce"]["cosmic_rays"]["method"] = cosmic_method
    for path in archive.science_paths:
        exp = calibrate_exposure(path, cfg, masters)
        band = exp.band
        # the background is subtracted; its noise matches the injected sky + read noise
        expected_rms = np.sqrt(SKY_E_PER_S[band] * 30 + 16 + 0.05 * 30) / 30
        assert exp.background_rms == pytest.approx(expected_rms, rel=0.1)
        # far from every object the subtracted sky is zero (flat, gains, bias, dark all right)
        xy = exp.wcs.wcs_world2pix([[o["ra"], o["dec"]] for o in archive.objects], 0)
        yy, xx = np.mgrid[: DET_SHAPE[0], : DET_SHAPE[1]]
        dist = np.min(np.hypot(xx[..., None] - xy[:, 0], yy[..., None] - xy[:, 1]), axis=-1)
        blank = (dist > 12) & (exp.mask == 0)
        assert abs(np.mean(exp.image[blank])) < 0.05 * expected_rms
        for k in range(2):  # and in each amplifier separately
            amp = blank & (xx // AMP_NX == k)
            assert abs(np.mean(exp.image[amp])) < 0.1 * expected_rms
        fwhm_true = 2.3548 * PSF_SIGMA_PIX[band] * PIXEL_SCALE
        assert exp.psf_fwhm_arcsec == pytest.approx(fwhm_true, rel=0.05)
        assert 0.85 < exp.aperture_correction < 1.0
        assert 20 < exp.depth_mag_5sigma < 24
        # the 4 injected cosmic-ray hits are flagged (and nothing much else)
        assert 4 <= np.count_nonzero(exp.mask & MASK_COSMIC) <= 12
        # hot pixels of the dark are flagged bad
        assert np.all(exp.mask[archive.dark_e_per_s > 1] & MASK_BAD)
        assert exp.image.shape == DET_SHAPE


def test_calib_cli_writes_masters_and_provenance(archive, tmp_path):
    from astroflow.reduce.stage import main

    cfg = make_cfg(tmp_path)
    out = tmp_path / "calib"
    rc = main(
        [
            "calib",
            "--config-json",
            json.dumps(cfg),
            "--frames",
            *archive.calib_paths,
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    record = json.loads((out / "masters.json").read_text())
    assert sorted(p.name for p in out.glob("*.fits")) == [
        "master_bias.fits",
        "master_dark.fits",
        "master_flat_g.fits",
        "master_flat_r.fits",
    ]
    assert len(record["bias"]["inputs"]) == 3 and len(record["dark"]["inputs"]) == 2
    assert set(record["flat"]) == {"g", "r"}
    assert all(len(sha) == 64 for sha in record["flat"]["g"]["inputs"].values())
    assert record["quarantine"] == []


def test_flat_and_bad_flags_unusable_flat_pixels_and_hot_dark_pixels():
    """Flat values outside [0.5, 2] or not finite are bad and divided by 1; a dark-rate outlier
    is bad too; every other pixel keeps its flat value and is good."""
    flat = np.ones((4, 8), np.float32)
    flat[0] = [np.nan, np.inf, -np.inf, 0.49, 0.5, 2.0, 2.01, 1.25]
    dark = np.full((4, 8), 0.01, np.float32) + np.linspace(0, 1e-3, 32).reshape(4, 8)
    dark[3, 3] = 5.0
    masters = Masters(np.zeros((4, 8), np.float32), dark, {"r": flat})
    safe, bad = masters.flat_and_bad("r")
    expected_bad = np.zeros((4, 8), bool)
    expected_bad[0, [0, 1, 2, 3, 6]] = True
    expected_bad[3, 3] = True
    np.testing.assert_array_equal(bad, expected_bad)
    assert safe.dtype == np.float32
    np.testing.assert_array_equal(safe[0], [1, 1, 1, 1, 0.5, 2.0, 1, 1.25])
    np.testing.assert_array_equal(safe[1:], 1.0)
