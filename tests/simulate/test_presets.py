"""Survey presets (config/presets/*.yaml): they validate, reach the pixels, and fail clearly."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from sim_helpers import REPO, calibrate_exactly

from astroflow.config import deep_merge, load_config, validate
from astroflow.simulate import camera, layout, stage

PRESET_DIR = REPO / "config" / "presets"
BASE = REPO / "config" / "config.yaml"
PRESETS = ("tiny", "demo", "cfhtlens_like", "sdss_like", "survey")
#: Geometry and frame counts that make one field of any preset take seconds.
SHRINK = {
    "instrument": {"amp_shape": [256, 128]},
    "simulate": {"n_fields": 1, "n_epochs": 1, "n_bias": 1, "n_dark": 1, "n_flat": 1},
}


def _preset(name: str) -> dict:
    return load_config(BASE, PRESET_DIR / f"{name}.yaml")


def test_the_presets_are_the_five_documented_ones():
    assert sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_validates(name):
    cfg = _preset(name)
    stage.check_config(cfg)  # simulator-only checks (bands, 16-bit full well)
    assert cfg["simulate"]["enabled"]
    assert cfg["reduce"]["detection_band"] in cfg["instrument"]["bands"]


def test_tiny_preset_is_config_tiny():
    assert _preset("tiny") == load_config(BASE, REPO / "config" / "tiny.yaml"), (
        "config/presets/tiny.yaml must repeat config/tiny.yaml: copy the changed keys over")


def test_demo_preset_is_the_default_config():
    assert _preset("demo") == load_config(BASE), (
        "config/presets/demo.yaml must spell out config/config.yaml's demo: update it")


def test_survey_preset_is_benchmark_scale():
    cfg = _preset("survey")
    inst = cfg["instrument"]
    assert inst["amp_shape"][0] == inst["n_amps"] * inst["amp_shape"][1] == 4096
    n_exposures = sum(len(layout.science_exposures(cfg, f)) for f in layout.field_names(cfg))
    assert 20 <= n_exposures < 100


def test_published_characteristics_differ_between_surveys():
    """The survey-like presets carry their own camera, not the demo's."""
    cfht, sdss, demo = _preset("cfhtlens_like"), _preset("sdss_like"), _preset("demo")
    assert cfht["instrument"]["pixel_scale_arcsec"] == 0.187
    assert sdss["instrument"]["pixel_scale_arcsec"] == 0.396
    assert sdss["simulate"]["seeing_fwhm_arcsec"]["mean"] > 1.5 * cfht["simulate"][
        "seeing_fwhm_arcsec"]["mean"]
    assert sdss["simulate"]["gain_e_per_adu"] > 2 * demo["simulate"]["gain_e_per_adu"]
    assert sdss["simulate"]["mag_faint"] < cfht["simulate"]["mag_faint"]


def _simulate(cfg: dict, root) -> None:
    argv = ["all", "--config-json", json.dumps(cfg), "--raw-dir", str(root / "raw"),
            "--catalog-dir", str(root / "cat")]
    assert stage.main(argv) == 0


@pytest.mark.parametrize("name", ["tiny", "demo", "cfhtlens_like", "sdss_like"])
def test_one_shrunk_field_of_each_preset(name, tmp_path):
    """A shrunk field shows the preset's camera and sky, and is deterministic from the seed."""
    cfg = validate(deep_merge(_preset(name), SHRINK))
    sim, inst = cfg["simulate"], cfg["instrument"]
    _simulate(cfg, tmp_path / "a")
    raw = tmp_path / "a" / "raw"
    declared = layout.calib_files(cfg, raw) + layout.science_files(cfg, raw, "F00")
    assert sorted(str(p) for p in raw.rglob("*.fits*")) == sorted(declared)

    # Electronics: per-amp GAIN/RDNOISE scatter about the preset's values, and the overscan
    # noise of a bias frame is that read noise.
    bias_path = layout.calib_files(cfg, raw)[0]
    with fits.open(bias_path) as hdul:
        for hdu in hdul[1:]:
            h = hdu.header
            assert abs(h["GAIN"] / sim["gain_e_per_adu"] - 1) <= camera.GAIN_SPREAD + 1e-3
            assert abs(h["RDNOISE"] / sim["read_noise_e"] - 1) <= camera.READ_NOISE_SPREAD + 1e-3
            assert h["SATURATE"] <= camera.ADC_MAX_ADU
            over = hdu.data[:, inst["amp_shape"][1]:].astype(float)
            over -= over.mean(axis=1, keepdims=True)
            n = over.shape[1]
            noise_e = over.std() * np.sqrt(n / (n - 1)) * h["GAIN"]
            # ADU rounding adds 1/12 ADU^2 of variance.
            expected_e = np.hypot(h["RDNOISE"], h["GAIN"] / np.sqrt(12))
            assert noise_e == pytest.approx(expected_e, rel=0.08), h["EXTNAME"]

    # Optics and sky: WCS pixel scale, EXPTIME and the sky level in electrons.
    plans = {p["file"]: p for p in Table.read(tmp_path / "a" / "cat" / "truth.ecsv")
             .meta["exposures"]}
    for exp, path in zip(layout.science_exposures(cfg, "F00"),
                         layout.science_files(cfg, raw, "F00"), strict=True):
        image, primary, amp_headers = calibrate_exactly(cfg, path)
        assert primary["EXPTIME"] == sim["exptime_s"] and primary["FILTER"] == exp["band"]
        scale = proj_plane_pixel_scales(WCS(amp_headers[0])) * 3600
        np.testing.assert_allclose(scale, inst["pixel_scale_arcsec"], rtol=1e-6)
        plan = plans[exp["name"]]
        sky_e = (10 ** (-0.4 * (sim["sky_mag_arcsec2"][exp["band"]]
                                - inst["zeropoint_mag"][exp["band"]]))
                 * inst["pixel_scale_arcsec"] ** 2 * sim["exptime_s"])
        assert plan["sky_e_per_pixel"] == pytest.approx(sky_e, rel=1e-3)
        if sky_e > 200:  # enough sky for a 3 % level check (objects add a little)
            assert np.median(image) == pytest.approx(sky_e, rel=0.03), path

    # Deterministic from the seed: a second run writes the same bytes.
    _simulate(cfg, tmp_path / "b")
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
            assert filecmp.cmp(path, twin, shallow=False), path


@pytest.mark.parametrize(
    ("overlay", "key"),
    [
        ({"simulate": {"gain_e_per_adu": -1.0}}, "simulate.gain_e_per_adu"),
        ({"simulate": {"read_noise_e": "five"}}, "simulate.read_noise_e"),
        ({"instrument": {"pixel_scale_arcsec": 0}}, "instrument.pixel_scale_arcsec"),
        ({"simulate": {"seeing_fwhm_arcsec": {"mean": 0.7, "sigma": -0.1}}},
         "simulate.seeing_fwhm_arcsec.sigma"),
        ({"simulate": {"read_noise": 5.0}}, "'read_noise' was unexpected"),
        ({"instrument": {"bands": ["u", "g", "r", "i", "z", "y"]}}, "instrument.zeropoint_mag"),
        # Valid for the schema, but a 300 ke- well does not fit 16 bits at 1.8 e-/ADU.
        ({"simulate": {"full_well_e": 300000}}, "simulate.full_well_e"),
    ],
)
def test_bad_preset_value_names_the_key_and_the_file(tmp_path, capsys, overlay, key):
    preset = tmp_path / "bad_preset.yaml"
    preset.write_text(yaml.safe_dump(overlay))
    rc = stage.main(["calib", "--config", str(BASE), str(preset), "--raw-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert key in err, err
    if key != "simulate.full_well_e":  # the simulator's own check sees the merged config only
        assert "bad_preset.yaml" in err, err
    assert not list(tmp_path.rglob("*.fits"))


def test_nonstandard_cards_are_in_the_raw_bytes(tiny_archive, tmp_path):
    """HIERARCH, lower-case and invalid-value cards as archives write them; astroflow reads on."""
    from astropy.io.fits.verify import VerifyError

    from astroflow.io.fits_read import read_primary_header

    cfg = tiny_archive["cfg"]
    path = layout.science_files(cfg, tiny_archive["raw_dir"], "F00")[0]
    with open(path, "rb") as fh:
        block = fh.read(2880 * 2)
    assert b"HIERARCH AF DET TEMP = " in block
    assert b"obsnote = 'demo night'" in block
    assert b"DETTEMP = -11" in block and b"DETTEMP = '" not in block
    with fits.open(path) as hdul:
        with pytest.raises(VerifyError):
            hdul[0].header["DETTEMP"]  # noqa: B018 (astropy refuses the invalid value)
    header = read_primary_header(path)
    assert header["FILTER"] == "g" and header["IMAGETYP"] == "object"
    assert header["EXPNUM"] == layout.science_exposures(cfg, "F00")[0]["expnum"]

    clean = dict(cfg, simulate=cfg["simulate"] | {"nonstandard_headers": False})
    assert stage.main(["calib", "--config-json", json.dumps(clean | {
        "simulate": clean["simulate"] | {"n_bias": 1, "n_dark": 0, "n_flat": 1}}),
        "--raw-dir", str(tmp_path)]) == 0
    with open(next(tmp_path.rglob("bias_000.fits")), "rb") as fh:
        block = fh.read(2880 * 2)
    assert b"obsnote" not in block and b"DETTEMP" not in block and b"HIERARCH" not in block
    with fits.open(next(tmp_path.rglob("bias_000.fits"))) as hdul:
        hdul.verify("exception")  # a clean archive is valid FITS throughout


def test_doc_figures_are_drawn_through_the_reduction(tiny_archive, tmp_path):
    from astroflow.simulate.figures import make_figures

    pngs = make_figures(tiny_archive["cfg"], tiny_archive["raw_dir"], tmp_path)
    assert [p.name for p in pngs] == ["raw_amplifier.png", "calibrated_field.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 20_000 < png.stat().st_size < 300_000, png
