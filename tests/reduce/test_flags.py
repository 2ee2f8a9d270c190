"""Object flags from synthetic mask planes, exposure counts and detections."""

from __future__ import annotations

import numpy as np
import pytest

from astroflow.reduce.calibrate import MASK_BAD, MASK_COSMIC, MASK_OFF_DETECTOR
from astroflow.reduce.flags import (
    FLAG_BITS,
    FlagSettings,
    flag_bits_attr,
    flag_mask,
    object_flags,
)

S = 32
SCALE = 0.2
SETTINGS = FlagSettings(
    central_size_pix=16,
    core_radius_pix=3.0,
    max_edge_fraction=0.1,
    max_bad_fraction=0.02,
    min_coverage_fraction=0.5,
    neighbour_radius_arcsec=2.0,
)


def _field(n: int, bands: int = 3, exposures: int = 4):
    """Clean planes, every band covered by ``exposures``, objects 100 px apart."""
    mask = np.zeros((n, bands, S, S), np.uint8)
    n_exp = np.full((n, bands), exposures)
    xy = np.column_stack([np.arange(n) * 100.0, np.full(n, 50.0)])
    return mask, n_exp, xy


def _flags(mask, n_exp, xy):
    return object_flags(mask, n_exp, xy, SCALE, SETTINGS)


def test_isolated_clean_object_has_no_flag():
    assert _flags(*_field(3)).tolist() == [0, 0, 0]


def test_object_at_the_edge_gets_the_edge_bit():
    mask, n_exp, xy = _field(2)
    mask[0, 1, :, : S // 2 - 2] = MASK_OFF_DETECTOR  # left part of the r cutout off-detector
    flags = _flags(mask, n_exp, xy)
    assert flags.tolist() == [FLAG_BITS["edge"], 0]


def test_off_detector_outside_the_central_region_is_not_edge():
    mask, n_exp, xy = _field(1)
    mask[0, :, :, :4] = MASK_OFF_DETECTOR  # only the cutout's outer columns
    assert _flags(mask, n_exp, xy).tolist() == [0]


def test_band_without_exposures_is_band_missing_not_edge():
    mask, n_exp, xy = _field(2)
    mask[0, 0] = MASK_OFF_DETECTOR  # what the combination writes for an unobserved band
    n_exp[0, 0] = 0
    assert _flags(mask, n_exp, xy).tolist() == [FLAG_BITS["band_missing"], 0]


def test_close_pair_gets_the_neighbour_bit():
    mask, n_exp, xy = _field(3)
    xy[1] = xy[0] + [6.0, 5.0]  # 7.8 px = 1.56 arcsec from object 0
    flags = _flags(mask, n_exp, xy)
    assert flags.tolist() == [FLAG_BITS["neighbour"], FLAG_BITS["neighbour"], 0]


def test_bad_column_through_the_centre_flags_bad_pixels_and_core():
    mask, n_exp, xy = _field(2)
    mask[0, 2, :, S // 2] = MASK_BAD
    flags = _flags(mask, n_exp, xy)
    assert flags[0] == FLAG_BITS["bad_pixels"] | FLAG_BITS["saturated_core"]
    assert flags[1] == 0


def test_cosmic_ray_residual_in_the_core_only():
    mask, n_exp, xy = _field(2)
    mask[0, 0, S // 2 + 1, S // 2] = MASK_COSMIC
    mask[1, 0, 2, 2] = MASK_COSMIC  # far from the core: not flagged
    assert _flags(mask, n_exp, xy).tolist() == [FLAG_BITS["cosmic_ray_core"], 0]


def test_low_coverage_band():
    mask, n_exp, xy = _field(5, exposures=6)
    n_exp[2, 1] = 2  # 2 of the field's typical 6 r exposures
    flags = _flags(mask, n_exp, xy)
    assert flags.tolist() == [0, 0, FLAG_BITS["low_coverage"], 0, 0]


def test_empty_catalog():
    mask, n_exp, xy = _field(0)
    assert _flags(mask, n_exp, xy).shape == (0,)


def test_flag_mask_decodes_names_and_rejects_unknown():
    flags = np.array([0, FLAG_BITS["edge"], FLAG_BITS["neighbour"] | FLAG_BITS["edge"]])
    assert flag_mask(flags, ["neighbour"]).tolist() == [False, False, True]
    assert flag_mask(flags, []).tolist() == [False, False, False]
    with pytest.raises(ValueError, match="unknown object flag 'edgy'"):
        flag_mask(flags, ["edgy"])


def test_store_attr_names_every_bit():
    attr = flag_bits_attr()
    assert set(attr) == {str(b) for b in FLAG_BITS.values()}
    assert attr["1"].startswith("edge:")
