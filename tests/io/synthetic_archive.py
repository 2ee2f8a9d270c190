"""Synthetic raw archives of any size, fast: one astropy-written file per kind, cloned as bytes.

Headers are the demo camera's (afcam profile: IMAGETYP, OBJECT, FILTER, EXPTIME, DATE-OBS,
EXPNUM in the primary; two amplifier extensions with sections, GAIN and a TAN WCS on science
frames) around 64 x 64-pixel amplifiers without overscan, so planning sees real headers while
writing 10^4 files takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

BANDS = ["g", "r", "i"]
AMP = (64, 64)
#: The instrument config the files are valid for (merge onto the defaults).
INSTRUMENT = {"bands": BANDS, "n_amps": 2, "amp_shape": list(AMP), "overscan_cols": 0,
              "zeropoint_mag": {b: 25.0 for b in BANDS}}


def _template(imagetyp: str, band: str | None) -> bytes:
    primary = fits.PrimaryHDU()
    h = primary.header
    h["IMAGETYP"] = imagetyp
    h["OBJECT"] = ("F0000" if imagetyp == "object" else imagetyp, "field name")
    if band:
        h["FILTER"] = (band, "filter band")
    h["EXPTIME"] = (0.0 if imagetyp == "bias" else 60.0, "[s]")  # a bias is a 0 s exposure
    h["DATE-OBS"] = "2026-03-01T03:00:00.000"
    h["EXPNUM"] = (100000, "exposure number")
    amps = []
    for k in (1, 2):
        amp = fits.ImageHDU(np.full(AMP, 1000, np.uint16), name=f"AMP{k}")
        a = amp.header
        a["DATASEC"] = f"[1:{AMP[1]},1:{AMP[0]}]"
        a["DETSEC"] = f"[{(k - 1) * AMP[1] + 1}:{k * AMP[1]},1:{AMP[0]}]"
        a["GAIN"] = 1.5
        if imagetyp == "object":
            a.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0,
                     CRPIX1=32.0 - (k - 1) * AMP[1], CRPIX2=32.0, CD1_1=-5.6e-5, CD2_2=5.6e-5)
        amps.append(amp)
    from io import BytesIO

    buf = BytesIO()
    fits.HDUList([primary, *amps]).writeto(buf)
    return buf.getvalue()


def _set_card(blob: bytes, key: str, value) -> bytes:
    start = blob.index(f"{key:<8}=".encode())
    return blob[:start] + fits.Card(key, value).image.encode("ascii") + blob[start + 80:]


def write_archive(raw: Path, n_fields: int, epochs: int, n_calib: int = 3) -> list[Path]:
    """``n_calib`` each of bias, dark and per-band flats, and ``n_fields`` x bands x ``epochs``
    science exposures (fields ``F0000``...), under ``raw``; returns the paths written."""
    templates = {("object", b): _template("object", b) for b in BANDS}
    templates.update({("flat", b): _template("flat", b) for b in BANDS})
    templates.update({(t, None): _template(t, None) for t in ("bias", "dark")})
    jobs = [(raw / "calib" / f"{t}_{i:03d}.fits", (t, None), None)
            for t in ("bias", "dark") for i in range(n_calib)]
    jobs += [(raw / "calib" / f"flat_{b}_{i:03d}.fits", ("flat", b), None)
             for b in BANDS for i in range(n_calib)]
    jobs += [(raw / "science" / f"F{f:04d}" / f"F{f:04d}_{b}_{e:03d}.fits", ("object", b),
              f"F{f:04d}") for f in range(n_fields) for b in BANDS for e in range(epochs)]
    for expnum, (path, kind, field) in enumerate(jobs, start=200000):
        blob = _set_card(templates[kind], "EXPNUM", expnum)
        if field:
            blob = _set_card(blob, "OBJECT", field)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return [path for path, _, _ in jobs]
