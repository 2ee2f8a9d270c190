"""Helpers for the simulate tests (a uniquely named module, importable from test files).

The exact calibration uses the simulator's own detector model (true bias structure, gains,
dark current and flat field) plus the overscan for the per-frame bias, so tests can check
what the sky looks like without depending on the reduce stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from astroflow.config import load_config
from astroflow.simulate.camera import Detector

REPO = Path(__file__).resolve().parents[2]


def tiny_config(**simulate) -> dict:
    """config.yaml + tiny.yaml, with simulate keys overridden."""
    cfg = load_config(REPO / "config" / "config.yaml", REPO / "config" / "tiny.yaml")
    cfg["simulate"].update(simulate)
    return cfg


def calibrate_exactly(cfg: dict, path: Path) -> tuple[np.ndarray, fits.Header, list]:
    """Electrons per pixel of the assembled detector, bias/dark/flat removed with the truth.

    Returns the image, the primary header and the amplifier headers.
    """
    det = Detector(cfg)
    with fits.open(path) as hdul:
        primary = hdul[0].header.copy()
        band, exptime = primary.get("FILTER"), primary["EXPTIME"]
        image = np.empty((det.ny, det.nx))
        amp_headers = []
        for k, amp in enumerate(det.amps):
            hdu = hdul[f"AMP{k + 1}"]
            amp_headers.append(hdu.header.copy())
            raw = hdu.data.astype(float)
            sl = slice(k * det.nx_amp, (k + 1) * det.nx_amp)
            row_level = raw[:, det.nx_amp :].mean(axis=1)
            signal_adu = (
                raw[:, : det.nx_amp]
                - row_level[:, None]
                - (det.bias_structure_adu[:, sl] - amp.bias_adu)
            )
            image[:, sl] = signal_adu * amp.gain_e_per_adu
    image -= det.dark_e_per_s * exptime
    if primary["IMAGETYP"] in ("object", "flat"):
        image /= det.flat(band)
    return image, primary, amp_headers


def detector_pixels(amp_header: fits.Header, ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """0-based detector pixels of sky positions, through the amp WCS and its DETSEC."""
    x, y = WCS(amp_header).all_world2pix(np.asarray(ra), np.asarray(dec), 0)
    x1 = int(amp_header["DETSEC"].strip("[]").split(",")[0].split(":")[0])
    return x + (x1 - 1), y
