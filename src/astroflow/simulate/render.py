"""What one exposure sees: its observing conditions, its WCS, and the sky drawn with GalSim.

Each exposure gets its own seeing (``simulate.seeing_fwhm_arcsec``, clipped at 0.5 arcsec), a
Moffat PSF (beta = 3.5) with a small ellipticity that varies across the focal plane, a dither
of up to 4 arcsec, a tiny rotation and an airmass. Objects are drawn one by one on small
postage stamps (sized so that less than 0.05 e- per pixel is left outside) and added into the
detector image, which is in electrons for a flat field of 1 (flat, dark and noise are the
camera's business, see :mod:`astroflow.simulate.camera`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from astroflow.simulate import layout, sky
from astroflow.simulate.seeding import EXPOSURE, rng_for

log = logging.getLogger(__name__)

PSF_BETA = 3.5
#: Largest dither offset from the field centre, per axis [arcsec].
DITHER_ARCSEC = 4.0
#: PSF shear at the detector corner from the focal-plane pattern (added to a per-exposure one).
PSF_SHEAR_AT_EDGE = 0.02
#: Surface brightness left outside a stamp [e-/pixel]; sets the stamp size.
STAMP_THRESHOLD_E = 0.05
MAX_STAMP_HALF_PX = 150
#: Extent of a galaxy's stamp in half-light radii, per Sersic index.
_HLR_EXTENT = {1.0: 4.0, 1.5: 5.0, 2.0: 6.0, 2.5: 7.0, 3.0: 8.0, 4.0: 10.0}


def plan_exposure(cfg: Mapping, exposure: Mapping) -> dict:
    """Observing conditions of one science exposure (deterministic from the seed).

    ``exposure`` is an entry of :func:`astroflow.simulate.layout.science_exposures`. Returns
    the plan as plain numbers (it goes into the truth table's metadata).
    """
    sim, inst = cfg["simulate"], cfg["instrument"]
    rng = rng_for(cfg, EXPOSURE, exposure["field_index"], exposure["band_index"], exposure["epoch"])
    seeing = max(0.5, float(rng.normal(sim["seeing_fwhm_arcsec"]["mean"],
                                       sim["seeing_fwhm_arcsec"]["sigma"])))
    dither = rng.uniform(-DITHER_ARCSEC, DITHER_ARCSEC, 2)
    psf_g = rng.normal(0.0, 0.01, 2)
    band = exposure["band"]
    sky_e = (
        10 ** (-0.4 * (sim["sky_mag_arcsec2"][band] - inst["zeropoint_mag"][band]))
        * inst["pixel_scale_arcsec"] ** 2
        * sim["exptime_s"]
    )
    return {
        "file": exposure["name"],
        "expnum": int(exposure["expnum"]),
        "band": band,
        "epoch": int(exposure["epoch"]),
        "seeing_fwhm_arcsec": round(seeing, 5),
        "psf_beta": PSF_BETA,
        "psf_g1": round(float(psf_g[0]), 5),
        "psf_g2": round(float(psf_g[1]), 5),
        "dither_xi_arcsec": round(float(dither[0]), 4),
        "dither_eta_arcsec": round(float(dither[1]), 4),
        "rotation_deg": round(float(rng.normal(0.0, 0.02)), 5),
        "airmass": round(float(rng.uniform(1.03, 1.5)), 4),
        "sky_e_per_pixel": round(float(sky_e), 4),
        "sky_tilt": [round(float(v), 5) for v in rng.normal(0.0, 0.01, 2)],
        "noise_seed": int(rng.integers(0, 2**62)),
    }


def detector_wcs(cfg: Mapping, field_idx: int, plan: Mapping) -> dict:
    """TAN WCS keywords of the assembled detector (FITS 1-based CRPIX at its centre)."""
    inst = cfg["instrument"]
    ny, nx_amp = inst["amp_shape"]
    nx = inst["n_amps"] * nx_amp
    ra0, dec0 = layout.field_center_deg(field_idx)
    ra, dec = sky.tangent_to_sky(
        np.array([plan["dither_xi_arcsec"]]), np.array([plan["dither_eta_arcsec"]]), ra0, dec0
    )
    s = inst["pixel_scale_arcsec"] / 3600.0
    th = np.radians(plan["rotation_deg"])
    return {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "CRVAL1": round(float(ra[0]), 9),
        "CRVAL2": round(float(dec[0]), 9),
        "CRPIX1": nx / 2 + 0.5,
        "CRPIX2": ny / 2 + 0.5,
        "CD1_1": -s * np.cos(th),
        "CD1_2": s * np.sin(th),
        "CD2_1": s * np.sin(th),
        "CD2_2": s * np.cos(th),
        "RADESYS": "ICRS",
        "EQUINOX": 2000.0,
    }


def sky_to_pixel(wcs_keys: Mapping, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, ...]:
    """0-based detector pixel coordinates ``(x, y)`` of sky positions."""
    from astropy.io import fits
    from astropy.wcs import WCS

    header = fits.Header()
    for key, value in wcs_keys.items():
        header[key] = value
    x, y = WCS(header).all_world2pix(ra, dec, 0)
    return x, y


def _moffat_half_size(flux_e: float, fwhm_px: float) -> int:
    alpha = fwhm_px / (2.0 * np.sqrt(2 ** (1 / PSF_BETA) - 1))
    peak = flux_e * (PSF_BETA - 1) / (np.pi * alpha**2)
    radius = alpha * np.sqrt(max((peak / STAMP_THRESHOLD_E) ** (1 / PSF_BETA) - 1, 0.0))
    return int(np.clip(np.ceil(radius), 8, MAX_STAMP_HALF_PX))


def render_sky(cfg: Mapping, pop: Mapping, plan: Mapping, band_index: int, wcs_keys: Mapping):
    """Expected electrons ``(ny, nx)`` of sky plus all objects, for a flat field of 1.

    Returns the image and the number of objects drawn (those whose stamps touch the detector).
    """
    import galsim

    inst, sim = cfg["instrument"], cfg["simulate"]
    band = inst["bands"][band_index]
    ny, nx_amp = inst["amp_shape"]
    nx = inst["n_amps"] * nx_amp
    scale = inst["pixel_scale_arcsec"]
    yy, xx = np.mgrid[0:ny, 0:nx]
    tilt = plan["sky_tilt"]
    image = plan["sky_e_per_pixel"] * (
        1.0 + tilt[0] * (xx / nx - 0.5) + tilt[1] * (yy / ny - 0.5)
    )

    x, y = sky_to_pixel(wcs_keys, pop["ra"], pop["dec"])
    flux = 10 ** (-0.4 * (pop["mag"][:, band_index] - inst["zeropoint_mag"][band])) * sim[
        "exptime_s"
    ]
    fwhm_px = plan["seeing_fwhm_arcsec"] / scale
    half_field = max(nx, ny) / 2.0
    psf0 = galsim.Moffat(beta=PSF_BETA, fwhm=plan["seeing_fwhm_arcsec"])
    n_drawn = 0
    for i in range(len(x)):
        half = _moffat_half_size(flux[i], fwhm_px)
        star = bool(pop["is_star"][i])
        if not star:
            hlr_px = pop["r_half_arcsec"][i] / scale
            extent = _HLR_EXTENT[float(pop["sersic_n"][i])] * hlr_px
            half = int(np.clip(np.ceil(np.hypot(half, extent)), 8, MAX_STAMP_HALF_PX))
        ix, iy = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        if ix + half < 0 or iy + half < 0 or ix - half >= nx or iy - half >= ny:
            continue
        u, v = (x[i] - nx / 2) / half_field, (y[i] - ny / 2) / half_field
        psf = psf0.shear(
            g1=plan["psf_g1"] + PSF_SHEAR_AT_EDGE * (u * u - v * v) / 2,
            g2=plan["psf_g2"] + PSF_SHEAR_AT_EDGE * u * v,
        )
        if star:
            obj = psf.withFlux(float(flux[i]))
        else:
            n = float(pop["sersic_n"][i])
            hlr = float(pop["r_half_arcsec"][i])
            gal = galsim.Sersic(
                n=n, half_light_radius=hlr, flux=float(flux[i]), trunc=8 * hlr if n >= 3 else 0.0
            )
            # Position angle east of north -> angle from +x with east to the left (-x).
            beta = (90.0 + float(pop["position_angle_deg"][i]) + plan["rotation_deg"])
            gal = gal.shear(g=float(pop["ellipticity"][i]), beta=beta * galsim.degrees)
            obj = galsim.Convolve(gal, psf)
        stamp = galsim.ImageF(2 * half + 1, 2 * half + 1, scale=scale)
        obj.drawImage(image=stamp, offset=(x[i] - ix, y[i] - iy))
        y0, x0 = iy - half, ix - half
        ys = slice(max(y0, 0), min(y0 + 2 * half + 1, ny))
        xs = slice(max(x0, 0), min(x0 + 2 * half + 1, nx))
        image[ys, xs] += stamp.array[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        n_drawn += 1
        if n_drawn % 500 == 0:
            log.info("%s: drew %d objects", plan["file"], n_drawn)
    return image, n_drawn
