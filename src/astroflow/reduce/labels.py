"""Attach catalog labels (star/galaxy) to detections by sky position.

A user's catalog may name its columns and classes its own way and come as ECSV, a FITS table
or CSV: ``data.labels_columns`` maps them onto ``ra``, ``dec`` [deg] and ``class``
(``star``/``galaxy``), so no one has to rewrite their catalog.
"""

from __future__ import annotations

import csv
import io
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


def _malformed_rows(path: str, fmt: str) -> tuple[str, list[int]]:
    """Text of an ECSV/CSV catalog without its malformed data rows, and their line numbers.

    Called only after astropy failed on the whole file: a catalog with a few broken rows (too
    few fields, text in a numeric column) should still label with its good rows. The column
    names and types come from the catalog's own header (read with no data rows); a row is
    malformed when it has the wrong number of fields or a numeric field that is not a number.
    """
    lines = Path(path).read_text().splitlines()
    comment = "#" if fmt == "ascii.ecsv" else None
    body = [i for i, line in enumerate(lines) if line.strip() and not (
        comment and line.lstrip().startswith(comment))]
    if not body:
        return "\n".join(lines), []
    names_at = body[0]
    head = lines[: names_at + 1]
    probe = Table.read("\n".join(head) + "\n", format=fmt)
    comma = fmt == "ascii.csv" or any("delimiter: ','" in line for line in head)
    delimiter = "," if comma else " "
    numeric = [probe[c].dtype.kind in "fiu" for c in probe.colnames]
    bad: list[int] = []
    for i in body[1:]:
        fields = next(csv.reader(io.StringIO(lines[i].strip()), delimiter=delimiter,
                                 skipinitialspace=True))
        ok = len(fields) == len(numeric)
        for value, is_number in zip(fields, numeric, strict=False):
            if ok and is_number:
                try:
                    float(value)
                except ValueError:
                    ok = False
        if not ok:
            bad.append(i)
    kept = [line for i, line in enumerate(lines) if i not in set(bad)]
    return "\n".join(kept) + "\n", [i + 1 for i in bad]


def read_labels(
    path: str, columns: dict | None = None, malformed: list[int] | None = None
) -> Table:
    """Read a labels catalog as a table of ``ra``, ``dec`` [deg] and ``class`` (star/galaxy).

    Parameters
    ----------
    path : str
        ECSV, CSV or FITS-table catalog.
    columns : dict, optional
        ``data.labels_columns``: ``format`` (``auto`` by suffix, ``ecsv``, ``csv``, ``fits``),
        the column names of ``ra``, ``dec`` and ``class``, and the class values meaning
        ``star`` and ``galaxy`` (any other value leaves an object unlabelled).
    malformed : list of int, optional
        When given, malformed data rows of an ECSV/CSV catalog are skipped and their 1-based
        line numbers appended here (the caller quarantines them), so a few broken rows do not
        fail the field; without it they raise.

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
        table = None
        if malformed is not None and fmt != "fits":
            try:
                text, bad = _malformed_rows(path, fmt)
                table = Table.read(text, format=fmt) if bad else None
            except Exception:  # the header itself is broken: report the original error
                table = None
        if table is None:
            raise ValueError(f"{path}: cannot read labels catalog as {fmt}: {exc}") from exc
        malformed.extend(bad)
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
