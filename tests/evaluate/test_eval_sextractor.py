"""SExtractor CLASS_STAR / SPREAD_MODEL baselines: the pure parts against hand-computed cases,
and the real ``source-extractor`` + ``psfex`` on a small calibrated frame (skipped with the
reason where the programs are not installed; CI installs them)."""

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from sklearn.metrics import roc_auc_score

from astroflow.evaluate.inputs import match_truth
from astroflow.evaluate.sextractor import (
    DETECTION_KERNEL,
    SExtractorError,
    conv_text,
    filtered_threshold,
    find_tools,
    run_sextractor,
)
from astroflow.evaluate.sextractor_baselines import (
    SpreadModelBaseline,
    class_star_p_galaxy,
    match_catalog,
    score_sextractor,
)

TOOLS, WHY_NOT = find_tools()
needs_tools = pytest.mark.skipif(TOOLS is None, reason=f"SExtractor baseline: {WHY_NOT}")


def test_threshold_matches_seps_filtered_noise():
    # 3x3 kernel 1-2-1: sum 16, sum of squares 36 -> filtered noise is 6/16 of the pixel noise.
    assert filtered_threshold(3.0) == pytest.approx(3.0 * 6 / 16)
    assert filtered_threshold(2.0, np.ones((1, 1))) == pytest.approx(2.0)
    text = conv_text(DETECTION_KERNEL)
    assert text.splitlines() == ["CONV NORM", "1 2 1", "2 4 2", "1 2 1"]


def test_class_star_and_spread_model_scores():
    p = class_star_p_galaxy(np.array([1.0, 0.0, 0.25, np.nan, 1.2]), prior_galaxy=0.4)
    np.testing.assert_allclose(p, [0.0, 1.0, 0.75, 0.4, 0.0])

    rng = np.random.default_rng(3)
    label = rng.integers(0, 2, 4000)
    # Stars scatter around 0, galaxies around 0.01, with one error: equal widths put the
    # maximum-likelihood cut at 0.005, and the error carries no class information here.
    err = rng.uniform(0.0029, 0.0031, label.size)
    spread = np.where(label == 1, 0.01, 0.0) + rng.normal(0, 1, label.size) * err
    label_with_gaps = label.copy()
    label_with_gaps[:50] = -1  # unlabelled rows are ignored
    spread[50:60] = np.nan  # unmatched rows are ignored
    model = SpreadModelBaseline().fit(spread, err, label_with_gaps)
    # p = 0.5 where SPREAD_MODEL + k * SPREADERR_MODEL = cut: at this error, SPREAD_MODEL 0.005.
    assert model.cut - model.err_weight * 0.003 == pytest.approx(0.005, abs=5e-4)
    assert model.n_fit == label.size - 60
    assert model.prior_galaxy == pytest.approx(label[50:].mean())
    p = model.predict_proba(np.array([-0.01, 0.005, 0.02, np.nan]), np.full(4, 0.003))
    assert p[0] < 0.01 and p[1] == pytest.approx(0.5, abs=0.05) and p[2] > 0.99
    assert p[3] == model.prior_galaxy
    with pytest.raises(ValueError, match="both classes"):
        SpreadModelBaseline().fit(np.array([0.0, 0.1, 0.2]), np.ones(3), np.array([1, 1, 1]))


def test_spread_model_error_weight():
    """Faint objects (large errors) are mostly galaxies and scatter to negative SPREAD_MODEL:
    the fit learns to add the error, as the DES cut does."""
    rng = np.random.default_rng(4)
    err = np.exp(rng.uniform(np.log(0.0005), np.log(0.02), 6000))  # bright to faint
    galaxy_fraction = 0.3 + 0.6 * (np.log(err / 0.0005) / np.log(40))
    label = (rng.random(err.size) < galaxy_fraction).astype(int)
    spread = np.where(label == 1, 0.008, 0.0) + rng.normal(0, 1, label.size) * err
    model = SpreadModelBaseline().fit(spread, err, label)
    assert model.err_weight > 0.5


def test_match_catalog_radius():
    dec0 = 30.0
    objects = pd.DataFrame({"ra": [10.0, 10.0 + 2 / 3600 / np.cos(np.radians(dec0)), 10.1],
                            "dec": [dec0, dec0, dec0]})
    catalog = pd.DataFrame({"ra": [10.0 + 2.3 / 3600 / np.cos(np.radians(dec0)), 10.0],
                            "dec": [dec0, dec0 + 0.2 / 3600]})
    idx, sep = match_catalog(objects, catalog, 0.6)
    np.testing.assert_array_equal(idx, [1, 0, -1])
    np.testing.assert_allclose(sep[:2], [0.2, 0.3], atol=1e-3)
    idx, _ = match_catalog(objects, catalog.iloc[:0], 0.6)
    assert (idx == -1).all()


def test_skipped_with_a_reason(raw_field, monkeypatch, tmp_path):
    cfg, train = raw_field.cfg, raw_field.objects
    assert score_sextractor(cfg, train, train, [], raw_field.calib_dir).skipped == (
        "no raw exposures given (--exposures)")
    assert "--calib" in score_sextractor(cfg, train, train, raw_field.exposures, None).skipped
    assert "masters.json not found" in score_sextractor(
        cfg, train, train, raw_field.exposures, tmp_path).skipped
    (tmp_path / "masters.json").write_text("{}")
    if TOOLS is not None:
        res = score_sextractor(cfg, train, train, raw_field.exposures, tmp_path)
        assert res.skipped.startswith("cannot calibrate the detection exposures")
    monkeypatch.setenv("PATH", "/nonexistent")
    tools, reason = find_tools()
    assert tools is None and "source-extractor not found" in reason
    res = score_sextractor(cfg, train, train, raw_field.exposures, raw_field.calib_dir)
    assert res.skipped == reason and res.scores == {}


@needs_tools
def test_psfex_failure_names_the_frame(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (64, 64)).astype(np.float32)  # noise only: no star for PSFEx
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [32.5, 32.5]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    with pytest.raises(SExtractorError, match="raw/empty.fits"):
        run_sextractor(image, np.ones_like(image), wcs.to_header(), tmp_path, TOOLS,
                       seeing_fwhm_arcsec=1.0, pixel_scale_arcsec=0.2, zeropoint_mag=26.0,
                       gain_e_per_unit=300.0, frame_name="raw/empty.fits")


@needs_tools
def test_sextractor_baselines_on_a_calibrated_frame(raw_field, tmp_path):
    """Raw exposure -> reduce calibration -> PSFEx -> SExtractor -> matched scores: stars and
    galaxies of the simulator's truth table are told apart."""
    objects = raw_field.objects
    truth, _, _ = match_truth(objects, raw_field.truth, 0.6)
    west = objects["ra"] < objects["ra"].median()
    train = objects[west].reset_index(drop=True)
    test = objects[~west].reset_index(drop=True)
    res = score_sextractor(raw_field.cfg, train, test, raw_field.exposures, raw_field.calib_dir)
    assert res.skipped is None, res.info
    assert set(res.scores) == {"class_star", "spread_model"}
    for p in res.scores.values():
        assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))
    info = res.info
    assert info["fields"]["F00"]["exposure"].endswith("F00_r_e0.fits")
    assert info["fields"]["F00"]["seeing_fwhm_arcsec"] == pytest.approx(
        objects["psf_fwhm_arcsec"].median())
    # The detection threshold follows reduce's, so nearly every reduce object is matched.
    assert info["n_test_matched"] >= 0.8 * len(test)
    assert 0.0 < info["spread_model_cut"] < 0.02
    y = truth[~west.to_numpy()]
    known = y >= 0
    assert roc_auc_score(y[known], res.scores["class_star"][known]) > 0.7
    assert roc_auc_score(y[known], res.scores["spread_model"][known]) > 0.8


@needs_tools
def test_sextractor_catalog_columns(raw_field, tmp_path):
    """The wrapper on its own: CLASS_STAR in [0, 1] and sky positions from the frame's WCS."""
    from astroflow.evaluate.detection_frames import calibrated_detection_frames, weight_map

    ((field, exposure, reason),) = calibrated_detection_frames(
        raw_field.cfg, raw_field.exposures, raw_field.calib_dir, ["F00"])
    assert reason is None and field == "F00"
    weight = weight_map(exposure.variance, exposure.mask)
    assert (weight[exposure.mask != 0] == 0).all() and (weight[exposure.mask == 0] > 0).all()
    table = run_sextractor(exposure.image, weight, exposure.wcs.to_header(), tmp_path, TOOLS,
                           seeing_fwhm_arcsec=exposure.psf_fwhm_arcsec, pixel_scale_arcsec=0.2,
                           zeropoint_mag=exposure.zeropoint_mag,
                           gain_e_per_unit=exposure.exptime_s, frame_name=exposure.path)
    assert len(table) > 20
    assert np.all((table["CLASS_STAR"] >= 0) & (table["CLASS_STAR"] <= 1))
    assert np.isfinite(table["SPREAD_MODEL"]).all()
    assert "SEEING_FWHM" in (tmp_path / "pass2.sex").read_text()
    assert "SNR_WIN" in (tmp_path / "psfex.param").read_text()
    with fits.open(tmp_path / "psfex.psf") as hdul:
        assert hdul[1].header["PSFNAXIS"] == 3
