"""The classical morphology baseline ("moments"): what an astronomer measures without a fit.

On the detection-band cutout of each galaxy, two textbook measurements, neither corrected for
the PSF (the PSF makes small galaxies rounder and less concentrated, which is exactly the
handicap a learned model can overcome):

ellipticity
    Adaptive second moments (the elliptical Gaussian weight matched to the object, Bernstein &
    Jarvis 2002; GalSim's HSM ``FindAdaptiveMom``): the moment ellipse's axis ratio ``q`` gives
    ``|g| = (1 - q) / (1 + q)``. For a noiseless elliptical profile without PSF the adaptive
    moments recover ``q`` exactly.
Sersic index
    The SDSS concentration ``C = r90 / r50`` (Strateva et al. 2001) of the Petrosian flux, in
    elliptical apertures of the moments ellipse's axis ratio and orientation (so an inclined
    disc is not mistaken for a concentrated profile; radii are circularised, ``sqrt(a b)``):
    curve of growth about the moments centroid, Petrosian radius where the
    mean surface brightness in the annulus ``[0.8 r, 1.25 r]`` falls to 0.2 of the mean within
    ``r``, Petrosian flux within ``2 r_P`` (at most the largest aperture inside the cutout),
    ``r50`` and ``r90`` enclosing half and 90 % of it. ``C`` is inverted through the same
    quantity computed analytically for a Sersic profile (Graham et al. 2005), tabulated on
    ``SERSIC_GRID``; concentrations outside the table's range clip to its ends.

A cutout on which adaptive moments do not converge, or with no positive flux, is unmeasured:
its values are NaN (the metrics count those as outliers, see
:mod:`astroflow.evaluate.morphology_metrics`).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammainc, gammaincinv

log = logging.getLogger(__name__)

#: Sersic indices of the concentration table (its range bounds the baseline's n).
SERSIC_GRID = np.geomspace(0.5, 8.0, 97)
#: SDSS Petrosian ratio and annulus, and the Petrosian aperture in Petrosian radii.
PETROSIAN_ETA = 0.2
PETROSIAN_ANNULUS = (0.8, 1.25)
PETROSIAN_APERTURE = 2.0
#: Radius step of the measured curve of growth [pixels] and sub-pixel sampling per axis.
RADIUS_STEP_PIX = 0.25
SUBPIX = 5


def _sersic_b(n: float) -> float:
    """``b_n`` with half the light inside the effective radius: ``P(2n, b_n) = 1/2``."""
    return float(gammaincinv(2.0 * n, 0.5))


def sersic_enclosed(n: float, x: np.ndarray) -> np.ndarray:
    """Light fraction of a Sersic profile within ``x`` effective radii (circular)."""
    return gammainc(2.0 * n, _sersic_b(n) * np.asarray(x, dtype=np.float64) ** (1.0 / n))


def petrosian_ratio(enclosed, r: np.ndarray) -> np.ndarray:
    """Mean surface brightness in ``[0.8 r, 1.25 r]`` over the mean within ``r``.

    ``enclosed(radius) -> flux within radius`` (any units: the ratio does not depend on them).
    """
    lo, hi = PETROSIAN_ANNULUS
    r = np.asarray(r, dtype=np.float64)
    annulus = (enclosed(hi * r) - enclosed(lo * r)) / (hi**2 - lo**2)
    inside = enclosed(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        return annulus / inside


def sersic_concentration(n: float) -> float:
    """SDSS concentration ``r90 / r50`` of the Petrosian flux of a Sersic-``n`` profile."""

    def enclosed(x):
        return sersic_enclosed(n, x)

    x_p = brentq(lambda x: petrosian_ratio(enclosed, x) - PETROSIAN_ETA, 1e-3, 1e3)
    total = float(enclosed(PETROSIAN_APERTURE * x_p))
    r50 = brentq(lambda x: enclosed(x) - 0.5 * total, 1e-6, PETROSIAN_APERTURE * x_p)
    r90 = brentq(lambda x: enclosed(x) - 0.9 * total, 1e-6, PETROSIAN_APERTURE * x_p)
    return r90 / r50


@functools.lru_cache(maxsize=1)
def concentration_table() -> tuple[np.ndarray, np.ndarray]:
    """``(concentration, sersic_n)`` on :data:`SERSIC_GRID`, concentration increasing."""
    c = np.array([sersic_concentration(float(n)) for n in SERSIC_GRID])
    if np.any(np.diff(c) <= 0):  # the inversion below needs a monotonic relation
        raise RuntimeError("Sersic concentration is not monotonic on SERSIC_GRID")
    return c, SERSIC_GRID.copy()


def sersic_from_concentration(c: np.ndarray) -> np.ndarray:
    """Sersic index of concentration(s) ``c`` (clipped to the table's range; NaN stays NaN)."""
    table_c, table_n = concentration_table()
    c = np.asarray(c, dtype=np.float64)
    out = np.interp(np.clip(c, table_c[0], table_c[-1]), table_c, table_n)
    return np.where(np.isfinite(c), out, np.nan)


def curve_of_growth(
    image: np.ndarray,
    x0: float,
    y0: float,
    radii: np.ndarray,
    good: np.ndarray | None = None,
    q: float = 1.0,
    beta_rad: float = 0.0,
) -> np.ndarray:
    """Flux within ellipses of circularised ``radii`` [pixels] about ``(x0, y0)``.

    ``(x0, y0)`` are 0-based pixel-centre coordinates; the ellipses have axis ratio ``q`` and
    their major axis at ``beta_rad`` from +x (``q = 1``: circles). Each pixel is split into
    ``SUBPIX x SUBPIX`` sub-pixels of equal flux, so apertures are partial-pixel exact to
    ~1/SUBPIX of a pixel. Pixels where ``good`` is False count as 0.
    """
    ny, nx = image.shape
    offsets = (np.arange(SUBPIX) + 0.5) / SUBPIX - 0.5
    sy = np.arange(ny)[:, None, None, None] + offsets[None, None, :, None] - y0
    sx = np.arange(nx)[None, :, None, None] + offsets[None, None, None, :] - x0
    u = sx * np.cos(beta_rad) + sy * np.sin(beta_rad)  # along the major axis
    v = -sx * np.sin(beta_rad) + sy * np.cos(beta_rad)
    dist = np.sqrt(q * u**2 + v**2 / q).reshape(-1)
    values = np.where(good if good is not None else True, image, 0.0)
    flux = np.repeat(values.reshape(-1), SUBPIX * SUBPIX) / SUBPIX**2
    order = np.argsort(dist, kind="stable")
    cumulative = np.concatenate([[0.0], np.cumsum(flux[order])])
    return cumulative[np.searchsorted(dist[order], radii, side="right")]


def _first_crossing(r: np.ndarray, y: np.ndarray, level: float) -> float:
    """Smallest ``r`` where ``y`` reaches ``level`` (linear between samples); NaN if never."""
    above = np.flatnonzero(y >= level)
    if above.size == 0:
        return float("nan")
    k = int(above[0])
    if k == 0:
        return float(r[0])
    y0, y1 = y[k - 1], y[k]
    return float(r[k - 1] + (level - y0) / (y1 - y0) * (r[k] - r[k - 1]))


def petrosian_concentration(
    image: np.ndarray,
    x0: float,
    y0: float,
    good: np.ndarray | None = None,
    q: float = 1.0,
    beta_rad: float = 0.0,
) -> float:
    """SDSS concentration ``r90 / r50`` of the Petrosian flux measured on ``image`` (in
    elliptical apertures of axis ratio ``q`` and angle ``beta_rad``, see :func:`curve_of_growth`).
    """
    # The largest ellipse inside the cutout: its semi-major axis r / sqrt(q) fits the border.
    edge = min(x0, y0, image.shape[1] - 1 - x0, image.shape[0] - 1 - y0)
    r_max = edge * np.sqrt(q)
    if r_max < 2.0:
        return float("nan")
    radii = np.arange(RADIUS_STEP_PIX, r_max + 1e-9, RADIUS_STEP_PIX)
    flux = curve_of_growth(image, x0, y0, radii, good, q, beta_rad)

    def enclosed(r):
        return np.interp(r, radii, flux, left=0.0)

    candidates = radii[radii * PETROSIAN_ANNULUS[1] <= r_max]
    eta = petrosian_ratio(enclosed, candidates)
    below = np.flatnonzero((eta < PETROSIAN_ETA) & (flux[: candidates.size] > 0))
    r_p = float(candidates[below[0]]) if below.size else r_max / PETROSIAN_APERTURE
    total = float(enclosed(min(PETROSIAN_APERTURE * r_p, r_max)))
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    r50 = _first_crossing(radii, flux, 0.5 * total)
    r90 = _first_crossing(radii, flux, 0.9 * total)
    return r90 / r50 if r50 > 0 else float("nan")


def adaptive_moments(
    image: np.ndarray, good: np.ndarray | None = None
) -> tuple[float, float, float, float]:
    """``(|g|, position angle [rad] from +x, x0, y0)`` of the adaptive-moments ellipse
    (0-based centroid); NaNs on failure."""
    import galsim

    ny, nx = image.shape
    pixels = image if good is None else np.where(good, image, 0.0)
    img = galsim.Image(np.ascontiguousarray(pixels, dtype=np.float64), xmin=0, ymin=0)
    badpix = None
    if good is not None:
        badpix = galsim.Image((~good).astype(np.int32), xmin=0, ymin=0)
    guess = galsim.PositionD(nx // 2, ny // 2)  # cutouts centre objects on pixel (S//2, S//2)
    shape = galsim.hsm.FindAdaptiveMom(
        img, badpix=badpix, guess_sig=3.0, guess_centroid=guess, strict=False
    )
    if shape.moments_status != 0 or not np.isfinite(shape.moments_sigma):
        return (float("nan"),) * 4
    centre = shape.moments_centroid
    observed = shape.observed_shape
    return float(observed.g), float(observed.beta.rad), float(centre.x), float(centre.y)


def measure_morphology(cutouts: np.ndarray) -> np.ndarray:
    """Baseline ``(sersic_n, ellipticity)`` of each single-band cutout ``(N, S, S)`` [any flux
    unit]: ``(N, 2)`` float64, NaN where unmeasured. Non-finite pixels are ignored."""
    cutouts = np.asarray(cutouts, dtype=np.float64)
    if cutouts.ndim != 3 or cutouts.shape[1] != cutouts.shape[2]:
        raise ValueError(f"measure_morphology: expected (N, S, S) cutouts, got {cutouts.shape}")
    out = np.full((len(cutouts), 2), np.nan)
    for k, image in enumerate(cutouts):
        good = np.isfinite(image)
        e, beta, x0, y0 = adaptive_moments(image, good)
        if not np.isfinite(e):
            continue
        c = petrosian_concentration(image, x0, y0, good, (1.0 - e) / (1.0 + e), beta)
        out[k] = sersic_from_concentration(c), e
    n_failed = int(np.isnan(out).any(axis=1).sum())
    log.info(
        "moments baseline: measured %d of %d galaxies (%d unmeasured)",
        len(out) - n_failed,
        len(out),
        n_failed,
    )
    return out
