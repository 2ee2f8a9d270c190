"""Scan a raw archive by headers, so a workflow can group a user's files by field.

Only primary headers are read (fast on thousands of files). Frames are classified by
``IMAGETYP``, never by file name, because real archives name files in many ways.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from astroflow.io.fits_read import FrameError, read_primary_header

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz")


@dataclass(frozen=True)
class FrameInfo:
    """What the headers say about one raw file.

    Attributes
    ----------
    path : str
        File path as found under the archive root.
    imagetyp : str or None
        Normalised frame type: ``object``, ``bias``, ``dark`` or ``flat``.
    field : str or None
        ``OBJECT`` of a science frame (the field name).
    band : str or None
        ``FILTER`` (None for bias/dark).
    expnum : int or None
        ``EXPNUM``.
    problem : str or None
        Why the file cannot be used, or None when it looks usable.
    """

    path: str
    imagetyp: str | None
    field: str | None
    band: str | None
    expnum: int | None
    problem: str | None = None


def normalise_imagetyp(value: object) -> str | None:
    """Map the many spellings of IMAGETYP to ``object|bias|dark|flat`` (None if unknown)."""
    text = str(value).strip().lower()
    if text in {"object", "science", "light"}:
        return "object"
    if text in {"bias", "zero"}:
        return "bias"
    if text == "dark":
        return "dark"
    if "flat" in text:
        return "flat"
    return None


def frame_info(path: str | Path) -> FrameInfo:
    """Classify one file by its primary header; never raises for a bad file."""
    path = str(path)
    try:
        header = read_primary_header(path)
    except FrameError as exc:
        return FrameInfo(path, None, None, None, None, exc.reason)
    imagetyp = normalise_imagetyp(header.get("IMAGETYP", ""))
    if imagetyp is None:
        return FrameInfo(
            path, None, None, None, None, f"unknown or missing IMAGETYP {header.get('IMAGETYP')!r}"
        )
    field = header.get("OBJECT")
    band = header.get("FILTER")
    try:
        expnum = int(header["EXPNUM"]) if "EXPNUM" in header else None
    except (TypeError, ValueError):
        expnum = None
    problem = None
    if imagetyp == "object" and not field:
        problem = "science frame without OBJECT (field name)"
    elif imagetyp in {"object", "flat"} and not band:
        problem = "missing header keyword FILTER"
    return FrameInfo(
        path,
        imagetyp,
        str(field).strip() if field and imagetyp == "object" else None,
        str(band).strip() if band and imagetyp in {"object", "flat"} else None,
        expnum,
        problem,
    )


def scan_archive(raw_dir: str | Path) -> list[FrameInfo]:
    """Every FITS file under ``raw_dir`` (recursively), classified by header, sorted by path.

    Parameters
    ----------
    raw_dir : str or Path
        Archive root. Layout below it does not matter.

    Returns
    -------
    list of FrameInfo
        One per file; unusable files are included with ``problem`` set so the caller can
        report them rather than silently dropping them.
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"raw archive directory {root} does not exist")
    paths = sorted(
        p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES)
    )
    infos = []
    for count, path in enumerate(paths, start=1):
        infos.append(frame_info(path))
        if count % 500 == 0:
            log.info("scanned %d/%d headers", count, len(paths))
    n_bad = sum(1 for i in infos if i.problem)
    log.info("scanned %d files under %s (%d with problems)", len(infos), root, n_bad)
    return infos
