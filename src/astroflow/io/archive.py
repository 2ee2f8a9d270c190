"""Scan a raw archive by headers, so a workflow can group a user's files by field.

Only primary headers are read (fast on thousands of files). Frames are classified as the
instrument profile says (:mod:`astroflow.io.profile`): by an image-type keyword (``IMAGETYP``
for the demo camera) and, where the profile allows it, by file-name patterns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from astroflow.io.fits_read import FrameError, read_primary_header
from astroflow.io.profile import InstrumentProfile, load_profile

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


def normalise_imagetyp(value: object, profile: InstrumentProfile | None = None) -> str | None:
    """Map an image-type value to ``object|bias|dark|flat`` by the profile (None if unknown)."""
    return (profile or load_profile()).imagetyp_of(value)


def frame_info(path: str | Path, profile: InstrumentProfile | None = None) -> FrameInfo:
    """Classify one file by its primary header (and name), never raising for a bad file."""
    profile = profile or load_profile()
    path = str(path)
    try:
        header = read_primary_header(path)
    except FrameError as exc:
        return FrameInfo(path, None, None, None, None, exc.reason)
    imagetyp = profile.classify(header, path).frame_type
    if imagetyp is None:
        return FrameInfo(path, None, None, None, None, profile.unknown_reason(header))
    field = profile.get(header, "object")
    band = profile.get(header, "filter")
    expnum_value = profile.get(header, "expnum")
    try:
        expnum = int(expnum_value) if expnum_value is not None else None
    except (TypeError, ValueError):
        expnum = None
    problem = None
    if imagetyp == "object" and not field:
        problem = f"science frame without {profile.key('object')} (field name)"
    elif imagetyp in {"object", "flat"} and not band:
        problem = f"missing header keyword {profile.key('filter')}"
    return FrameInfo(
        path,
        imagetyp,
        str(field).strip() if field and imagetyp == "object" else None,
        str(band).strip() if band and imagetyp in {"object", "flat"} else None,
        expnum,
        problem,
    )


def scan_archive(
    raw_dir: str | Path, profile: InstrumentProfile | str | None = None
) -> list[FrameInfo]:
    """Every FITS file under ``raw_dir`` (recursively), classified by header, sorted by path.

    Parameters
    ----------
    raw_dir : str or Path
        Archive root. Layout below it does not matter.
    profile : InstrumentProfile or str, optional
        Instrument profile (or its name/path, as ``instrument.profile``); default the demo
        camera's conventions.

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
    if not isinstance(profile, InstrumentProfile):
        profile = load_profile(profile)
    infos = []
    for count, path in enumerate(paths, start=1):
        infos.append(frame_info(path, profile))
        if count % 500 == 0:
            log.info("scanned %d/%d headers", count, len(paths))
    n_bad = sum(1 for i in infos if i.problem)
    log.info("scanned %d files under %s (%d with problems)", len(infos), root, n_bad)
    return infos
