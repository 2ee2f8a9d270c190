"""Detect objects on the detection-band exposure and measure photometry in every exposure.

Detection runs sep on the background-subtracted detection exposure with its per-pixel noise.
Shapes (a, b, theta, Kron radius) come from the detection frame and are reused in the other
exposures at each object's sky position (exposures share pixel scale and orientation, only
dithered), so every band is measured through the same aperture.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import sep

from astroflow.reduce.calibrate import MASK_BAD, Exposure

#: Kron factor and minimum circular radius [pixels] of the AUTO aperture (SExtractor's 2.5, 3.5).
KRON_FACTOR = 2.5
MIN_AUTO_RADIUS_PIX = 3.5


@dataclass
class Catalog:
    """Detections in the detection frame (0-based pixel coordinates)."""

    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    kron_radius: np.ndarray
    flux_radius_pix: np.ndarray

    def __len__(self) -> int:
        return int(self.x.size)

    def columns(self) -> list[np.ndarray]:
        """The columns in field order: ``Catalog(*catalog.columns())`` rebuilds it (how the
        product cache and the catalog board write catalogs as records)."""
        return [np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)]

    @classmethod
    def empty(cls) -> Catalog:
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, z, z, z)


def detect_objects(exposure: Exposure, detect_sigma: float, min_area: int) -> Catalog:
    """sep detection above ``detect_sigma`` times each pixel's noise, with Kron and r50 radii."""
    sep.set_extract_pixstack(2_000_000)
    sep.set_sub_object_limit(4096)
    err = np.sqrt(np.maximum(exposure.variance, 0)).astype(np.float32)
    bad = (exposure.mask & MASK_BAD) != 0
    objects = sep.extract(exposure.image, detect_sigma, err=err, mask=bad, minarea=min_area)
    keep = (objects["a"] > 0) & (objects["b"] > 0) & np.isfinite(objects["theta"])
    objects = objects[keep]
    if len(objects) == 0:
        return Catalog.empty()
    x, y = objects["x"].astype(np.float64), objects["y"].astype(np.float64)
    a, b, theta = (objects[k].astype(np.float64) for k in ("a", "b", "theta"))
    # sep reports theta in float32, which can round just past +-pi/2; its aperture functions
    # reject such angles ("invalid aperture parameters") on large frames.
    theta = np.clip(theta, -np.pi / 2, np.pi / 2)
    kron, _ = sep.kron_radius(exposure.image, x, y, a, b, theta, 6.0, mask=bad)
    kron = np.where(np.isfinite(kron) & (kron > 0), kron, 0.0)
    flux_auto, _, _ = _auto_flux(exposure.image, None, bad, x, y, a, b, theta, kron)
    rmax = np.clip(6.0 * a, 2.0 * exposure.psf_fwhm_pix, 60.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r50, _ = sep.flux_radius(
            exposure.image,
            x,
            y,
            rmax,
            0.5,
            normflux=np.where(flux_auto > 0, flux_auto, 1.0),
            mask=bad,
            subpix=5,
        )
    ra, dec = exposure.wcs.wcs_pix2world(x, y, 0)
    return Catalog(
        x,
        y,
        np.asarray(ra, float),
        np.asarray(dec, float),
        a,
        b,
        theta,
        kron,
        np.asarray(r50, float),
    )


def _auto_flux(image, variance, bad, x, y, a, b, theta, kron):
    """Kron-aperture flux; objects whose Kron ellipse is smaller than the minimum get a circle."""
    radius = KRON_FACTOR * kron
    use_circle = radius * np.sqrt(a * b) < MIN_AUTO_RADIUS_PIX
    flux = np.zeros(x.size)
    var = np.zeros(x.size)
    flags = np.zeros(x.size, np.int64)
    kwargs = {"mask": bad, "subpix": 1}
    if variance is not None:
        kwargs["var"] = variance
    if np.any(~use_circle):
        s = ~use_circle
        f, e, fl = sep.sum_ellipse(image, x[s], y[s], a[s], b[s], theta[s], radius[s], **kwargs)
        flux[s], var[s], flags[s] = f, np.asarray(e) ** 2, fl
    if np.any(use_circle):
        s = use_circle
        f, e, fl = sep.sum_circle(image, x[s], y[s], MIN_AUTO_RADIUS_PIX, **kwargs)
        flux[s], var[s], flags[s] = f, np.asarray(e) ** 2, fl
    return flux, var, flags


@dataclass
class Photometry:
    """Fluxes [e-/s] of every catalog object in one exposure."""

    flux_auto: np.ndarray
    var_auto: np.ndarray
    flux_psf: np.ndarray
    var_psf: np.ndarray
    covered: np.ndarray


def measure(exposure: Exposure, catalog: Catalog) -> Photometry:
    """AUTO and aperture-corrected PSF-aperture fluxes at the catalog's sky positions.

    Objects whose centre falls off this exposure get ``covered = False`` (weight 0 later).
    """
    n = len(catalog)
    if n == 0:
        z = np.zeros(0)
        return Photometry(z, z, z, z, np.zeros(0, bool))
    x, y = exposure.wcs.wcs_world2pix(catalog.ra, catalog.dec, 0)
    ny, nx = exposure.image.shape
    covered = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    xs, ys = np.where(covered, x, nx / 2), np.where(covered, y, ny / 2)
    bad = (exposure.mask & MASK_BAD) != 0
    flux_auto, var_auto, _ = _auto_flux(
        exposure.image,
        exposure.variance,
        bad,
        xs,
        ys,
        catalog.a,
        catalog.b,
        catalog.theta,
        catalog.kron_radius,
    )
    f, e, _ = sep.sum_circle(
        exposure.image, xs, ys, exposure.psf_aperture_pix, var=exposure.variance, mask=bad, subpix=5
    )
    ac = exposure.aperture_correction
    return Photometry(flux_auto, var_auto, np.asarray(f) / ac, (np.asarray(e) / ac) ** 2, covered)


def flux_to_mag(
    flux_e_per_s: np.ndarray, err_e_per_s: np.ndarray, zeropoint_mag: float
) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitude and error; NaN where the flux is not positive (undetected in that band)."""
    flux = np.asarray(flux_e_per_s, float)
    positive = flux > 0
    safe = np.where(positive, flux, 1.0)
    mag = np.where(positive, zeropoint_mag - 2.5 * np.log10(safe), np.nan)
    magerr = np.where(positive, 2.5 / np.log(10) * np.asarray(err_e_per_s, float) / safe, np.nan)
    return mag, magerr
