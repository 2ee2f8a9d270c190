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
    read_headers,
    read_primary_header,
    sha256_file,
)
from astroflow.io.profile import InstrumentProfile, load_profile, profile_from_config

__all__ = [
    "AmpRaw",
    "FrameError",
    "FrameInfo",
    "InstrumentProfile",
    "RawFrame",
    "load_profile",
    "parse_section",
    "profile_from_config",
    "read_frame",
    "read_headers",
    "read_primary_header",
    "scan_archive",
    "sha256_file",
]
