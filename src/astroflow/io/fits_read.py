"""Read raw multi-amplifier camera frames, tolerating what real archives contain.

Real archives hold integer pixels with BZERO/BSCALE (astropy applies them), one image extension
per amplifier, sometimes tile-compressed (``.fits.fz``, CompImageHDU), sometimes headers with
non-standard cards. Reading fixes what astropy can fix silently and turns everything else
(empty, truncated, unreadable files) into a :class:`FrameError` naming file, HDU and problem.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.utils.exceptions import AstropyUserWarning

from astroflow.io.headers import SECTION_RE


class FrameError(Exception):
    """A raw frame (or one of its extensions) cannot be used.

    Carries the quarantine entry fields so the caller can set the frame aside and go on.

    Parameters
    ----------
    path : str or Path
        The offending file.
    hdu : str or None
        Extension name (``"AMP2"``, ``"PRIMARY"``) or None when the whole file is at fault.
    reason : str
        What is wrong, in words a user can act on.
    """

    def __init__(self, path: str | Path, hdu: str | None, reason: str):
        self.path = str(path)
        self.hdu = hdu
        self.reason = reason
        where = f"{self.path}[{hdu}]" if hdu else self.path
        super().__init__(f"{where}: {reason}")

    def to_entry(self) -> dict:
        """The quarantine-list entry ``{path, hdu, reason}`` of the data contract."""
        return {"path": self.path, "hdu": self.hdu, "reason": self.reason}


@dataclass
class AmpRaw:
    """One amplifier's raw pixels in ADU (BZERO/BSCALE applied) and its header.

    ``index`` is the amplifier's place among the file's image extensions (0-based) and
    ``primary`` the file's primary header: cameras that write one image keep GAIN or the WCS
    there, and an instrument profile may place an amplifier by its index.
    """

    name: str
    data_adu: np.ndarray
    header: fits.Header
    index: int = 0
    primary: fits.Header | None = None


@dataclass
class RawFrame:
    """A raw exposure or calibration frame: primary header and its amplifier extensions."""

    path: str
    primary: fits.Header
    amps: list[AmpRaw] = field(default_factory=list)


def parse_section(text: str, path: str | Path = "?", hdu: str | None = None) -> tuple[slice, slice]:
    """FITS section ``[x1:x2,y1:y2]`` (1-based, inclusive) -> numpy ``(yslice, xslice)``.

    Raises
    ------
    FrameError
        If the section is malformed or reversed (flipped readout is not supported).
    """
    match = SECTION_RE.match(str(text))
    if not match:
        raise FrameError(path, hdu, f"malformed section {text!r}, expected [x1:x2,y1:y2]")
    x1, x2, y1, y2 = (int(g) for g in match.groups())
    if x2 < x1 or y2 < y1 or min(x1, y1) < 1:
        raise FrameError(path, hdu, f"reversed or non-positive section {text!r} not supported")
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (provenance of every input), read through one reused
    256 KiB buffer (``hashlib.file_digest``), so hashing costs no memory worth counting."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _open(path: Path) -> fits.HDUList:
    """Open a FITS file, mapping empty/unreadable/truncated files to FrameError."""
    if not path.exists():
        raise FrameError(path, None, "file does not exist")
    if path.stat().st_size == 0:
        raise FrameError(path, None, "empty file (0 bytes)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
        except Exception as exc:  # astropy raises OSError, ValueError, ... on garbage
            raise FrameError(path, None, f"unreadable FITS file: {exc}") from exc
    for w in caught:
        if "truncated" in str(w.message):
            hdul.close()
            raise FrameError(path, None, f"truncated file: {w.message}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        hdul.verify("silentfix+ignore")
    return hdul


def _clean_header(header: fits.Header) -> fits.Header:
    """A copy of ``header`` with cards astropy cannot parse dropped (non-standard keywords)."""
    out = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        for card in header.cards:
            try:
                card.verify("silentfix")
                out.append((card.keyword, card.value, card.comment), end=True)
            except Exception:  # an unfixable card: skip it, keep the rest of the header
                continue
    return out


def _with_blank_as_nan(data: np.ndarray, header: fits.Header) -> np.ndarray:
    """Pixels as float32 ADU with BLANK (undefined) pixels as NaN.

    astropy applies BLANK only when it scales to float; integer pixels it keeps as integers
    (``BZERO = 32768`` 16-bit data read as uint16) come back with BLANK as an ordinary value
    (0 ADU for BLANK = -32768), which calibration would take for a real measurement. Here those
    pixels become NaN, which calibration masks as bad.
    """
    out = np.asarray(data, dtype=np.float32)
    blank = header.get("BLANK")
    if blank is None or data.dtype.kind not in "iu" or int(header.get("BITPIX", 0)) <= 0:
        return out
    value = int(blank) * float(header.get("BSCALE", 1)) + float(header.get("BZERO", 0))
    undefined = np.asarray(data) == value
    if undefined.any():
        out = out.copy() if out is data else out
        out[undefined] = np.nan
    return out


def read_primary_header(path: str | Path) -> fits.Header:
    """The primary header only (archive scanning), non-standard cards fixed or dropped.

    Remembered per file (path, size and modification time), since sorting, checking and
    calibrating an exposure each ask for it and opening and verifying a FITS file costs more
    than the header is worth; callers get their own copy.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return _read_primary_header(path, -1, -1)  # raises the file-named FrameError
    return _read_primary_header(path, stat.st_size, stat.st_mtime_ns).copy()


@functools.lru_cache(maxsize=1024)
def _read_primary_header(path: Path, size: int, mtime_ns: int) -> fits.Header:
    with _open(path) as hdul:
        return _clean_header(hdul[0].header)


def read_frame(
    path: str | Path, amp_index: int | None = None, primary_pixels: bool = False
) -> RawFrame:
    """Read a raw frame: primary header and its image extensions (amplifiers).

    Image extensions (ImageHDU or CompImageHDU) with 2-d data are returned in file order, named
    by ``EXTNAME`` (``AMP<k>`` in the contract; ``HDU<i>`` when absent).

    Parameters
    ----------
    path : str or Path
    amp_index : int, optional
        Read only the ``amp_index``-th (0-based) image extension's pixels, so amplifiers can be
        read by separate tasks.
    primary_pixels : bool
        When the file has no 2-d image extension, take 2-d pixels of the primary HDU as its one
        amplifier (``PRIMARY``), as single-CCD cameras write them (instrument profile
        ``pixels.primary_hdu``).

    Raises
    ------
    FrameError
        Empty, truncated or unreadable file; an extension whose data cannot be read; no image
        extensions at all, or fewer than ``amp_index + 1``.
    """
    path = Path(path)
    with _open(path) as hdul:
        primary = _clean_header(hdul[0].header)
        amps: list[AmpRaw] = []
        position = -1
        for index, hdu in enumerate(hdul[1:], start=1):
            if not isinstance(hdu, fits.ImageHDU | fits.CompImageHDU):
                continue
            if hdu.header.get("NAXIS", 0) != 2:
                continue
            position += 1
            if amp_index is not None and position != amp_index:
                continue
            name = str(hdu.name or f"HDU{index}")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", AstropyUserWarning)
                try:
                    data = hdu.data
                except Exception as exc:
                    raise FrameError(path, name, f"cannot read pixels: {exc}") from exc
            for w in caught:
                if "truncated" in str(w.message):
                    raise FrameError(path, name, f"truncated data: {w.message}")
            if data is None or data.ndim != 2:
                raise FrameError(path, name, "image extension without 2-d pixel data")
            amps.append(
                AmpRaw(
                    name,
                    _with_blank_as_nan(data, hdu.header),
                    _clean_header(hdu.header),
                    position,
                    primary,
                )
            )
        if not amps and position < 0 and primary_pixels and amp_index in (None, 0):
            data = hdul[0].data
            if data is not None and data.ndim == 2:
                amps.append(
                    AmpRaw("PRIMARY", _with_blank_as_nan(data, hdul[0].header), primary, 0,
                           primary)
                )
        if not amps:
            what = (
                f"image extension number {amp_index + 1}"
                if amp_index is not None
                else ("2-d image extensions (amplifiers)")
            )
            raise FrameError(path, None, f"wrong shape: no {what} in file")
    return RawFrame(str(path), primary, amps)
