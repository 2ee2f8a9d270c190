"""Cutouts put an object's sky position on pixel (S//2, S//2) within the stated accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from reduce_archive import PIXEL_SCALE, make_cfg
from scipy import ndimage
from tests_support import centroid_offset

from astroflow.reduce.assemble import Layout
from astroflow.reduce.calibrate import calibrate_exposure
from astroflow.reduce.cutouts import (
    CENTRING_ACCURACY_PIX,
    SEPARABLE_TOLERANCE_PIX,
    BandAccumulator,
    cutout_coords,
    sample_cutouts,
    weigh,
)
from astroflow.reduce.masters import load_masters


def test_cutout_grid_is_centred_and_east_left(tmp_path):
    from reduce_archive import detector_wcs

    wcs = detector_wcs(0.37, -1.21)
    ra, dec = wcs.wcs_pix2world([[40.3, 60.8]], 0)[0]
    y, x = cutout_coords(wcs, np.array([ra]), np.array([dec]), 32, PIXEL_SCALE)
    assert x[0, 16, 16] == pytest.approx(40.3, abs=1e-6)
    assert y[0, 16, 16] == pytest.approx(60.8, abs=1e-6)
    assert x[0, 16, 17] - x[0, 16, 16] == pytest.approx(1.0, abs=1e-6)  # same orientation
    assert y[0, 17, 16] - y[0, 16, 16] == pytest.approx(1.0, abs=1e-6)


def test_point_sources_land_on_the_centre_pixel(archive, calib_dir, tmp_path):
    cfg = make_cfg(tmp_path)
    masters = load_masters(calib_dir, Layout.from_config(cfg))
    # bright stars only: for these the centroid's own photon noise is < 0.03 px
    stars = [o for o in archive.objects if o["star"] and min(o["flux"].values()) > 2000]
    assert len(stars) >= 2
    ra = np.array([o["ra"] for o in stars])
    dec = np.array([o["dec"] for o in stars])
    size = 32
    offsets = []
    for path in archive.science_paths:
        exposure = calibrate_exposure(path, cfg, masters)
        image, variance, mask, on = sample_cutouts(exposure, ra, dec, size, PIXEL_SCALE)
        assert on.all() and np.all(variance > 0)
        for stamp in image:
            offsets.append(centroid_offset(stamp, size // 2, radius=6))
    offsets = np.array(offsets)
    # injected at exact sky positions through each exposure's (dithered) WCS
    assert np.max(np.hypot(offsets[:, 0], offsets[:, 1])) < CENTRING_ACCURACY_PIX


def test_band_accumulator_inverse_variance_and_fallbacks():
    acc = BandAccumulator((1, 1, 3))
    on = np.array([[[True, True, False]]])
    for value, var, flags in ((1.0, 1.0, [0, 2, 0]), (4.0, 3.0, [0, 1, 0])):
        image, variance = np.full((1, 1, 3), value), np.full((1, 1, 3), var)
        acc.add(*weigh(image, variance, np.array([[flags]], np.uint8), on))
    image, variance, mask = acc.result()
    # pixel 0: both epochs good -> (1/1 * 1 + 1/3 * 4) / (1 + 1/3) = 1.75, var 0.75
    assert image[0, 0, 0] == pytest.approx(1.75) and variance[0, 0, 0] == pytest.approx(0.75)
    assert mask[0, 0, 0] == 0
    # pixel 1: flagged in both -> same combination, flags kept
    assert image[0, 0, 1] == pytest.approx(1.75) and mask[0, 0, 1] == 3
    # pixel 2: never on the detector -> 0, variance 0, off-detector bit
    assert (image[0, 0, 2], variance[0, 0, 2], mask[0, 0, 2]) == (0.0, 0.0, 4)


def _synthetic_exposure(wcs, image):
    from astroflow.reduce.calibrate import Exposure

    shape = image.shape
    return Exposure(
        path="synthetic",
        expnum="1",
        band="r",
        exptime_s=1.0,
        mjd=0.0,
        image=image.astype(np.float32),
        variance=np.ones(shape, np.float32),
        mask=np.zeros(shape, np.uint8),
        background_rms=1.0,
        wcs=wcs,
        psf_fwhm_pix=4.0,
        psf_fwhm_arcsec=0.8,
        psf_aperture_pix=4.0,
        aperture_correction=0.9,
        depth_mag_5sigma=25.0,
        zeropoint_mag=26.0,
        n_cosmic=0,
    )


@pytest.mark.parametrize("dither", [(0.0, 0.0), (0.37, -0.81), (3.5, 2.25)])
def test_noiseless_point_source_centring_accuracy(dither):
    """Resampling alone (no noise): sub-pixel positions are kept to < 0.02 px."""
    from reduce_archive import DET_SHAPE, _gauss, detector_wcs

    wcs = detector_wcs(*dither)
    rng = np.random.default_rng(5)
    # well separated (> 30 px) so each stamp holds one source, at random sub-pixel phases
    xs = np.array([30.0, 64.0, 98.0, 30.0, 64.0, 98.0]) + rng.uniform(0, 1, 6)
    ys = np.array([34.0, 34.0, 34.0, 90.0, 90.0, 90.0]) + rng.uniform(0, 1, 6)
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    image = sum(_gauss(DET_SHAPE, x, y, 1.8, 1.8, 0.0, 1000.0) for x, y in zip(xs, ys, strict=True))
    stamps, _, _, on = sample_cutouts(_synthetic_exposure(wcs, image), ra, dec, 24, PIXEL_SCALE)
    assert on.all()
    for stamp in stamps:
        dy, dx = centroid_offset(stamp, 12, radius=7)
        assert np.hypot(dy, dx) < 0.02
        assert stamp.sum() == pytest.approx(1000.0, rel=0.01)  # flux conserved (same scale)


def _rotated(wcs, degrees):
    rotated = wcs.deepcopy()
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rotated.wcs.cd = rotated.wcs.cd @ rotation
    return rotated


def test_separable_resampling_equals_pointwise_spline():
    """Where the axes do not mix, the per-object matrices give map_coordinates' cubic spline,
    linear variance and nearest mask (to the kernel cut-off)."""
    from reduce_archive import DET_SHAPE, _gauss, detector_wcs

    from astroflow.reduce.cutouts import _pointwise, _separable

    wcs = detector_wcs(0.37, -0.81)
    rng = np.random.default_rng(9)
    image = rng.normal(0.0, 1.0, DET_SHAPE) + _gauss(DET_SHAPE, 60.3, 50.7, 1.6, 1.6, 0.0, 900.0)
    exposure = _synthetic_exposure(wcs, image)
    exposure.variance = rng.uniform(0.5, 2.0, DET_SHAPE).astype(np.float32)
    exposure.mask = rng.integers(0, 2, DET_SHAPE).astype(np.uint8)
    xs, ys = np.array([60.3, 10.2, 100.9]), np.array([50.7, 5.8, 70.1])  # one off the edge
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    y, x = cutout_coords(wcs, ra, dec, 24, PIXEL_SCALE)
    assert np.abs(x - x[:, 12:13, :]).max() < 1e-4  # (almost) no mixing: separable
    coeffs = ndimage.spline_filter(exposure.image.astype(np.float64), order=3, mode="mirror")
    expected = _pointwise(exposure, coeffs, y, x)
    got = _separable(exposure, y[:, :, 12], x[:, 12, :])
    peak = np.abs(expected[0]).max()
    assert np.abs(got[0] - expected[0]).max() < 1e-4 * peak
    assert np.abs(got[1] - expected[1]).max() < 1e-4  # values ~1
    assert np.array_equal(got[2], expected[2])


@pytest.mark.parametrize("degrees", [0.03, 2.0])
def test_rotated_exposures_keep_the_centring(degrees):
    """A small rotation (separable path, mixing below tolerance) and a large one (point by
    point) both put point sources on the centre pixel."""
    from reduce_archive import DET_SHAPE, _gauss, detector_wcs

    wcs = _rotated(detector_wcs(0.4, 0.3), degrees)
    xs = np.array([30.2, 64.7, 98.1, 40.9])
    ys = np.array([34.4, 90.6, 60.3, 70.8])
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    y, x = cutout_coords(wcs, ra, dec, 24, PIXEL_SCALE)
    mixing = np.abs(x[:, -1, 12] - x[:, 0, 12]).max() / 2
    assert (mixing < SEPARABLE_TOLERANCE_PIX) == (degrees < 0.06)
    image = sum(
        _gauss(DET_SHAPE, x0, y0, 1.8, 1.8, 0.0, 1000.0) for x0, y0 in zip(xs, ys, strict=True)
    )
    stamps, _, _, on = sample_cutouts(_synthetic_exposure(wcs, image), ra, dec, 24, PIXEL_SCALE)
    assert on.all()
    for stamp in stamps:
        assert np.hypot(*centroid_offset(stamp, 12, radius=7)) < 0.02
