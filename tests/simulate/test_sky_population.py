"""The simulated sky: counts, star fraction, colours against GalSim's own photometry."""

from __future__ import annotations

import os

import galsim
import numpy as np
import pytest
from sim_helpers import tiny_config

from astroflow.simulate import sky


def _slope(mags: np.ndarray, lo: float, hi: float) -> float:
    """d log10 N / dm from a Poisson-weighted fit to 0.5-mag bins."""
    counts, edges = np.histogram(mags, bins=np.arange(lo, hi + 1e-9, 0.5))
    centres = 0.5 * (edges[1:] + edges[:-1])
    keep = counts > 0
    return float(np.polyfit(centres[keep], np.log10(counts[keep]), 1, w=np.sqrt(counts[keep]))[0])


@pytest.fixture(scope="module")
def big_population():
    cfg = tiny_config()
    return cfg, sky.draw_population(cfg, 0, area_scale=5.0)


def test_star_fraction_and_count_slopes_match_the_settings(big_population):
    cfg, pop = big_population
    sim = cfg["simulate"]
    n = len(pop["ra"])
    assert n > 5000
    frac = pop["is_star"].mean()
    assert abs(frac - sim["star_fraction"]) < 4 * np.sqrt(frac * (1 - frac) / n)
    bright, faint = sim["mag_bright"], sim["mag_faint"]
    ref = pop["mag_ref"]
    assert ref.min() >= bright and ref.max() <= faint
    assert _slope(ref[~pop["is_star"]], bright, faint) == pytest.approx(
        sim["galaxy_count_slope_per_mag"], abs=0.03)
    assert _slope(ref[pop["is_star"]], bright, faint) == pytest.approx(
        sim["star_count_slope_per_mag"], abs=0.04)


def test_reference_band_magnitude_is_the_drawn_one(big_population):
    cfg, pop = big_population
    r = cfg["instrument"]["bands"].index("r")
    np.testing.assert_allclose(pop["mag"][:, r], pop["mag_ref"], atol=1e-9)


def test_galaxies_shrink_with_magnitude_towards_the_psf(big_population):
    _, pop = big_population
    gal = ~pop["is_star"]
    bright = np.median(pop["r_half_arcsec"][gal & (pop["mag_ref"] < 20)])
    faint = np.median(pop["r_half_arcsec"][gal & (pop["mag_ref"] > 24.5)])
    assert bright > 2.5 * faint and 0.1 < faint < 0.35
    assert set(np.unique(pop["sersic_n"][gal])) <= set(sky.SERSIC_GRID)
    assert 0.15 < np.median(pop["ellipticity"][gal]) < 0.4
    assert np.all(np.isnan(pop["redshift"][pop["is_star"]]))
    zmed_bright = np.median(pop["redshift"][gal & (pop["mag_ref"] < 20)])
    zmed_faint = np.median(pop["redshift"][gal & (pop["mag_ref"] > 24.5)])
    assert zmed_bright < zmed_faint


def _galsim_mag(sed: galsim.SED, band: str) -> float:
    share = galsim.meta_data.share_dir
    bp = galsim.Bandpass(os.path.join(share, "bandpasses", f"LSST_{band}.dat"), "nm")
    return sed.calculateMagnitude(bp.withZeropoint("AB"))


def test_colours_agree_with_galsim_photometry():
    bands = ("g", "r", "i")
    share = galsim.meta_data.share_dir
    # Galaxy: the pure Sbc template (type index 1) at z = 0.5.
    mags = sky.galaxy_mags(np.array([20.0]), np.array([1.0]), np.array([0.5]), bands)[0]
    sed = galsim.SED(os.path.join(share, "SEDs", "CWW_Sbc_ext.sed"), "Angstrom", "flambda")
    ref = [_galsim_mag(sed.atRedshift(0.5), b) for b in bands]
    np.testing.assert_allclose(mags - mags[1], np.array(ref) - ref[1], atol=0.01)
    # Star: a 5000 K blackbody.
    mags = sky.star_mags(np.array([20.0]), np.array([5000.0]), bands)[0]
    wave = np.arange(250.0, 1200.0, 0.5)
    photons = wave**-4 / np.expm1(1.438777e7 / (wave * 5000.0))
    bb = galsim.SED(galsim.LookupTable(wave, photons), "nm", "fphotons")
    ref = [_galsim_mag(bb, b) for b in bands]
    np.testing.assert_allclose(mags - mags[1], np.array(ref) - ref[1], atol=0.01)


def test_stars_follow_a_locus_and_galaxies_spread(big_population):
    cfg, pop = big_population
    g, r, i = (cfg["instrument"]["bands"].index(b) for b in "gri")
    star = pop["is_star"]
    gr, ri = pop["mag"][:, g] - pop["mag"][:, r], pop["mag"][:, r] - pop["mag"][:, i]
    locus = np.polyfit(gr[star], ri[star], 2)
    scatter_star = np.std(ri[star] - np.polyval(locus, gr[star]))
    scatter_gal = np.std(ri[~star] - np.polyval(locus, gr[~star]))
    assert scatter_star < 0.02 < scatter_gal
    assert 0.0 < np.median(gr[star]) < 1.5


def test_unknown_band_is_a_config_error():
    from astroflow.config import ConfigError

    with pytest.raises(ConfigError, match="instrument.bands"):
        sky.check_bands(["g", "H"])
