"""The sky of the demo survey: which objects exist, where, how bright in each band, what shape.

Stars lie on a blackbody locus (3500-10000 K, weighted to cool dwarfs); galaxies are a
continuous mix of the Coleman, Wu & Weedman templates shipped with GalSim (E, Sbc, Scd, Im)
placed at a magnitude-dependent redshift. Band magnitudes are synthetic AB magnitudes through
GalSim's LSST throughput curves, anchored on the reference band (LSST r), in which the
magnitude distribution is drawn: number counts ``dN/dm ~ 10**(slope * m)`` between
``simulate.mag_bright`` and ``simulate.mag_faint``, with separate slopes for stars and galaxies
and ``simulate.star_fraction`` of all objects being stars.

Galaxy shapes are single Sersic profiles with a size-magnitude relation (median half-light
radius 0.8 arcsec at r = 19 falling by 0.11 dex per magnitude, 0.18 dex scatter), so the faint
ones approach the PSF size; ellipticity ``|g| = (1 - q) / (1 + q)`` follows a Rayleigh
distribution, rounder for early types. Sersic indices are snapped to a short grid so that
GalSim can reuse its profile tables.

Stars have ``r_half_arcsec = 0``, ``ellipticity = 0``, ``sersic_n = NaN`` and
``redshift = NaN`` in the truth table.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import numpy as np

from astroflow.config import ConfigError
from astroflow.simulate import layout
from astroflow.simulate.seeding import POPULATION, rng_for

#: Bands the simulator has throughput curves for (GalSim's LSST set).
KNOWN_BANDS = ("u", "g", "r", "i", "z", "y")
#: Band in which the magnitude limits and the number counts are defined.
REFERENCE_BAND = "r"
#: Galaxy templates, ordered from early to late type (type index 0..3).
GALAXY_TEMPLATES = ("CWW_E_ext", "CWW_Sbc_ext", "CWW_Scd_ext", "CWW_Im_ext")
#: Sersic indices galaxies are snapped to.
SERSIC_GRID = np.array([1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
#: Margin around the detector footprint in which objects are placed [arcsec], so that dithers
#: and objects straddling the edge are both real.
FIELD_MARGIN_ARCSEC = 12.0
STAR_T_MIN_K, STAR_T_MAX_K = 3500.0, 10000.0

_WAVE_NM = np.arange(300.0, 1100.0, 1.0)
_H_C_OVER_K_NM_K = 1.438777e7  # h c / k_B in nm K


def check_bands(bands: Sequence[str]) -> None:
    """Raise a :class:`ConfigError` naming ``instrument.bands`` for a band without a curve."""
    unknown = [b for b in bands if b.lower() not in KNOWN_BANDS]
    if unknown:
        raise ConfigError(
            f"instrument.bands: the simulator has throughput curves only for {list(KNOWN_BANDS)}"
            f" (GalSim's LSST bandpasses); cannot simulate band(s) {unknown}"
        )


@functools.lru_cache(maxsize=8)
def _throughputs(bands: tuple[str, ...]) -> np.ndarray:
    """Throughput of each band on the common wavelength grid, shape ``(n_bands, n_wave)``."""
    import galsim

    check_bands(bands)
    share = galsim.meta_data.share_dir
    rows = []
    for band in bands:
        bp = galsim.Bandpass(os.path.join(share, "bandpasses", f"LSST_{band.lower()}.dat"), "nm")
        inside = (_WAVE_NM >= bp.blue_limit) & (_WAVE_NM <= bp.red_limit)
        row = np.zeros_like(_WAVE_NM)
        row[inside] = bp(_WAVE_NM[inside])
        rows.append(row)
    return np.array(rows)


@functools.lru_cache(maxsize=1)
def _galaxy_templates() -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame photon densities of the templates, normalised at 550 nm, on a rest grid."""
    import galsim

    share = galsim.meta_data.share_dir
    rest_nm = np.arange(60.0, 1100.0, 0.5)
    out = []
    for name in GALAXY_TEMPLATES:
        sed = galsim.SED(os.path.join(share, "SEDs", f"{name}.sed"), "Angstrom", "flambda")
        photons = np.asarray(sed(rest_nm), dtype=float)
        out.append(photons / np.interp(550.0, rest_nm, photons))
    return rest_nm, np.array(out)


def _ab_mags(photons: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
    """AB magnitudes (up to one additive constant per object) of photon densities.

    ``photons`` has shape ``(n_obj, n_wave)`` on the common grid. An AB source has a photon
    density proportional to ``1 / lambda``, hence the denominator.
    """
    thr = _throughputs(bands)
    num = photons @ thr.T
    den = (thr / _WAVE_NM).sum(axis=1)
    return -2.5 * np.log10(np.maximum(num, 1e-300) / den)


def star_mags(ref_mag: np.ndarray, temperature_k: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Per-band AB magnitudes ``(n, n_bands)`` of blackbody stars with ``ref_mag`` in r."""
    bands = tuple(bands)
    t = np.asarray(temperature_k, dtype=float)[:, None]
    lam = _WAVE_NM[None, :]
    with np.errstate(over="ignore"):
        photons = lam**-4 / np.expm1(_H_C_OVER_K_NM_K / (lam * t))
    mags = _ab_mags(photons, bands + (REFERENCE_BAND,))
    return np.asarray(ref_mag)[:, None] + mags[:, :-1] - mags[:, -1:]


def galaxy_mags(
    ref_mag: np.ndarray, type_index: np.ndarray, redshift: np.ndarray, bands: Sequence[str]
) -> np.ndarray:
    """Per-band AB magnitudes ``(n, n_bands)`` of template galaxies with ``ref_mag`` in r.

    ``type_index`` in [0, 3] interpolates linearly (in photons at rest 550 nm) between
    neighbouring templates of :data:`GALAXY_TEMPLATES`.
    """
    bands = tuple(bands)
    rest_nm, templates = _galaxy_templates()
    n = len(ref_mag)
    out = np.empty((n, len(bands)))
    for start in range(0, n, 2000):
        sl = slice(start, start + 2000)
        t = np.clip(np.asarray(type_index[sl], dtype=float), 0.0, len(templates) - 1.0)
        lo = np.minimum(np.floor(t).astype(int), len(templates) - 2)
        w = (t - lo)[:, None]
        rest = _WAVE_NM[None, :] / (1.0 + np.asarray(redshift[sl])[:, None])
        dens = np.array([np.interp(rest, rest_nm, tpl) for tpl in templates])
        rows = np.arange(len(t))
        photons = (1 - w) * dens[lo, rows] + w * dens[lo + 1, rows]
        mags = _ab_mags(photons, bands + (REFERENCE_BAND,))
        out[sl] = np.asarray(ref_mag[sl])[:, None] + mags[:, :-1] - mags[:, -1:]
    return out


def draw_counts_mags(
    rng: np.random.Generator, n: int, slope_per_mag: float, bright: float, faint: float
) -> np.ndarray:
    """``n`` magnitudes from ``dN/dm ~ 10**(slope * m)`` truncated to ``[bright, faint]``."""
    u = rng.uniform(size=n)
    if abs(slope_per_mag) < 1e-9:
        return bright + (faint - bright) * u
    a = slope_per_mag * np.log(10.0)
    lo, hi = np.exp(a * bright), np.exp(a * faint)
    return np.log(lo + u * (hi - lo)) / a


def footprint_arcsec(cfg: Mapping) -> tuple[float, float]:
    """Width and height of the detector on the sky [arcsec] (amps tiled along x)."""
    inst = cfg["instrument"]
    ny, nx = inst["amp_shape"]
    scale = inst["pixel_scale_arcsec"]
    return inst["n_amps"] * nx * scale, ny * scale


def tangent_to_sky(
    xi_arcsec: np.ndarray, eta_arcsec: np.ndarray, ra0_deg: float, dec0_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse gnomonic projection of standard coordinates about ``(ra0, dec0)`` [deg]."""
    xi = np.radians(np.asarray(xi_arcsec) / 3600.0)
    eta = np.radians(np.asarray(eta_arcsec) / 3600.0)
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def draw_population(cfg: Mapping, field_idx: int, area_scale: float = 1.0) -> dict:
    """Every object of one field, as a dict of equal-length numpy arrays.

    Parameters
    ----------
    cfg
        Resolved config; reads ``instrument`` and ``simulate``.
    field_idx
        Field index; with ``cfg['seed']`` it fixes the random stream.
    area_scale
        Multiplies the field's side lengths (tests use a large area to check the statistics
        without rendering anything).

    Returns
    -------
    dict
        ``ra, dec`` [deg], ``xi_arcsec, eta_arcsec`` (offsets from the field centre),
        ``is_star``, ``mag`` ``(n, n_bands)`` in ``instrument.bands`` order, ``mag_ref`` (r),
        ``r_half_arcsec``, ``sersic_n``, ``ellipticity``, ``position_angle_deg``,
        ``redshift``, ``type_index`` (galaxies), ``temperature_k`` (stars).
    """
    sim, bands = cfg["simulate"], tuple(cfg["instrument"]["bands"])
    check_bands(bands)
    rng = rng_for(cfg, POPULATION, field_idx)
    width, height = footprint_arcsec(cfg)
    width = (width + 2 * FIELD_MARGIN_ARCSEC) * area_scale
    height = (height + 2 * FIELD_MARGIN_ARCSEC) * area_scale
    n = int(rng.poisson(sim["density_per_arcmin2"] * width * height / 3600.0))
    xi = rng.uniform(-width / 2, width / 2, n)
    eta = rng.uniform(-height / 2, height / 2, n)
    ra0, dec0 = layout.field_center_deg(field_idx)
    ra, dec = tangent_to_sky(xi, eta, ra0, dec0)
    is_star = rng.uniform(size=n) < sim["star_fraction"]
    ns, ng = int(is_star.sum()), int((~is_star).sum())
    bright, faint = sim["mag_bright"], sim["mag_faint"]

    mag_ref = np.empty(n)
    mag_ref[is_star] = draw_counts_mags(rng, ns, sim["star_count_slope_per_mag"], bright, faint)
    mag_ref[~is_star] = draw_counts_mags(
        rng, ng, sim["galaxy_count_slope_per_mag"], bright, faint
    )

    # Stars: blackbody temperatures, weighted to cool dwarfs.
    temperature = np.full(n, np.nan)
    temperature[is_star] = STAR_T_MIN_K * (STAR_T_MAX_K / STAR_T_MIN_K) ** rng.beta(1.3, 2.2, ns)

    # Galaxies: type, redshift, morphology, all depending on magnitude.
    mg = mag_ref[~is_star]
    dm = mg - 17.0
    type_index = np.full(n, np.nan)
    t = 3.0 * rng.beta(1.0 + 0.1 * dm, np.maximum(1.6 - 0.06 * dm, 0.5))
    type_index[~is_star] = t
    z_median = 0.12 + 0.11 * dm
    redshift = np.full(n, np.nan)
    redshift[~is_star] = np.clip(z_median / 1.412 * rng.gamma(2.0, size=ng) ** (2 / 3), 0.01, 4.0)
    r_half = np.zeros(n)
    log_r = np.log10(0.8) - 0.11 * (mg - 19.0) + rng.normal(0.0, 0.18, ng)
    r_half[~is_star] = np.clip(10**log_r * (1.0 - 0.07 * (3.0 - t)), 0.05, 5.0)
    n_cont = 4.0 - 1.1 * t + rng.normal(0.0, 0.3, ng)
    sersic = np.full(n, np.nan)
    sersic[~is_star] = SERSIC_GRID[np.abs(n_cont[:, None] - SERSIC_GRID[None, :]).argmin(axis=1)]
    ellip = np.zeros(n)
    ellip[~is_star] = np.minimum(rng.rayleigh(0.12 + 0.05 * t), 0.7)
    pa = rng.uniform(0.0, 180.0, n)
    pa[is_star] = 0.0

    mag = np.empty((n, len(bands)))
    if ns:
        mag[is_star] = star_mags(mag_ref[is_star], temperature[is_star], bands)
    if ng:
        mag[~is_star] = galaxy_mags(mg, t, redshift[~is_star], bands)
    return {
        "ra": ra,
        "dec": dec,
        "xi_arcsec": xi,
        "eta_arcsec": eta,
        "is_star": is_star,
        "mag": mag,
        "mag_ref": mag_ref,
        "r_half_arcsec": r_half,
        "sersic_n": sersic,
        "ellipticity": ellip,
        "position_angle_deg": pa,
        "redshift": redshift,
        "type_index": type_index,
        "temperature_k": temperature,
    }
