"""Reading raw camera FITS files and scanning a raw archive.

Everything that touches a raw file's bytes lives here, so the reduce stage sees plain numpy
arrays and headers, and every problem with a file surfaces as one :class:`FrameError` that
names the file, the extension and the problem (which the reduce stage quarantines).

The names below are imported on first use: the workflow imports :mod:`astroflow.io.plan` on
every parse of the Snakefile (a cluster job's too), which must not pay for astropy.io.fits.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FrameInfo": "archive",
    "scan_archive": "archive",
    "AmpRaw": "fits_read",
    "FrameError": "fits_read",
    "RawFrame": "fits_read",
    "parse_section": "fits_read",
    "read_frame": "fits_read",
    "read_primary_header": "fits_read",
    "sha256_file": "fits_read",
    "InstrumentProfile": "profile",
    "load_profile": "profile",
    "profile_from_config": "profile",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
