"""Attach catalog labels (star/galaxy) to detections by sky position.

A user's catalog may name its columns and classes its own way and come as ECSV, a FITS table
or CSV: ``data.labels_columns`` maps them onto ``ra``, ``dec`` [deg] and ``class``
(``star``/``galaxy``), so no one has to rewrite their catalog.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

#: Class encoding used everywhere downstream.
LABEL_CODES = {"galaxy": 1, "star": 0}
UNLABELLED = -1


#: The mapping of a catalog that already uses the contract's names (the demo's labels.ecsv).
DEFAULT_COLUMNS = {
    "format": "auto",
    "ra": "ra",
    "dec": "dec",
    "class": "class",
    "star": ["star"],
    "galaxy": ["galaxy"],
}
_FORMATS = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".fits": "fits", ".fit": "fits"}


def labels_columns(cfg: dict) -> dict:
    """The labels-catalog mapping of a config (``data.labels_columns``), defaults filled."""
    given = ((cfg or {}).get("data") or {}).get("labels_columns") or {}
    return {**DEFAULT_COLUMNS, **given}


def read_labels(path: str, columns: dict | None = None) -> Table:
    """Read a labels catalog as a table of ``ra``, ``dec`` [deg] and ``class`` (star/galaxy).

    Parameters
    ----------
    path : str
        ECSV, CSV or FITS-table catalog.
    columns : dict, optional
        ``data.labels_columns``: ``format`` (``auto`` by suffix, ``ecsv``, ``csv``, ``fits``),
        the column names of ``ra``, ``dec`` and ``class``, and the class values meaning
        ``star`` and ``galaxy`` (any other value leaves an object unlabelled).

    Raises
    ------
    ValueError
        When the file cannot be read in that format or lacks a mapped column (naming both).
    """
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    fmt = columns["format"]
    if fmt == "auto":
        suffix = "".join(s.lower() for s in Path(path).suffixes[-1:])
        fmt = _FORMATS.get(suffix, "ascii.ecsv")
    else:
        fmt = {"ecsv": "ascii.ecsv", "csv": "ascii.csv", "fits": "fits"}[fmt]
    try:
        table = Table.read(path, format=fmt)
    except Exception as exc:  # astropy raises many types on a malformed catalog
        raise ValueError(f"{path}: cannot read labels catalog as {fmt}: {exc}") from exc
    names = {"ra": columns["ra"], "dec": columns["dec"], "class": columns["class"]}
    missing = [f"{col!r} ({role})" for role, col in names.items() if col not in table.colnames]
    if missing:
        raise ValueError(
            f"{path}: labels catalog lacks column(s) {', '.join(missing)}; "
            f"it has {table.colnames} (set data.labels_columns)"
        )
    if names == {"ra": "ra", "dec": "dec", "class": "class"} and (
        columns["star"],
        columns["galaxy"],
    ) == (["star"], ["galaxy"]):
        return table
    star = {str(v).strip().lower() for v in columns["star"]}
    galaxy = {str(v).strip().lower() for v in columns["galaxy"]}

    def to_class(value: object) -> str:
        text = str(value).strip().lower()
        return "star" if text in star else "galaxy" if text in galaxy else "unknown"

    out = Table()
    out["ra"] = np.asarray(table[names["ra"]], float)
    out["dec"] = np.asarray(table[names["dec"]], float)
    out["class"] = [to_class(v) for v in table[names["class"]]]
    return out


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
