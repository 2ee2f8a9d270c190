"""Raw-archive FITS files exactly as ``docs/data_contracts.md`` describes them.

One file per exposure: an empty primary HDU with the observation keywords, then one
``uint16`` image extension per amplifier (``BITPIX = 16, BZERO = 32768``), data columns first
and overscan last, with the section keywords, the amplifier's electronics and (science only) a
TAN WCS valid for that amplifier's raw pixel grid. Files are byte-identical across runs: every
header value is derived from the config, and no CHECKSUM/DATE-of-writing is added.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from astropy.io import fits

from astroflow.simulate import layout
from astroflow.simulate.camera import Amp, Detector

TELESCOPE = "astroflow demo 1.2m"


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
    os.replace(tmp, path)
