"""The exposure sheet: every file of a raw archive, what its headers say, read once.

Planning a survey must not reread every header on every invocation (at 10^6 files that is
hours). :func:`scan_archive` walks the archive (one ``stat`` per file), reads the headers of
new or changed files only (by size and modification time) with the block reader of
:mod:`astroflow.io.headers`, drops deleted files, and keeps the result in the sheet, a Parquet
file with one row per file (:class:`FrameInfo`). The sheet holds what the instrument profile
makes of each file's headers; it is rebuilt from scratch when the profile, or the code that
reads the headers, changes. What the
config makes of a row (:func:`judge`: shapes against ``instrument.amp_shape``, bands against
``instrument.bands``, ...) is decided anew each time, at no I/O cost, so a config edit never
rescans.

Every file under the archive root (hidden ones excepted) gets a row: a file that is not FITS
(recognised by content, not suffix), cannot be read or cannot be classified has ``problem``
set, so the plan can name it in the quarantine list instead of dropping it.

This module owns the sheet's format; ``astroflow inspect`` and the workflow's plan
(:mod:`astroflow.io.plan`) both read files through it, so they always agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from astroflow.io.headers import (
    SECTION_RE,
    FileHeaders,
    RawHeader,
    read_file_headers,
    section_shape,
)
from astroflow.io.profile import InstrumentProfile, load_profile

log = logging.getLogger(__name__)

#: The modules whose code decides a row: an edit to any of them rebuilds the sheet.
_ROW_CODE = ("archive.py", "headers.py", "profile.py")
#: Field names become file names and Snakemake wildcards: this is what they may hold.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_CELESTIAL = ("RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT", "SLON", "SLAT", "HPLN", "HPLT")
#: Log a progress line every this many header reads.
PROGRESS_EVERY = 5000


class FrameInfo(NamedTuple):
    """One row of the exposure sheet: what the headers of one raw file say.

    A named tuple: a 10^5-row sheet is read back in a fraction of a second.

    Attributes
    ----------
    path : str
        File path as found under the archive root.
    imagetyp : str or None
        Frame type by the instrument profile: ``object``, ``bias``, ``dark`` or ``flat``.
    field, band : str or None
        Field name (``OBJECT``) of a science frame; filter of a science frame or flat.
    expnum : int or None
        Exposure number, where the profile names a keyword for it.
    problem : str or None
        Why the file cannot be used whatever the config says, or None.
    how : str
        How the frame type was decided (``IMAGETYP='zero'``, ``file name``).
    exptime : float or None
        Exposure time [s] (``exptime_unit`` of the profile applied).
    date : str or None
        Observation date as the header gives it.
    shapes : str
        Shapes of the images that would be read as amplifiers, ``;``-joined, each named
        ``EXTNAME=`` first (``"AMP1=1024x528;AMP2=1024x528"``).
    datasecs : str
        Each of those images' data section (header ``TRIMSEC``/``DATASEC``, else the
        profile's fixed ``sections.datasec``; empty where neither gives one), ``;``-joined.
    has_wcs : bool
        Whether the primary or an image header holds a celestial WCS (CTYPE1/2).
    size, mtime_ns : int
        The file's size and modification time when it was read; a change of either rereads it.
    """

    path: str
    imagetyp: str | None
    field: str | None
    band: str | None
    expnum: int | None
    problem: str | None = None
    how: str = ""
    exptime: float | None = None
    date: str | None = None
    shapes: str = ""
    datasecs: str = ""
    has_wcs: bool = False
    size: int = -1
    mtime_ns: int = -1

    def images(self) -> list[tuple[str, tuple[int, ...], str]]:
        """``[(name, shape, data section), ...]`` of the images in :attr:`shapes`."""
        out = []
        sections = self.datasecs.split(";")
        for i, item in enumerate(filter(None, self.shapes.split(";"))):
            name, dims = item.rsplit("=", 1)
            out.append((name, tuple(int(d) for d in dims.split("x")),
                        sections[i] if i < len(sections) else ""))
        return out


def _has_wcs(header: RawHeader) -> bool:
    types = (str(header.get("CTYPE1", "")), str(header.get("CTYPE2", "")))
    return any(t.upper().startswith(_CELESTIAL) for t in types)


def _datasec(header: RawHeader, profile: InstrumentProfile) -> str:
    """The data section reduce will use: the header's, else the profile's fixed one, else ''."""
    for key in ("TRIMSEC", "DATASEC"):
        if key in header:
            return str(header[key]).strip().replace(";", ",")
    return profile.sections.get("datasec") or ""


def _needed(profile: InstrumentProfile, header: RawHeader, quantity: str) -> str | None:
    """Why ``quantity``'s keyword gives nothing: missing, blank or unparsable (None if set)."""
    if profile.get(header, quantity) is not None:
        return None
    key = profile.key(quantity) or quantity
    if key.upper() in header.malformed:
        return f"header keyword {key} cannot be parsed ({header.malformed[key.upper()]!r})"
    return f"missing header keyword {key}"


def facts(found: FileHeaders, profile: InstrumentProfile, size: int = -1,
          mtime_ns: int = -1) -> FrameInfo:
    """The sheet row of a file from its headers, by the profile (never raises)."""
    path = found.path
    if found.problem is not None or found.primary is None:
        return FrameInfo(path, None, None, None, None, found.problem or "no header",
                         "unreadable", size=size, mtime_ns=mtime_ns)
    primary = found.primary
    kind = profile.classify(primary, path)
    if kind.frame_type is None:
        return FrameInfo(path, None, None, None, None, kind.how, "unclassified",
                         size=size, mtime_ns=mtime_ns)
    images = [(h.name, h.shape, h.header) for h in found.images]
    if not images and profile.primary_pixels and found.hdus[0].shape:
        images = [("PRIMARY", found.hdus[0].shape, primary)]
    problems = []

    def text(quantity):
        value = profile.get(primary, quantity)
        return str(value).strip() if value is not None else None

    frame_type = kind.frame_type
    field = text("object") if frame_type == "object" else None
    band = text("filter") if frame_type in {"object", "flat"} else None
    needed = {"object": ("object", "filter", "exptime", "date"), "flat": ("filter", "exptime"),
              "dark": ("exptime",)}.get(frame_type, ())
    problems += [p for p in (_needed(profile, primary, q) for q in needed) if p]
    exptime = profile.get(primary, "exptime")
    if "exptime" in needed and exptime is not None and not (
        isinstance(exptime, float) and exptime > 0 and exptime == exptime
    ):  # a bias's exposure time (0) is never used
        problems.append(f"{profile.key('exptime')} {exptime!r} is not a positive number")
    if frame_type == "object" and profile.get(primary, "date") is not None:
        try:
            profile.mjd(primary)
        except ValueError as exc:
            problems.append(str(exc))
    if field and not SAFE_NAME.match(field):
        problems.append(f"{profile.key('object')} {field!r} is not a usable field name "
                        "(letters, digits and _ . + - only)")
    for name, _, header in images:
        gain_key = profile.key("gain")
        if profile.values["gain"] is None and gain_key not in header and gain_key not in primary:
            problems.append(f"[{name}] missing header keyword {gain_key}")
        if profile.sections["required"] and not profile.sections.get("datasec"):
            for key in ("DATASEC", "DETSEC"):
                if key not in header and not (key == "DATASEC" and "TRIMSEC" in header):
                    problems.append(f"[{name}] missing header keyword {key}")
    expnum = profile.get(primary, "expnum")
    return FrameInfo(
        path,
        frame_type,
        field,
        band,
        expnum if isinstance(expnum, int) and not isinstance(expnum, bool) else None,
        "; ".join(problems) or None,
        kind.how,
        exptime if isinstance(exptime, float) else None,
        text("date"),
        ";".join(f"{n}={'x'.join(str(d) for d in s)}" for n, s, _ in images),
        ";".join(_datasec(h, profile) for _, _, h in images),
        _has_wcs(primary) or any(_has_wcs(h) for _, _, h in images),
        size,
        mtime_ns,
    )


def walk_archive(raw_dir: str | Path) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` of every file under ``raw_dir``, sorted by path.

    Hidden files and folders (a leading ``.``) are left out; symbolic links are followed.
    """
    root = str(raw_dir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"raw archive directory {root} does not exist")
    out = []
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(entry.path)
                elif entry.is_file():
                    st = entry.stat()
                    out.append((entry.path, st.st_size, st.st_mtime_ns))
    out.sort()
    return out


def _sheet_key(profile: InstrumentProfile) -> str:
    """What a sheet's rows depend on besides the files: the profile and the code reading them."""
    digest = hashlib.sha256(json.dumps(profile.spec, sort_keys=True).encode())
    for name in _ROW_CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]


def _read_sheet(sheet: Path, digest: str) -> dict[str, FrameInfo]:
    """The rows of a sheet made with the same profile and code ({} otherwise)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(sheet)
    except (OSError, ValueError):
        return {}
    meta = table.schema.metadata or {}
    if meta.get(b"astroflow_sheet") != digest.encode():
        log.info("%s was made with another instrument profile or astroflow: rebuilding", sheet)
        return {}
    columns = table.to_pydict()
    rows = map(FrameInfo._make, zip(*(columns[n] for n in FrameInfo._fields), strict=True))
    return {row.path: row for row in rows}


def _write_sheet(sheet: Path, rows: list[FrameInfo], digest: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = FrameInfo._fields
    types = {"expnum": pa.int64(), "exptime": pa.float64(), "has_wcs": pa.bool_(),
             "size": pa.int64(), "mtime_ns": pa.int64()}
    schema = pa.schema([(n, types.get(n, pa.string())) for n in names],
                       metadata={"astroflow_sheet": digest})
    table = pa.table({n: [getattr(r, n) for r in rows] for n in names}, schema=schema)
    sheet.parent.mkdir(parents=True, exist_ok=True)
    tmp = sheet.with_name(f".{sheet.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, sheet)


def scan_archive(
    raw_dir: str | Path,
    profile: InstrumentProfile | str | None = None,
    sheet: str | Path | None = None,
) -> list[FrameInfo]:
    """Every file under ``raw_dir`` (recursively), classified by header, sorted by path.

    Parameters
    ----------
    raw_dir : str or Path
        Archive root. Layout below it does not matter, nor do file names' suffixes.
    profile : InstrumentProfile or str, optional
        Instrument profile (or its name/path, as ``instrument.profile``); default the demo
        camera's conventions.
    sheet : str or Path, optional
        The exposure sheet to update: files whose size and modification time match its row
        are not read again; the sheet is rewritten when anything changed.

    Returns
    -------
    list of FrameInfo
        One per file; unusable files are included with ``problem`` set so the caller can
        report them rather than silently dropping them.
    """
    if not isinstance(profile, InstrumentProfile):
        profile = load_profile(profile)
    start = time.perf_counter()
    found = walk_archive(raw_dir)
    digest = _sheet_key(profile)
    known = _read_sheet(Path(sheet), digest) if sheet and Path(sheet).exists() else {}
    rows, n_read = [], 0
    for path, size, mtime_ns in found:
        row = known.get(path)
        if row is None or (row.size, row.mtime_ns) != (size, mtime_ns):
            row = facts(read_file_headers(path), profile, size, mtime_ns)
            n_read += 1
            if n_read % PROGRESS_EVERY == 0:
                log.info("read the headers of %d new or changed file(s) of %d", n_read,
                         len(found))
        rows.append(row)
    n_gone = len(known) - (len(found) - n_read)
    if sheet and (n_read or n_gone or not Path(sheet).exists()):
        _write_sheet(Path(sheet), rows, digest)
    log.info(
        "archive %s: %d file(s), %d read, %d gone since the sheet, %d with problems (%.1f s)",
        raw_dir, len(rows), n_read, n_gone, sum(1 for r in rows if r.problem),
        time.perf_counter() - start,
    )
    return rows


def _inside(section: str, shape: tuple[int, int]) -> bool:
    """Whether a well-formed FITS section lies within an image of ``shape`` (ny, nx)."""
    x1, x2, y1, y2 = (int(g) for g in SECTION_RE.match(section).groups())
    return x2 <= shape[1] and y2 <= shape[0]


def judge(info: FrameInfo, instrument: dict) -> str | None:
    """Why ``info``'s file cannot be used under this ``instrument`` config (None: usable).

    Adds to the profile's verdict (:attr:`FrameInfo.problem`) what depends on the config:
    the number and shape of the amplifier images (a data section, from the header or the
    profile, must span ``instrument.amp_shape``; without one the raw image must be
    ``amp_shape`` plus ``overscan_cols``, as reduce's default sections are), the band against
    ``instrument.bands`` (a band from a broken keyword never reaches a file name), and a
    science frame's WCS. What only the pixels or a full geometry check can tell (a section
    outside its array, an overscan overlapping the data) is left to reduce.
    """
    if info.imagetyp is None:
        return info.problem
    problems = [info.problem] if info.problem else []
    images = info.images()
    n_amps = int(instrument["n_amps"])
    amp = (int(instrument["amp_shape"][0]), int(instrument["amp_shape"][1]))
    raw = (amp[0], amp[1] + int(instrument["overscan_cols"]))
    for name, shape, _ in images:
        if len(shape) != 2:
            problems.append(f"[{name}] is a {len(shape)}-d image {shape}: amplifiers are 2-d "
                            "images")
    planes = [(n, s, d) for n, s, d in images if len(s) == 2]
    if len(planes) != n_amps:
        problems.append(f"wrong shape: {len(planes)} 2-d image(s), expected instrument.n_amps"
                        f" = {n_amps}")
    for name, shape, datasec in planes:
        if not datasec:  # the default sections: amp_shape plus the overscan columns
            if shape != raw:
                problems.append(f"[{name}] wrong shape {shape}, expected {raw} "
                                "(instrument.amp_shape + overscan_cols)")
        elif section_shape(datasec) is None:
            problems.append(f"[{name}] malformed data section {datasec!r}")
        elif not _inside(datasec, shape):
            problems.append(f"[{name}] wrong shape {shape}: data section {datasec} lies "
                            "outside the image")
        elif section_shape(datasec) != amp:
            problems.append(f"[{name}] data section {datasec} spans {section_shape(datasec)}, "
                            f"expected instrument.amp_shape {amp}")
    bands = list(instrument["bands"])
    if info.band is not None and info.band not in bands:
        problems.append(f"band {info.band!r} is not one of instrument.bands {bands}")
    if info.imagetyp == "object" and not info.has_wcs:
        problems.append("missing or invalid WCS (no celestial CTYPE1/CTYPE2)")
    return "; ".join(problems) or None


#: The row fields :func:`judge` reads.
_JUDGED = operator.attrgetter("imagetyp", "problem", "shapes", "datasecs", "band", "has_wcs")


def judge_all(
    rows: Iterable[FrameInfo], instrument: dict
) -> Iterator[tuple[FrameInfo, str | None]]:
    """``(row, judge(row))`` for every row, judging each distinct set of header facts once
    (a survey's 10^5 files share a handful)."""
    verdicts: dict[tuple, str | None] = {}
    for row in rows:
        key = _JUDGED(row)
        if key not in verdicts:
            verdicts[key] = judge(row, instrument)
        yield row, verdicts[key]
