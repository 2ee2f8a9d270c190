"""Object flags: a bitmask per object saying what is wrong with its cutout.

Computed by the field job from what it already holds (so the same on the demo survey and on
own archives): the field's combined mask planes (bit 1 bad/saturated/bleed, 2 cosmic ray,
4 off-detector; a combined pixel carries bits only where no exposure gave it clean), the
number of exposures of each band covering each object, and the detection catalog. The
thresholds are ``reduce.flags`` (docs/reduce.md); the bits are written into the object table's
``flags`` column and the store's ``flag_bits`` attribute (docs/data_contracts.md).

Train and evaluate decode the column with :func:`flag_mask` (``train.exclude_flags``,
``evaluate.exclude_flags``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from astroflow.reduce.calibrate import MASK_BAD, MASK_COSMIC, MASK_OFF_DETECTOR

#: Flag name -> bit value, in bit order.
FLAG_BITS: dict[str, int] = {
    "edge": 1,
    "bad_pixels": 2,
    "saturated_core": 4,
    "cosmic_ray_core": 8,
    "band_missing": 16,
    "low_coverage": 32,
    "neighbour": 64,
}

#: What each flag means (the store's ``flag_bits`` attribute and docs/data_contracts.md).
FLAG_MEANINGS: dict[str, str] = {
    "edge": "off-detector (mask bit 4) fraction of the central region above "
    "reduce.flags.max_edge_fraction in a band with exposures",
    "bad_pixels": "bad/saturated/bleed (mask bit 1) fraction of the central region above "
    "reduce.flags.max_bad_fraction in some band (bad columns, bleed trails)",
    "saturated_core": "a bad/saturated/bleed pixel (mask bit 1) within "
    "reduce.flags.core_radius_pix of the centre in some band",
    "cosmic_ray_core": "a cosmic-ray pixel left in the combination (mask bit 2) within "
    "reduce.flags.core_radius_pix of the centre in some band",
    "band_missing": "a band with no exposure covering the object",
    "low_coverage": "a band with fewer exposures than reduce.flags.min_coverage_fraction "
    "times the field's median for that band",
    "neighbour": "another detection within reduce.flags.neighbour_radius_arcsec",
}


@dataclass(frozen=True)
class FlagSettings:
    """Thresholds of the flags (``reduce.flags``; defaults in the config schema)."""

    central_size_pix: int
    core_radius_pix: float
    max_edge_fraction: float
    max_bad_fraction: float
    min_coverage_fraction: float
    neighbour_radius_arcsec: float

    @classmethod
    def from_config(cls, section: dict) -> FlagSettings:
        """From the resolved ``reduce.flags`` section."""
        return cls(**{name: section[name] for name in cls.__dataclass_fields__})


def flag_bits_attr() -> dict[str, str]:
    """``{"<bit value>": "<name>: <meaning>"}``: the store's ``flag_bits`` attribute."""
    return {str(bit): f"{name}: {FLAG_MEANINGS[name]}" for name, bit in FLAG_BITS.items()}


def bits_of(names: Iterable[str]) -> int:
    """The OR of the named flags' bits.

    Raises
    ------
    ValueError
        Naming an unknown flag and the known ones.
    """
    value = 0
    for name in names:
        if name not in FLAG_BITS:
            raise ValueError(f"unknown object flag {name!r}; known flags: {list(FLAG_BITS)}")
        value |= FLAG_BITS[name]
    return value


def flag_mask(flags: np.ndarray, names: Iterable[str]) -> np.ndarray:
    """Which objects carry any of the named flags (bool array)."""
    return (np.asarray(flags, dtype=np.int64) & bits_of(names)) != 0


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    """``{name: objects carrying it}`` of every flag."""
    flags = np.asarray(flags, dtype=np.int64)
    return {name: int(((flags & bit) != 0).sum()) for name, bit in FLAG_BITS.items()}


def object_flags(
    mask: np.ndarray,
    n_exposures: np.ndarray,
    xy_pix: np.ndarray,
    pixel_scale_arcsec: float,
    settings: FlagSettings,
) -> np.ndarray:
    """The ``flags`` bitmask of every object (int32, see :data:`FLAG_BITS`).

    Parameters
    ----------
    mask : ndarray (N, bands, S, S) uint8
        The field's combined mask planes, cutout centre at ``(S//2, S//2)``.
    n_exposures : ndarray (N, bands) int
        Exposures of each band covering each object.
    xy_pix : ndarray (N, 2)
        Detection-frame positions [pixels] of the detection catalog.
    pixel_scale_arcsec : float
        Pixel scale of the detection frame.
    settings : FlagSettings
    """
    n_exposures = np.asarray(n_exposures)
    observed = n_exposures > 0  # (N, bands): bands whose mask says something
    central = _central(mask, settings.central_size_pix)
    core = _core(mask, settings.core_radius_pix)
    flags = np.zeros(len(mask), np.int32)
    tests = {
        "edge": _fraction_above(central, MASK_OFF_DETECTOR, observed, settings.max_edge_fraction),
        "bad_pixels": _fraction_above(central, MASK_BAD, observed, settings.max_bad_fraction),
        "saturated_core": _any_in(core, MASK_BAD, observed),
        "cosmic_ray_core": _any_in(core, MASK_COSMIC, observed),
        "band_missing": (~observed).any(axis=1),
        "low_coverage": _low_coverage(n_exposures, settings.min_coverage_fraction),
        "neighbour": _has_neighbour(
            xy_pix, settings.neighbour_radius_arcsec / pixel_scale_arcsec
        ),
    }
    for name, hit in tests.items():
        flags[hit] |= FLAG_BITS[name]
    return flags


def _central(mask: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` pixels of each cutout (the whole cutout if smaller)."""
    side = mask.shape[-1]
    size = min(int(size), side)
    start = side // 2 - size // 2
    return mask[..., start : start + size, start : start + size]


def _core(mask: np.ndarray, radius: float) -> np.ndarray:
    """(N, bands, k) mask pixels within ``radius`` of the cutout centre."""
    side = mask.shape[-1]
    yy, xx = np.mgrid[:side, :side] - side // 2
    return mask[..., np.hypot(yy, xx) <= radius]


def _fraction_above(
    central: np.ndarray, bit: int, observed: np.ndarray, limit: float
) -> np.ndarray:
    """Objects where some observed band has more than ``limit`` of ``central`` with ``bit``."""
    if central.size == 0:
        return np.zeros(len(central), bool)
    fraction = ((central & bit) != 0).mean(axis=(-2, -1))  # (N, bands)
    return ((fraction > limit) & observed).any(axis=1)


def _any_in(core: np.ndarray, bit: int, observed: np.ndarray) -> np.ndarray:
    """Objects where some observed band has ``bit`` on a core pixel."""
    return (((core & bit) != 0).any(axis=-1) & observed).any(axis=1)


def _low_coverage(n_exposures: np.ndarray, fraction: float) -> np.ndarray:
    """Objects with a band covered by some exposures, but fewer than ``fraction`` times the
    field's median number in that band (the median over the objects it covers)."""
    low = np.zeros(n_exposures.shape, bool)
    for k in range(n_exposures.shape[1]):
        counts = n_exposures[:, k]
        if (counts > 0).any():
            typical = np.median(counts[counts > 0])
            low[:, k] = (counts > 0) & (counts < fraction * typical)
    return low.any(axis=1)


def _has_neighbour(xy_pix: np.ndarray, radius_pix: float) -> np.ndarray:
    """Objects with another detection within ``radius_pix``."""
    xy_pix = np.asarray(xy_pix, dtype=np.float64).reshape(-1, 2)
    hit = np.zeros(len(xy_pix), bool)
    if len(xy_pix) < 2 or radius_pix <= 0:
        return hit
    pairs = cKDTree(xy_pix).query_pairs(radius_pix, output_type="ndarray")
    hit[pairs.ravel()] = True
    return hit
