"""Attach catalog labels (star/galaxy) to detections by sky position."""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

#: Class encoding used everywhere downstream.
LABEL_CODES = {"galaxy": 1, "star": 0}
UNLABELLED = -1


def read_labels(path: str) -> Table:
    """Read the labels ECSV (``ra``, ``dec`` [deg], ``class``), checking its columns."""
    table = Table.read(path, format="ascii.ecsv")
    missing = [c for c in ("ra", "dec", "class") if c not in table.colnames]
    if missing:
        raise ValueError(f"{path}: labels catalog lacks column(s) {missing}")
    return table


def match_labels(
    ra_deg: np.ndarray, dec_deg: np.ndarray, labels: Table, radius_arcsec: float
) -> np.ndarray:
    """``label`` per detection: 1 galaxy, 0 star, -1 when no catalog entry lies within radius.

    Each detection takes its nearest catalog entry; unlabelled detections are kept (-1).
    """
    out = np.full(len(ra_deg), UNLABELLED, np.int8)
    if len(ra_deg) == 0 or len(labels) == 0:
        return out
    det = SkyCoord(np.asarray(ra_deg) * u.deg, np.asarray(dec_deg) * u.deg)
    cat = SkyCoord(
        np.asarray(labels["ra"], float) * u.deg, np.asarray(labels["dec"], float) * u.deg
    )
    index, sep2d, _ = det.match_to_catalog_sky(cat)
    codes = np.array(
        [LABEL_CODES.get(str(c).strip().lower(), UNLABELLED) for c in labels["class"]], np.int8
    )
    close = sep2d.to_value(u.arcsec) <= radius_arcsec
    out[close] = codes[index[close]]
    return out
