"""Morphology evaluation: metric functions on hand-computed cases, the moments baseline on
GalSim galaxies of known shape, and the metrics block's shape."""

from __future__ import annotations

import warnings

import jsonschema
import numpy as np
import pytest

from astroflow.evaluate.morphology import (
    TrainingMean,
    morphology_mlflow_metrics,
    summarize_morphology,
)
from astroflow.evaluate.morphology_baseline import (
    measure_morphology,
    sersic_concentration,
    sersic_from_concentration,
)
from astroflow.evaluate.morphology_metrics import (
    MORPHOLOGY_METRICS,
    bias,
    nmad,
    outlier_frac,
    residuals,
)
from astroflow.evaluate.summary import SCHEMA_PATH


def test_residuals_dex_for_n_difference_for_e_and_failures_are_infinite():
    r = residuals("sersic_n", np.array([1.0, 2.0, 4.0, 1.0]), np.array([10.0, 2.0, 2.0, np.nan]))
    np.testing.assert_allclose(r[:3], [1.0, 0.0, -np.log10(2.0)])
    assert r[3] == np.inf
    r = residuals("ellipticity", np.array([0.1, 0.5]), np.array([0.3, np.nan]))
    np.testing.assert_allclose(r, [0.2, np.inf])
    with pytest.raises(ValueError, match="unknown morphology quantity"):
        residuals("size", np.zeros(1), np.zeros(1))


def test_bias_nmad_outliers_by_hand():
    r = np.array([-0.2, -0.05, 0.0, 0.01, 0.3])
    assert bias(r) == 0.0
    # |r - 0| sorted: 0, 0.01, 0.05, 0.2, 0.3 -> median 0.05
    assert nmad(r) == pytest.approx(1.4826 * 0.05)
    assert outlier_frac(r, 0.15) == pytest.approx(2 / 5)
    assert np.isnan(bias(np.array([]))) and np.isnan(nmad(np.array([])))
    # A failure (inf) moves the median up one place and is an outlier.
    r_fail = np.append(r, np.inf)
    assert bias(r_fail) == pytest.approx(0.005)
    assert outlier_frac(r_fail, 0.15) == pytest.approx(3 / 6)
    metrics = MORPHOLOGY_METRICS["sersic_n"]
    true, pred = np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0 * 10**0.2, 4.0 * 10**-0.1])
    assert metrics["bias"](true, pred) == pytest.approx(0.0)
    assert metrics["outlier_frac"](true, pred) == pytest.approx(1 / 3)
    assert MORPHOLOGY_METRICS["ellipticity"]["outlier_frac"](
        np.array([0.1, 0.2]), np.array([0.25, 0.2])
    ) == pytest.approx(0.5)


def test_sersic_concentration_matches_the_sdss_values():
    # Petrosian r90/r50: ~2.3 for an exponential disc, ~3.3 for a de Vaucouleurs profile.
    assert sersic_concentration(1.0) == pytest.approx(2.29, abs=0.02)
    assert sersic_concentration(4.0) == pytest.approx(3.35, abs=0.05)
    n = np.array([0.7, 1.0, 2.5, 4.0, 6.0])
    back = sersic_from_concentration(np.array([sersic_concentration(v) for v in n]))
    np.testing.assert_allclose(back, n, rtol=1e-3)
    assert np.isnan(sersic_from_concentration(np.array([np.nan])))[0]


@pytest.mark.parametrize("n", [1.0, 1.5, 2.5, 4.0])
@pytest.mark.parametrize("g", [0.0, 0.15, 0.3])
def test_moments_baseline_recovers_known_shape_of_a_galsim_galaxy(n, g):
    """Noiseless, PSF-free Sersic galaxies of 0.6 arcsec half-light radius in a 48-pixel
    cutout at 0.2 arcsec: |g| within 0.035 and n within 0.07 dex."""
    import galsim

    hlr = 0.6
    gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=5e4, trunc=8 * hlr if n >= 3 else 0.0)
    gal = gal.shear(g=g, beta=37.0 * galsim.degrees)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", galsim.GalSimFFTSizeWarning)
        image = gal.drawImage(nx=48, ny=48, scale=0.2, method="real_space").array
    image[0, :5] = np.nan  # an off-detector corner is ignored
    n_hat, g_hat = measure_morphology(image[None])[0]
    assert abs(g_hat - g) < 0.035
    assert abs(np.log10(n_hat / n)) < 0.07


def test_moments_baseline_marks_an_empty_cutout_unmeasured():
    out = measure_morphology(np.zeros((1, 32, 32)))
    assert np.isnan(out).all()
    with pytest.raises(ValueError, match=r"expected \(N, S, S\)"):
        measure_morphology(np.zeros((2, 3, 32, 32)))


def test_summary_block_has_the_schema_shape_and_flat_mlflow_metrics():
    rng = np.random.default_rng(0)
    true = np.column_stack([rng.choice([1.0, 2.0, 4.0], 60), rng.uniform(0, 0.6, 60)])
    model = true * np.column_stack([10 ** rng.normal(0, 0.05, 60), np.ones(60)])
    model[:, 1] += rng.normal(0, 0.03, 60)
    moments = model.copy()
    moments[:3] = np.nan
    mag = rng.uniform(18, 24, 60)
    block = summarize_morphology(
        true,
        {"model": model, "moments": moments},
        mag,
        [17.0, 21.0, 25.0],
        30,
        np.random.default_rng(1),
        "truth",
        train_mean=TrainingMean(2.0, 0.3, 40),
    )
    schema = __import__("json").loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator(
        {**schema["$defs"]["morphology"], "$defs": schema["$defs"]}
    ).validate(block)
    assert block["n_test"] == 60
    assert block["n_unmeasured"] == {"model": 0, "moments": 3, "training_mean": 0}
    assert block["training_mean"] == {"sersic_n": 2.0, "ellipticity": 0.3, "n_galaxies": 40}
    assert sum(b["n"] for b in block["by_magnitude"]) == 60
    nmad_n = block["model"]["sersic_n"]["nmad"]
    assert nmad_n["value"] == pytest.approx(0.05, abs=0.02)
    assert nmad_n["ci95"][0] <= nmad_n["value"] <= nmad_n["ci95"][1]
    assert block["baselines"]["moments"]["sersic_n"]["outlier_frac"]["value"] >= 3 / 60
    flat = morphology_mlflow_metrics(block)
    assert flat["morphology_model_sersic_n_nmad"] == nmad_n["value"]
    assert "morphology_baseline_moments_ellipticity_bias_lo" in flat
    assert flat["morphology_baseline_training_mean_ellipticity_pearson_r"] == 0.0
    assert "morphology_delta_vs_training_mean_sersic_n_abs_slope_minus_1_verdict" in flat
    assert "morphology_model_ellipticity_slope_hi" in flat
