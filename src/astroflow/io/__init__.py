"""Reading raw camera FITS files and scanning a raw archive.

Everything that touches a raw file's bytes lives here, so the reduce stage sees plain numpy
arrays and headers, and every problem with a file surfaces as one :class:`FrameError` that
names the file, the extension and the problem (which the reduce stage quarantines).
"""

from astroflow.io.archive import FrameInfo, scan_archive
from astroflow.io.fits_read import (
    AmpRaw,
    FrameError,
    RawFrame,
    parse_section,
    read_frame,
    read_primary_header,
    sha256_file,
)

__all__ = [
    "AmpRaw",
    "FrameError",
    "FrameInfo",
    "RawFrame",
    "parse_section",
    "read_frame",
    "read_primary_header",
    "scan_archive",
    "sha256_file",
]
