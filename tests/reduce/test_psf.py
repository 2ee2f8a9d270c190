"""The PSF FWHM is read from the stars' curve of growth, right for Gaussian and Moffat PSFs."""

from __future__ import annotations

import numpy as np
import pytest

from astroflow.reduce.calibrate import measure_psf

SHAPE = (600, 600)
NOISE = 2.0


def _stamp(profile: str, fwhm: float, dx: float, dy: float, size: int = 41, beta: float = 3.5):
    """A pixel-integrated (5 x 5 sub-pixels) PSF of unit flux."""
    sub = 5
    grid = (np.arange(size * sub) + 0.5) / sub - size // 2 - 0.5
    yy, xx = np.meshgrid(grid - dy, grid - dx, indexing="ij")
    r2 = xx**2 + yy**2
    if profile == "gaussian":
        image = np.exp(-0.5 * r2 / (fwhm / 2.3548) ** 2)
    else:
        alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        image = (1.0 + r2 / alpha**2) ** (-beta)
    image = image.reshape(size, sub, size, sub).mean(axis=(1, 3))
    return image / image.sum()


@pytest.mark.parametrize(
    ("profile", "beta", "fwhm", "tolerance"),
    [
        ("gaussian", None, 3.0, 0.05),
        ("moffat", 3.5, 4.5, 0.05),  # the demo's PSF
        ("moffat", 2.5, 4.0, 0.05),
        # 3 px: pixels flatten the core and the r80/r50 ratio, which reads beta a little high
        ("moffat", 4.5, 3.0, 0.08),
    ],
)
def test_fwhm_of_stars_among_galaxies(profile, beta, fwhm, tolerance):
    rng = np.random.default_rng(7)
    image = np.zeros(SHAPE)
    for k in range(64):  # stars on a jittered grid, 70 px apart: isolated
        y0, x0 = 40 + 70 * (k // 8), 40 + 70 * (k % 8)
        flux = 10 ** rng.uniform(3.5, 5.0)
        stamp = _stamp(profile, fwhm, *rng.uniform(-0.5, 0.5, 2), beta=beta or 3.5)
        image[y0 - 20 : y0 + 21, x0 - 20 : x0 + 21] += flux * stamp
    for k in range(40):  # galaxies: 2-3 times wider, between the stars
        y0, x0 = 75 + 70 * (k // 8), 75 + 70 * (k % 8)
        if y0 > SHAPE[0] - 30 or x0 > SHAPE[1] - 30:
            continue
        stamp = _stamp("gaussian", fwhm * rng.uniform(2.0, 3.0), 0.0, 0.0)
        image[y0 - 20 : y0 + 21, x0 - 20 : x0 + 21] += 10 ** rng.uniform(3.5, 4.5) * stamp
    image += rng.normal(0.0, NOISE, SHAPE)
    measured, ap_corr = measure_psf(image.astype(np.float32), NOISE, np.zeros(SHAPE, np.uint8), "x")
    assert measured == pytest.approx(fwhm, rel=tolerance)
    assert 0.3 < ap_corr < 1.0
