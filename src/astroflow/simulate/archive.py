"""Raw-archive FITS files exactly as ``docs/data_contracts.md`` describes them.

One file per exposure: an empty primary HDU with the observation keywords, then one
``uint16`` image extension per amplifier (``BITPIX = 16, BZERO = 32768``), data columns first
and overscan last, with the section keywords, the amplifier's electronics and (science only) a
TAN WCS valid for that amplifier's raw pixel grid. Files are byte-identical across runs: every
header value is derived from the config, and no CHECKSUM/DATE-of-writing is added.

With ``simulate.nonstandard_headers`` the primary header also carries the kind of cards real
archives are full of and a reduction must step over: an ESO-style ``HIERARCH`` keyword, a
keyword in lower case (``obsnote``) and a value that is not valid FITS (``DETTEMP = -110.4 C``,
a number and its unit, unquoted). astropy would fix the last two on writing, so they are
patched into the written bytes; reading their values then needs astropy's ``verify('fix')``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from astropy.io import fits

from astroflow.simulate import layout
from astroflow.simulate.camera import Amp, Detector

TELESCOPE = "astroflow demo 1.2m"

#: Keywords written as non-standard cards when ``simulate.nonstandard_headers`` is on: astropy
#: would fix them on writing, so :func:`write_exposure` patches their bytes afterwards.
#: ``OBSNOTE`` becomes lower case; ``DETTEMP`` gets its value unquoted, unit and all.
PATCHED_KEYWORDS = ("OBSNOTE", "DETTEMP")


def _nonstandard_cards(header: fits.Header, expnum: int) -> None:
    """Append the non-standard cards of exposure ``expnum`` (deterministic) to ``header``."""
    temp_c = -110.0 - 0.1 * (int(expnum) % 17)
    header["HIERARCH AF DET TEMP"] = (temp_c, "[C] detector temperature")
    header["OBSNOTE"] = ("demo night", "lower-case keyword, as some archives write")
    header["DETTEMP"] = f"{temp_c:.1f} C"


def _nonstandard_image(card: fits.Card) -> bytes:
    """The 80 bytes a sloppy archive writes for one of :data:`PATCHED_KEYWORDS`."""
    if card.keyword == "OBSNOTE":
        text = card.image.replace("OBSNOTE", "obsnote", 1)
    else:
        text = f"{card.keyword:<8}= {card.value}"
    return text.ljust(80).encode("ascii")


def _patch_primary(path: str, header: fits.Header) -> None:
    """Rewrite the :data:`PATCHED_KEYWORDS` cards of a written primary header in place."""
    cards = [c for c in header.cards if c.keyword in PATCHED_KEYWORDS]
    if not cards:
        return
    with open(path, "r+b") as fh:
        block = b""
        while not any(block[i : i + 8] == b"END     " for i in range(0, len(block), 80)):
            chunk = fh.read(2880)
            if len(chunk) < 2880:
                raise RuntimeError(f"{path}: primary header has no END card")
            block += chunk
        for card in cards:
            old = card.image.encode("ascii")
            if block.count(old) != 1:
                raise RuntimeError(f"{path}: cannot find the {card.keyword} card to patch")
            block = block.replace(old, _nonstandard_image(card))
        fh.seek(0)
        fh.write(block)


def primary_header(
    cfg: Mapping,
    *,
    object_name: str,
    imagetyp: str,
    band: str | None,
    exptime_s: float,
    expnum: int,
    airmass: float,
) -> fits.Header:
    """Observation keywords of the primary HDU."""
    iso, mjd = layout.iso_and_mjd(layout.observation_time(cfg, expnum))
    h = fits.Header()
    h["INSTRUME"] = (cfg["instrument"]["name"], "instrument")
    h["TELESCOP"] = (TELESCOPE, "telescope")
    h["OBJECT"] = (object_name, "field name or calibration type")
    if band is not None:
        h["FILTER"] = (band, "filter band")
    h["EXPTIME"] = (float(exptime_s), "[s] exposure time")
    h["DATE-OBS"] = (iso, "UTC start of exposure")
    h["MJD-OBS"] = (round(mjd, 8), "[d] MJD at start of exposure")
    h["DATE"] = (iso[:10], "file creation date (the observing date)")
    h["AIRMASS"] = (float(airmass), "airmass at start")
    h["EXPNUM"] = (int(expnum), "exposure number, unique in the archive")
    h["IMAGETYP"] = (imagetyp, "object, bias, dark or flat")
    h["NAMPS"] = (int(cfg["instrument"]["n_amps"]), "amplifiers (image extensions)")
    h["ORIGIN"] = ("astroflow simulate", "demo survey simulator")
    if cfg["simulate"]["nonstandard_headers"]:
        _nonstandard_cards(h, expnum)
    return h


def amp_header(det: Detector, amp: Amp, wcs_keys: Mapping | None) -> fits.Header:
    """Per-amplifier keywords; ``wcs_keys`` (detector WCS) is shifted onto this amp's grid."""
    k0 = (amp.index - 1) * det.nx_amp
    h = fits.Header()
    h["EXTNAME"] = f"AMP{amp.index}"
    h["DATASEC"] = (f"[1:{det.nx_amp},1:{det.ny}]", "light-sensitive pixels")
    h["TRIMSEC"] = (f"[1:{det.nx_amp},1:{det.ny}]", "same as DATASEC")
    if det.n_over:
        h["BIASSEC"] = (f"[{det.nx_amp + 1}:{det.nx_amp + det.n_over},1:{det.ny}]", "overscan")
    h["DETSEC"] = (f"[{k0 + 1}:{k0 + det.nx_amp},1:{det.ny}]", "place in the detector")
    h["GAIN"] = (amp.gain_e_per_adu, "[e-/ADU] gain")
    h["RDNOISE"] = (amp.read_noise_e, "[e-] read noise")
    h["SATURATE"] = (amp.saturate_adu, "[ADU] saturation level")
    if wcs_keys is not None:
        for key, value in wcs_keys.items():
            h[key] = value
        h["CRPIX1"] = wcs_keys["CRPIX1"] - k0
    return h


def write_exposure(
    path: str | os.PathLike,
    primary: fits.Header,
    amp_arrays: Sequence[np.ndarray],
    amp_headers: Sequence[fits.Header],
    compress: bool,
) -> None:
    """Write one exposure (plain, or RICE tile-compressed with one CompImageHDU per amp)."""
    hdus: list = [fits.PrimaryHDU(header=primary)]
    for data, header in zip(amp_arrays, amp_headers, strict=True):
        if data.dtype != np.uint16:
            raise TypeError(f"{path}: {header['EXTNAME']}: raw pixels must be uint16")
        if compress:
            hdus.append(fits.CompImageHDU(data=data, header=header, compression_type="RICE_1"))
        else:
            hdus.append(fits.ImageHDU(data=data, header=header))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.part"
    fits.HDUList(hdus).writeto(tmp, overwrite=True)
    _patch_primary(tmp, primary)
    os.replace(tmp, path)
