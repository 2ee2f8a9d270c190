"""Attach catalog labels (star/galaxy, and optionally galaxy morphology) to detections.

A user's catalog may name its columns and classes its own way and come as ECSV, a FITS table
or CSV: ``data.labels_columns`` maps them onto ``ra``, ``dec`` [deg] and ``class``
(``star``/``galaxy``), so no one has to rewrite their catalog. Two columns are optional: a
Sersic index ``sersic_n`` and an ellipticity ``ellipticity`` (``|g| = (1 - q) / (1 + q)``),
the targets of the morphology task. A catalog without them labels classes only; a mapping that
names a column the catalog lacks is an error.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from astroflow.sky import unit_vectors

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
    "sersic_n": "sersic_n",
    "ellipticity": "ellipticity",
}
#: Optional morphology columns of a labels catalog (``data.labels_columns`` keys) and the
#: object-table columns they become (the table's own ``ellipticity`` is the measured one).
MORPHOLOGY_COLUMNS = {"sersic_n": "label_sersic_n", "ellipticity": "label_ellipticity"}
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
    # Morphology columns are optional under their default names; a mapped name must exist.
    for role in MORPHOLOGY_COLUMNS:
        col = columns.get(role)
        if col and (col in table.colnames or col != DEFAULT_COLUMNS[role]):
            names[role] = col
    missing = [f"{col!r} ({role})" for role, col in names.items() if col not in table.colnames]
    if missing:
        raise ValueError(
            f"{path}: labels catalog lacks column(s) {', '.join(missing)}; "
            f"it has {table.colnames} (set data.labels_columns)"
        )
    morphology = {role: names[role] for role in MORPHOLOGY_COLUMNS if role in names}
    for role, col in morphology.items():
        if table[col].dtype.kind not in "fiu":
            raise ValueError(
                f"{path}: labels catalog column {col!r} ({role}) is not numeric "
                f"({table[col].dtype}); use NaN or an empty value for unknown"
            )
    if names == {"ra": "ra", "dec": "dec", "class": "class", **{r: r for r in morphology}} and (
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
    for role, col in morphology.items():
        out[role] = np.ma.filled(np.ma.asarray(table[col], dtype=float), np.nan)
    return out


def match_labels(
    ra_deg: np.ndarray, dec_deg: np.ndarray, labels: Table, radius_arcsec: float
) -> np.ndarray:
    """``label`` per detection: 1 galaxy, 0 star, -1 when no catalog entry lies within radius.

    Each detection takes its nearest catalog entry; unlabelled detections are kept (-1).
    """
    return match_catalog(ra_deg, dec_deg, labels, radius_arcsec)["label"]


def match_catalog(
    ra_deg: np.ndarray, dec_deg: np.ndarray, labels: Table, radius_arcsec: float
) -> dict[str, np.ndarray]:
    """The label columns of each detection, from its nearest catalog entry (matched once):
    ``label`` as :func:`match_labels` gives it, then ``label_sersic_n`` and
    ``label_ellipticity``, NaN where no entry lies within the radius, where the catalog has
    no such column, or where the entry's value is missing or not finite."""
    out = unlabelled_columns(len(ra_deg))
    rows = _rows_near(ra_deg, dec_deg, labels, radius_arcsec)
    if rows.size == 0:  # no detections, or no catalog rows near them
        return out
    labels = labels[rows]
    index, close = _nearest(ra_deg, dec_deg, labels, radius_arcsec)
    codes = np.array(
        [LABEL_CODES.get(str(c).strip().lower(), UNLABELLED) for c in labels["class"]], np.int8
    )
    out["label"][close] = codes[index[close]]
    for role in (role for role in MORPHOLOGY_COLUMNS if role in labels.colnames):
        values = np.ma.filled(np.ma.asarray(labels[role], dtype=float), np.nan)
        values[~np.isfinite(values)] = np.nan
        out[MORPHOLOGY_COLUMNS[role]][close] = values[index[close]]
    return out


def unlabelled_columns(n: int) -> dict[str, np.ndarray]:
    """The label columns of ``n`` objects without a labels catalog (``data.labels: null``):
    ``label`` -1 and NaN morphology, the same columns :func:`match_catalog` gives."""
    out = {"label": np.full(n, UNLABELLED, np.int8)}
    out.update({col: np.full(n, np.nan) for col in MORPHOLOGY_COLUMNS.values()})
    return out


def _rows_near(
    ra_deg: np.ndarray, dec_deg: np.ndarray, labels: Table, radius_arcsec: float
) -> np.ndarray:
    """Rows of ``labels`` that may lie within the radius of a detection (all that do).

    A labels catalog may cover a whole survey (millions of rows) while a field job matches a
    few hundred detections: matching against all of it built a sky tree of every row in every
    job (~1 s per million rows). Rows outside the cap around the detections' mean direction
    that holds them all, widened by the radius, cannot be within the radius of any detection
    (triangle inequality), so the match is the same without them.
    """
    if len(ra_deg) == 0 or len(labels) == 0:
        return np.zeros(0, np.int64)
    detections = unit_vectors(ra_deg, dec_deg)
    centre = detections.sum(axis=0)
    norm = np.linalg.norm(centre)
    if norm < 1e-9:  # detections all round the sky: keep everything
        return np.arange(len(labels))
    centre /= norm
    spread = np.arccos(np.clip(detections @ centre, -1.0, 1.0)).max()
    cap = spread + np.radians(radius_arcsec / 3600.0) + 1e-9  # + rounding of the dot products
    if cap >= np.pi:
        return np.arange(len(labels))
    rows = unit_vectors(labels["ra"], labels["dec"]) @ centre >= np.cos(cap)
    return np.flatnonzero(rows)


def _nearest(
    ra_deg: np.ndarray, dec_deg: np.ndarray, labels: Table, radius_arcsec: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index of each detection's nearest catalog entry, and whether it lies within radius."""
    det = SkyCoord(np.asarray(ra_deg) * u.deg, np.asarray(dec_deg) * u.deg)
    cat = SkyCoord(
        np.asarray(labels["ra"], float) * u.deg, np.asarray(labels["dec"], float) * u.deg
    )
    index, sep2d, _ = det.match_to_catalog_sky(cat)
    return index, sep2d.to_value(u.arcsec) <= radius_arcsec
