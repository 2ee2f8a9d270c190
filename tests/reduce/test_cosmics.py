"""The sharpness test finds cosmic-ray tracks and leaves stars alone, as L.A.Cosmic would."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astroflow.reduce.cosmics import (
    CosmicRayParams,
    clean_cosmic_rays,
    contrast_for_fwhm,
    find_cosmic_rays,
)

SHAPE = (512, 512)
SKY_E = 1200.0
READ_NOISE_E = 5.0


def _moffat_stamp(fwhm: float, dx: float, dy: float, size: int = 31, beta: float = 3.5):
    """A pixel-integrated Moffat profile of unit flux (5 x 5 sub-pixels per pixel)."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    sub = 5
    grid = (np.arange(size * sub) + 0.5) / sub - size // 2 - 0.5
    yy, xx = np.meshgrid(grid - dy, grid - dx, indexing="ij")
    profile = (1.0 + (xx**2 + yy**2) / alpha**2) ** (-beta)
    profile = profile.reshape(size, sub, size, sub).mean(axis=(1, 3))
    return profile / profile.sum()


def _frame(fwhm: float, seed: int = 3):
    """Sky + 120 stars (10^3 to 10^6.5 e-) + simulator-like tracks; (image, truth masks)."""
    rng = np.random.default_rng(seed)
    model = np.full(SHAPE, SKY_E)
    cores = np.zeros(SHAPE, bool)
    radius = int(np.ceil(fwhm))
    for _ in range(120):
        y0, x0 = rng.integers(20, SHAPE[0] - 20, 2)
        flux = 10 ** rng.uniform(3.0, 6.5)
        stamp = _moffat_stamp(fwhm, *rng.uniform(-0.5, 0.5, 2)) * flux
        model[y0 - 15 : y0 + 16, x0 - 15 : x0 + 16] += stamp
        cores[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1] = True
    image = rng.poisson(model) + rng.normal(0.0, READ_NOISE_E, SHAPE)
    hits = np.zeros(SHAPE, bool)
    for _ in range(80):  # tracks as the simulator draws them: a few pixels, any angle
        length = min(rng.exponential(4.0), 30.0)
        angle = rng.uniform(0.0, np.pi)
        s = np.linspace(0.0, length, max(1, int(2 * length) + 1))
        y0, x0 = rng.uniform(0, SHAPE[0]), rng.uniform(0, SHAPE[1])
        ys = np.clip(np.round(y0 + s * np.sin(angle)).astype(int), 0, SHAPE[0] - 1)
        xs = np.clip(np.round(x0 + s * np.cos(angle)).astype(int), 0, SHAPE[1] - 1)
        np.add.at(image, (ys, xs), rng.uniform(400.0, 1500.0))
        hits[ys, xs] = True
    image = image.astype(np.float32)
    variance = (np.maximum(image, 0.0) + READ_NOISE_E**2).astype(np.float32)
    return image, variance, model, hits, cores & ~hits


def _flagged(*args, **kwargs) -> np.ndarray:
    """find_cosmic_rays' coordinates as a boolean image."""
    found = np.zeros(SHAPE, bool)
    found[find_cosmic_rays(*args, **kwargs)] = True
    return found


def test_contrast_of_a_critically_sampled_gaussian():
    # FWHM 2 px: sides at exp(-ln 2 * ...) = 1/2, corners 1/4; (1 - 3/8) / (3/8) doubled
    assert contrast_for_fwhm(2.0) == pytest.approx(2 * (1 - 0.375) / 0.375, rel=1e-6)
    assert contrast_for_fwhm(1.5) > contrast_for_fwhm(2.0) > contrast_for_fwhm(4.0)


@pytest.mark.parametrize("fwhm", [2.5, 3.0, 4.5])
def test_tracks_are_found_and_stars_are_not(fwhm):
    """PSFs from just above ``min_psf_fwhm_pix`` (2) to the demo's ~4.5 px."""
    image, variance, model, hits, cores = _frame(fwhm)
    background = np.full(SHAPE, SKY_E, np.float32)
    bad = np.zeros(SHAPE, bool)
    found = _flagged(image, variance, background, bad, CosmicRayParams())
    on_sky = hits & (model - SKY_E < 5 * np.sqrt(SKY_E))
    assert found[on_sky].mean() >= 0.97
    assert found[hits].mean() >= 0.9  # hits on bright stars are harder, as for L.A.Cosmic
    # nothing away from the tracks: no star core (10^3 to 10^6.5 e-), at most a noise peak
    near_hits = ndimage.binary_dilation(hits, structure=np.ones((3, 3), bool))
    assert not (found & cores & ~near_hits).any()
    assert (found & ~near_hits).sum() <= 3


def test_bad_pixels_are_neither_flagged_nor_used():
    image, variance, _, hits, _ = _frame(3.0, seed=4)
    background = np.full(SHAPE, SKY_E, np.float32)
    bad = np.zeros(SHAPE, bool)
    bad[:, 100] = True
    image[:, 100] = 60000.0  # a hot column: masked, so it must not look like a track
    found = _flagged(image, variance, background, bad)
    assert not found[:, 100].any()
    assert found[hits & ~bad].mean() >= 0.9


def test_undersampled_stars_need_a_smaller_min_fwhm():
    """FWHM 1.3 px: the default (2 px) flags star cores; min_psf_fwhm_pix 1.2 does not, at the
    cost of the fainter or clumped hits (``method: lacosmic`` is the alternative)."""
    image, variance, _, hits, cores = _frame(1.3, seed=5)
    background = np.full(SHAPE, SKY_E, np.float32)
    bad = np.zeros(SHAPE, bool)
    default = _flagged(image, variance, background, bad)
    assert (default & cores).any()  # the documented limit: PSF narrower than min_psf_fwhm_pix
    tuned = _flagged(image, variance, background, bad, CosmicRayParams(min_psf_fwhm_pix=1.2))
    near_hits = ndimage.binary_dilation(hits, structure=np.ones((3, 3), bool))
    assert not (tuned & cores & ~near_hits).any()
    # the price: a hit must now be ~8x sharper than its neighbours; about 3 in 4 still are
    assert tuned[hits].mean() >= 0.7


def test_cleaning_restores_the_local_level():
    image, variance, model, hits, _ = _frame(3.0, seed=6)
    background = np.full(SHAPE, SKY_E, np.float32)
    bad = np.zeros(SHAPE, bool)
    hits = find_cosmic_rays(image, variance, background, bad)
    found = np.zeros(SHAPE, bool)
    found[hits] = True
    before = image.copy()
    clean_cosmic_rays(image, background, hits, bad)
    assert np.array_equal(image[~found], before[~found])
    residual = (image[found] - model[found]) / np.sqrt(model[found] + READ_NOISE_E**2)
    assert np.median(np.abs(residual)) < 2.0  # back to the sky/star level, not the hit's
