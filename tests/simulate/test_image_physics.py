"""What the pixels say, after an exact bias/dark/flat correction: seeing and zero points."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table
from scipy.optimize import least_squares
from sim_helpers import calibrate_exactly, detector_pixels

from astroflow.simulate import camera, layout

APERTURE_PX = 15
CUTOUT_HALF = 12


def _good_stars(cfg, truth_field, band, plan, amp_header, det):
    """Bright, unsaturated, isolated stars fully on good pixels, with their detector xy."""
    zp = cfg["instrument"]["zeropoint_mag"][band]
    exptime = cfg["simulate"]["exptime_s"]
    flux = 10 ** (-0.4 * (np.asarray(truth_field[f"mag_{band}"]) - zp)) * exptime
    x, y = detector_pixels(amp_header, truth_field["ra"], truth_field["dec"])
    fwhm_px = plan["seeing_fwhm_arcsec"] / cfg["instrument"]["pixel_scale_arcsec"]
    alpha = fwhm_px / (2 * np.sqrt(2 ** (1 / plan["psf_beta"]) - 1))
    peak = flux * (plan["psf_beta"] - 1) / (np.pi * alpha**2)
    margin = APERTURE_PX + 2
    out = []
    for i in np.flatnonzero(np.asarray(truth_field["class"]) == "star"):
        if not (2e4 < flux[i] and peak[i] < 0.4 * camera.FULL_WELL_E):
            continue
        if not (margin < x[i] < det.nx - margin and margin < y[i] < det.ny - margin):
            continue
        if any(abs(c - x[i]) < margin for c in (*det.dead_columns, det.hot_column)):
            continue
        d = np.hypot(x - x[i], y - y[i])
        near = (d < margin + 6) & (d > 0)
        if flux[near].sum() > 3e-3 * flux[i]:
            continue
        out.append((i, x[i], y[i], flux[i]))
    return out


def _exposures(starry_archive):
    cfg = starry_archive["cfg"]
    truth = starry_archive["truth"]
    for field in layout.field_names(cfg):
        field_truth = truth[truth["field"] == field]
        plans = {p["file"]: p for p in Table.read(
            starry_archive["catalog_dir"] / "fields" / f"{field}.truth.ecsv").meta["exposures"]}
        paths = layout.science_files(cfg, starry_archive["raw_dir"], field)
        for exp, path in zip(layout.science_exposures(cfg, field), paths, strict=True):
            yield exp, plans[exp["name"]], field_truth, path


def _moffat_fwhm(stamp, beta):
    ny, nx = stamp.shape
    yy, xx = np.mgrid[0:ny, 0:nx]

    def resid(p):
        amp, x0, y0, alpha, bg = p
        model = amp * (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2) ** -beta + bg
        return (model - stamp).ravel()

    p0 = [stamp.max(), nx / 2, ny / 2, 4.0, np.median(stamp)]
    fit = least_squares(resid, p0, bounds=([0, 0, 0, 0.5, -np.inf], [np.inf, nx, ny, 30, np.inf]))
    return 2 * abs(fit.x[3]) * np.sqrt(2 ** (1 / beta) - 1)


def test_stellar_fwhm_matches_the_exposure_seeing(starry_archive):
    cfg = starry_archive["cfg"]
    det = camera.Detector(cfg)
    scale = cfg["instrument"]["pixel_scale_arcsec"]
    checked = 0
    for exp, plan, field_truth, path in _exposures(starry_archive):
        image, _, amp_headers = calibrate_exactly(cfg, path)
        stars = _good_stars(cfg, field_truth, exp["band"], plan, amp_headers[0], det)
        fwhms = []
        for _, x, y, _ in stars:
            ix, iy = int(round(x)), int(round(y))
            stamp = image[iy - CUTOUT_HALF : iy + CUTOUT_HALF + 1,
                          ix - CUTOUT_HALF : ix + CUTOUT_HALF + 1]
            fwhms.append(_moffat_fwhm(stamp, plan["psf_beta"]) * scale)
        assert len(fwhms) >= 5, (path, len(fwhms))
        measured = float(np.median(fwhms))
        assert measured == pytest.approx(plan["seeing_fwhm_arcsec"], rel=0.05), (path, fwhms)
        checked += 1
    assert checked == len(cfg["instrument"]["bands"]), "too few exposures with usable stars"


def test_zero_points_recovered_within_one_percent(starry_archive):
    cfg = starry_archive["cfg"]
    det = camera.Detector(cfg)
    yy, xx = np.mgrid[0 : det.ny, 0 : det.nx]
    measured: dict[str, float] = {}
    expected: dict[str, float] = {}
    for exp, plan, field_truth, path in _exposures(starry_archive):
        band = exp["band"]
        image, _, amp_headers = calibrate_exactly(cfg, path)
        tilt = plan["sky_tilt"]
        image -= plan["sky_e_per_pixel"] * (
            1 + tilt[0] * (xx / det.nx - 0.5) + tilt[1] * (yy / det.ny - 0.5))
        # aperture correction for the known Moffat PSF
        beta = plan["psf_beta"]
        alpha = plan["seeing_fwhm_arcsec"] / cfg["instrument"]["pixel_scale_arcsec"] / (
            2 * np.sqrt(2 ** (1 / beta) - 1))
        enclosed = 1 - (1 + APERTURE_PX**2 / alpha**2) ** (1 - beta)
        for _, x, y, flux in _good_stars(cfg, field_truth, band, plan, amp_headers[0], det):
            inside = (xx - x) ** 2 + (yy - y) ** 2 <= APERTURE_PX**2
            measured[band] = measured.get(band, 0.0) + image[inside].sum() / enclosed
            expected[band] = expected.get(band, 0.0) + flux
    assert set(measured) == set(cfg["instrument"]["bands"])
    for band in measured:
        zp = cfg["instrument"]["zeropoint_mag"][band]
        zp_measured = zp + 2.5 * np.log10(measured[band] / expected[band])
        assert abs(zp_measured - zp) < 0.01, (band, zp_measured, zp)


def test_truth_metadata_lists_every_exposure(starry_archive):
    truth_meta = starry_archive["truth"].meta
    cfg = starry_archive["cfg"]
    assert len(truth_meta["exposures"]) == cfg["simulate"]["n_fields"] * len(
        cfg["instrument"]["bands"]) * cfg["simulate"]["n_epochs"]
    json.dumps(truth_meta)  # plain types only
