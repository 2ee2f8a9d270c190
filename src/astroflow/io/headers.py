"""Read a FITS file's headers straight from its 2,880-byte blocks, without astropy.

Planning a survey reads the headers of every raw file, so this is the hot path of
:mod:`astroflow.io.archive`: astropy's ``fits.open`` + verify + a cleaned copy cost ~10 ms a
file, ``fits.getheader`` ~0.8 ms; reading the blocks up to ``END`` and splitting them into
80-character cards costs ~0.1 ms. Values are parsed only when asked for.

Real archives hold headers astropy refuses (malformed CONTINUE cards, unquoted strings, values
with stray characters). Nothing here raises for a bad file or a bad card: a file that is not
FITS (recognised by content, ``SIMPLE  =`` at byte 0, whatever its suffix; gzip'ed files are
read through gzip, other whole-file compressions are named), empty, or cut short comes back
with ``problem`` set; a card whose value cannot be parsed
counts as missing and is listed in :attr:`RawHeader.malformed`, so the caller can name it.
Pixels are never read: data units are skipped by the size their header gives.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 2880
CARD = 80
#: Header blocks read at most per HDU (36 cards each): a header with more is refused.
MAX_HEADER_BLOCKS = 200
#: Extensions read at most per file (a mosaic camera writes tens of amplifiers).
MAX_EXTENSIONS = 512
_GZIP_MAGIC = b"\x1f\x8b"
#: Whole-file compressions that are named, not read (decompress them, or fpack the images).
_OTHER_COMPRESSIONS = {
    b"\x1f\x9d": "Unix compress (.Z)",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"PK\x03\x04": "zip",
}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_MISSING = object()
#: A FITS section ``[x1:x2,y1:y2]`` (1-based, inclusive); the one pattern every reader uses.
SECTION_RE = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


def section_shape(text: str) -> tuple[int, int] | None:
    """``(ny, nx)`` a FITS section spans, None when it is malformed or reversed."""
    match = SECTION_RE.match(str(text))
    if not match:
        return None
    x1, x2, y1, y2 = (int(g) for g in match.groups())
    if x2 < x1 or y2 < y1 or min(x1, y1) < 1:
        return None
    return y2 - y1 + 1, x2 - x1 + 1


def _parse_value(text: str):
    """The value of a card's value field (columns 11-80), or :data:`_MISSING` if unparsable.

    Strings (quotes doubled inside), logicals ``T``/``F``, integers and reals (``D`` exponents
    too); an empty value field is an undefined value (None). Complex values and anything else
    are unparsable.
    """
    text = text.lstrip()
    if text.startswith("'"):
        out, i = [], 1
        while True:
            j = text.find("'", i)
            if j < 0:
                return _MISSING  # unterminated string
            out.append(text[i:j])
            if text[j + 1 : j + 2] == "'":
                out.append("'")
                i = j + 2
                continue
            rest = text[j + 1 :].strip()
            if rest and not rest.startswith("/"):
                return _MISSING  # garbage after the closing quote
            return "".join(out).rstrip()
    token = text.split("/", 1)[0].strip()
    if not token:
        return None
    if token in ("T", "F"):
        return token == "T"
    if _INTEGER.match(token):
        return int(token)
    if _NUMBER.match(token):
        return float(token.replace("D", "E").replace("d", "e"))
    return _MISSING


class RawHeader(Mapping):
    """One HDU's header as keyword -> value, parsed on first access.

    Behaves like the read side of ``astropy.io.fits.Header`` for what the instrument profile
    asks (``key in header``, ``header[key]``, ``header.get(key)``): a keyword whose value
    cannot be parsed is absent, and listed in :attr:`malformed` with its card text. Where a
    keyword repeats, the first card wins (as astropy's ``header[key]`` does). ``HIERARCH``
    keywords are kept under their long name (``ESO INS FILT1 NAME``); long strings continued
    with ``CONTINUE`` cards are joined.
    """

    def __init__(self, cards: list[str]):
        self._raw: dict[str, str] = {}
        self._values: dict[str, object] = {}
        self.malformed: dict[str, str] = {}
        previous = None
        for card in cards:
            keyword = card[:8].rstrip().upper()
            if keyword == "CONTINUE" and previous is not None:
                self._raw[previous] += "\0" + card[8:]
                continue
            previous = None
            if keyword == "HIERARCH":
                body = card[8:]
                if "=" not in body:
                    continue
                name, value = body.split("=", 1)
                keyword = " ".join(name.split()).upper()
            elif card[8:10] == "= ":
                value = card[10:]
            else:
                continue  # COMMENT, HISTORY, blank and END-like cards carry no value
            if keyword and keyword not in self._raw:
                self._raw[keyword] = value
                previous = keyword

    def _value(self, key: str):
        if key in self._values:
            return self._values[key]
        text = self._raw[key]
        if "\0" in text:  # a long string: 'part1&' CONTINUE 'part2&' ...
            parts = [_parse_value(t) for t in text.split("\0")]
            if all(isinstance(p, str) for p in parts):
                value = "".join(p[:-1] if p.endswith("&") else p for p in parts)
            else:
                value = _parse_value(text.split("\0", 1)[0])
        else:
            value = _parse_value(text)
        if value is _MISSING:
            self.malformed[key] = text.replace("\0", " CONTINUE ").strip()
        self._values[key] = value
        return value

    def __getitem__(self, key: str):
        key = key.upper()
        if key not in self._raw or self._value(key) is _MISSING:
            raise KeyError(key)
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.upper() in self._raw and (
            self._value(key.upper()) is not _MISSING
        )

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._raw if self._value(k) is not _MISSING)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def int(self, key: str, default: int = 0) -> int:
        """An integer keyword (NAXISn, BITPIX, ...), ``default`` when absent or not integer."""
        value = self.get(key, default)
        return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass
class HDUHeader:
    """One HDU: its name, header, and the shape of the image it holds (None if no image).

    For a tile-compressed image (a ``BINTABLE`` with ``ZIMAGE = T``, as fpack writes), the
    shape and ``BITPIX`` are the image's (``ZNAXISn``, ``ZBITPIX``), as astropy's
    ``CompImageHDU`` shows them.
    """

    name: str
    header: RawHeader
    shape: tuple[int, ...] | None
    bitpix: int


@dataclass
class FileHeaders:
    """What the blocks of one file say: the HDUs read, or why the file cannot be used."""

    path: str
    hdus: list[HDUHeader] = field(default_factory=list)
    problem: str | None = None

    @property
    def primary(self) -> RawHeader | None:
        return self.hdus[0].header if self.hdus else None

    @property
    def images(self) -> list[HDUHeader]:
        """HDUs after the primary that hold an image (amplifiers), in file order."""
        return [h for h in self.hdus[1:] if h.shape is not None]


_NOT_FITS = "not a FITS file (it does not start with 'SIMPLE  =')"


def _read_header_cards(fh, first: bool) -> tuple[list[str] | None, str | None]:
    """Cards of the next header up to END, and the problem met on the way (or None).

    ``(None, None)`` is a clean end of file where the next header would start.
    """
    cards: list[str] = []
    for _ in range(MAX_HEADER_BLOCKS):
        block = fh.read(BLOCK)
        if first and not cards and not block.startswith(b"SIMPLE  ="):
            return None, _NOT_FITS
        if not block:
            if not cards:
                return None, None
            return cards, "truncated header: the file ends before the END card"
        if len(block) < BLOCK:
            return cards or None, "truncated header: the file ends inside a header block"
        text = block.decode("ascii", errors="replace")
        for i in range(0, BLOCK, CARD):
            card = text[i : i + CARD]
            if card.startswith("END") and not card[3:].strip():
                return cards, None
            cards.append(card)
    return cards, f"no END card in the first {MAX_HEADER_BLOCKS} header blocks"


def _hdu(cards: list[str], index: int) -> tuple[HDUHeader, int]:
    """The HDU of ``cards`` and the size of the data unit that follows it, unpadded [bytes]."""
    header = RawHeader(cards)
    naxis = header.int("NAXIS")
    bitpix = header.int("BITPIX")
    dims = [header.int(f"NAXIS{k}") for k in range(1, naxis + 1)]
    size = 0
    if naxis > 0:
        n = 1
        # random groups (GROUPS = T, NAXIS1 = 0): NAXIS1 is left out of the product
        for d in dims[1:] if header.get("GROUPS") is True and dims[0] == 0 else dims:
            n *= d
        size = abs(bitpix) // 8 * header.int("GCOUNT", 1) * (header.int("PCOUNT") + n)
    name = header.get("EXTNAME")
    name = str(name).strip() if name else ("PRIMARY" if index == 0 else f"HDU{index}")
    xtension = str(header.get("XTENSION", "")).strip().upper()
    shape = None
    if xtension == "BINTABLE" and header.get("ZIMAGE") is True:
        zn = header.int("ZNAXIS")
        shape = tuple(header.int(f"ZNAXIS{k}") for k in range(zn, 0, -1)) or None
        bitpix = header.int("ZBITPIX")
    elif (index == 0 or xtension in ("IMAGE", "IUEIMAGE")) and naxis > 0:
        shape = tuple(reversed(dims))
    return HDUHeader(name, header, shape, bitpix), size


def read_file_headers(path: str | Path, primary_only: bool = False) -> FileHeaders:
    """The headers of every HDU of ``path`` (or the primary only), never raising.

    Parameters
    ----------
    path : str or Path
        Any file: FITS is recognised by its first bytes, so the suffix does not matter;
        a gzip'ed FITS file is read through gzip (``.fits.gz``, or without the suffix).
    primary_only : bool
        Stop after the primary header.

    Returns
    -------
    FileHeaders
        ``problem`` says why the file cannot be used (empty, not FITS, cut short, unreadable);
        the HDUs read before a problem are kept.
    """
    out = FileHeaders(str(path))
    try:
        with open(path, "rb") as raw:
            head = raw.read(8)
            raw.seek(0)
            if not head:
                out.problem = "empty file (0 bytes)"
                return out
            for prefix, name in _OTHER_COMPRESSIONS.items():
                if head.startswith(prefix):
                    out.problem = (f"compressed with {name}: decompress it (or tile-compress the"
                                   " images with fpack) to use it")
                    return out
            fh = gzip.GzipFile(fileobj=raw, mode="rb") if head.startswith(_GZIP_MAGIC) else raw
            _read_hdus(fh, out, primary_only, seekable=fh is raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        out.problem = f"unreadable file: {exc}"
    return out


def _read_hdus(fh, out: FileHeaders, primary_only: bool, seekable: bool) -> None:
    for index in range(MAX_EXTENSIONS + 1):
        cards, problem = _read_header_cards(fh, first=index == 0)
        if cards is None:
            out.problem = problem  # None: a clean end of file after the last data unit
            return
        if index and not (cards and cards[0].startswith("XTENSION=")):
            out.problem = (f"HDU {index} does not start with XTENSION: the data before it are "
                           "not the size their header gives, or the file is damaged")
            return
        hdu, size = _hdu(cards, index)
        out.hdus.append(hdu)
        if problem:
            out.problem = f"{problem} (HDU {index}, {hdu.name})"
            return
        if primary_only:
            return
        if not size:
            continue
        # the data unit must be there in full, padded to whole blocks (a file that ends in
        # the padding is cut short: astropy, and so reduce, calls it truncated)
        padded = -(-size // BLOCK) * BLOCK
        if seekable:
            here = fh.tell()
            held = fh.seek(0, 2) - here
            fh.seek(here + min(padded, held))
        else:
            held = len(fh.read(padded))
        if held < padded:
            out.problem = (
                f"truncated file: HDU {index} ({hdu.name}) needs {padded} data bytes "
                f"(padded to {BLOCK}-byte blocks), the file holds {held}"
            )
            return
