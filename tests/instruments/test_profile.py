"""Instrument profiles: loading, validation, classification; labels-catalog mapping."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astroflow.io.fits_read import read_frame
from astroflow.io.profile import DEFAULTS, PROFILE_DIR, SCHEMA, InstrumentProfile, load_profile
from astroflow.reduce.assemble import Layout, amp_to_electrons
from astroflow.reduce.labels import match_labels, read_labels


def test_shipped_profiles_load_and_afcam_equals_the_defaults():
    assert {p.stem for p in PROFILE_DIR.glob("*.yaml")} >= {"afcam", "single_ccd"}
    afcam = load_profile("afcam")
    builtin = load_profile(None)
    for key in ("keywords", "imagetyp_values", "filename_patterns", "classify_by", "sections",
                "values", "pixels"):  # fmt: skip
        assert afcam.spec[key] == builtin.spec[key] == DEFAULTS[key], key
    single = load_profile("single_ccd")
    assert single.primary_pixels and not single.sections["required"]


def test_the_profile_schema_is_a_valid_json_schema():
    """Profiles are validated without re-checking the schema each time: check it here."""
    import jsonschema

    jsonschema.validators.validator_for(SCHEMA).check_schema(SCHEMA)


def test_invalid_or_unknown_profile_names_the_file_and_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkeywords: {filtr: FILTER}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: invalid instrument profile at keywords"):
        load_profile(str(bad))
    with pytest.raises(FileNotFoundError, match=r"'nocam' not found .*afcam"):
        load_profile("nocam")


def test_classification_by_value_glob_then_file_name():
    profile = InstrumentProfile(
        {
            "name": "t",
            "keywords": {"imagetyp": "OBSTYPE"},
            "imagetyp_values": {"flat": ["dome*"], "bias": ["zero"]},
            "filename_patterns": {"dark": ["d_*.fits"]},
            "classify_by": ["header", "filename"],
        }
    )
    assert profile.classify({"OBSTYPE": "DomeFlat"}, "x.fits").frame_type == "flat"
    assert profile.classify({"OBSTYPE": "Zero"}, "d_1.fits").frame_type == "bias"
    assert profile.classify({}, "raw/D_1.FITS").frame_type == "dark"
    unknown = profile.classify({"OBSTYPE": "focus"}, "f.fits")
    assert unknown.frame_type is None and "OBSTYPE 'focus'" in unknown.how


def test_single_ccd_primary_pixels_integer_with_overscan_no_sections(tmp_path):
    """Integer pixels (BZERO) in the primary HDU with 8 overscan columns and no section
    keywords: the profile's computed sections subtract the overscan and keep the data."""
    rng = np.random.default_rng(1)
    data = np.full((64, 72), 1000.0)
    data[:, :64] += 50.0 + rng.normal(0, 1, (64, 64))
    hdu = fits.PrimaryHDU(np.round(data).astype(np.int32) - 32768)
    hdu.header["BZERO"] = 32768
    hdu.header["GAIN"] = 2.0
    path = tmp_path / "ccd.fits"
    hdu.writeto(path)
    profile = load_profile("single_ccd")
    frame = read_frame(path, primary_pixels=profile.primary_pixels)
    layout = Layout(1, 64, 64, 8, profile)
    amp = amp_to_electrons(frame.amps[0], str(path), layout)
    assert amp.image_e.shape == (64, 64)
    assert abs(float(np.median(amp.image_e)) - 100.0) < 3.0  # (1050 - 1000) ADU x 2 e-/ADU
    assert amp.header["DETSEC"] == "[1:64,1:64]" and amp.header["BIASSEC"] == "[65:72,1:64]"
    # The demo camera's profile requires sections and image extensions, and says so.
    with pytest.raises(Exception, match="no 2-d image extensions"):
        read_frame(path)


@pytest.mark.parametrize("fmt", ["csv", "fits", "ecsv"])
def test_labels_mapping_reads_foreign_catalogs(tmp_path, fmt):
    table = Table({"RA": [10.0, 10.001, 10.002], "DEC": [0.0, 0.0, 0.0], "KIND": [3, 6, 9]})
    path = tmp_path / f"cat.{fmt}"
    table.write(path, format={"csv": "ascii.csv", "fits": "fits", "ecsv": "ascii.ecsv"}[fmt])
    columns = {"format": "auto", "ra": "RA", "dec": "DEC", "class": "KIND", "star": [6],
               "galaxy": [3]}  # fmt: skip
    labels = read_labels(str(path), columns)
    assert list(labels["class"]) == ["galaxy", "star", "unknown"]
    got = match_labels(np.array([10.0, 10.001, 10.002]), np.zeros(3), labels, 0.5)
    assert list(got) == [1, 0, -1]
    with pytest.raises(ValueError, match=r"cat\.\w+: labels catalog lacks column\(s\) 'ra'"):
        read_labels(str(path))
