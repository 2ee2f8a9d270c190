"""A small raw archive written the way another camera writes it, and that camera's profile.

Unlike the demo camera: one image extension (no amplifiers), float32 pixels, no overscan and no
sections in the headers, keywords OBSTYPE / FILTNAME / EXPOSURE / DATE-BEG / FIELD / EGAIN /
RON, no dark frames, and flats whose OBSTYPE ('CALIB') does not say what they are: only their
file names (``skyflat_<band>_<k>.fits``) do. The labels catalog is a CSV with its own column
names and class values. Stars are circular Gaussians, galaxies exponential discs, on a sky with
Poisson and read noise, through a known bias and flat; so the real reduction runs on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

SHAPE = (256, 256)
PIXEL_SCALE_ARCSEC = 0.3
BANDS = ["g", "r"]
ZEROPOINT_MAG = {"g": 25.0, "r": 25.0}
FIELDS = {"F1": (150.00, 2.00), "F2": (150.05, 2.00)}
GAIN_E_PER_ADU = 1.5
READ_NOISE_E = 5.0
BIAS_ADU = 300.0
EXPTIME_S = 60.0
SKY_E = 400.0
FWHM_PIX = 3.3
N_OBJECTS = 36

PROFILE_YAML = """\
# The test camera: what a user writes for their own instrument.
name: foreigncam
description: single-extension float32 CCD without overscan; flats known by file name
keywords:
  imagetyp: OBSTYPE
  filter: FILTNAME
  exptime: EXPOSURE
  date: DATE-BEG
  mjd: null
  object: FIELD
  expnum: null
  gain: EGAIN
  rdnoise: RON
  saturate: null
imagetyp_values: {object: [science], bias: [bias], dark: [dark], flat: []}
filename_patterns: {flat: ["skyflat_*"]}
classify_by: [header, filename]
sections: {required: false}
# The camera's bands, pixel scale, zero points and geometry: the config need not repeat them.
bands: [g, r]
pixel_scale_arcsec: 0.3
zeropoint_mag: {g: 25.0, r: 25.0}   # AB mag of 1 e-/s
n_amps: 1
amp_shape: [256, 256]   # = SHAPE
overscan_cols: 0
"""

LABELS_COLUMNS = {
    "format": "csv",
    "ra": "RA_DEG",
    "dec": "DEC_DEG",
    "class": "TYPE",
    "star": ["S"],
    "galaxy": ["G"],
}


@dataclass
class ForeignArchive:
    """Paths of the written archive."""

    root: Path
    raw_dir: Path
    profile: Path
    labels: Path
    calib: list[str] = field(default_factory=list)
    science: dict[str, list[str]] = field(default_factory=dict)


def _wcs(ra0: float, dec0: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra0, dec0]
    wcs.wcs.crpix = [SHAPE[1] / 2 + 0.5, SHAPE[0] / 2 + 0.5]
    wcs.wcs.cdelt = [-PIXEL_SCALE_ARCSEC / 3600, PIXEL_SCALE_ARCSEC / 3600]
    return wcs


def _write(path: Path, adu: np.ndarray, cards: dict, wcs: WCS | None = None) -> str:
    """Primary header with the cards, one float32 image extension with the pixels."""
    primary = fits.PrimaryHDU()
    for key, value in cards.items():
        primary.header[key] = value
    image = fits.ImageHDU(adu.astype(np.float32), name="SCI")
    image.header["EGAIN"] = GAIN_E_PER_ADU
    image.header["RON"] = READ_NOISE_E
    if wcs is not None:
        image.header.update(wcs.to_header())
    fits.HDUList([primary, image]).writeto(path)
    return str(path)


def _objects(rng: np.random.Generator) -> list[tuple[float, float, bool, float, float]]:
    """(x, y, is_galaxy, flux_e, r_half_pix) on a jittered grid: isolated, off the edges."""
    grid = np.arange(24, SHAPE[0] - 20, 36)
    cells = [(x, y) for y in grid for x in grid]
    chosen = rng.permutation(len(cells))[:N_OBJECTS]
    out = []
    for k, index in enumerate(chosen):
        x, y = cells[index]
        is_galaxy = k % 2 == 1
        flux = float(np.exp(rng.uniform(np.log(8e3), np.log(2e5))))
        out.append(
            (x + rng.uniform(-4, 4), y + rng.uniform(-4, 4), is_galaxy, flux, rng.uniform(2.5, 4))
        )
    return out


def _render(objects, scale: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    image = np.zeros(SHAPE)
    sigma = FWHM_PIX / 2.3548
    for x, y, is_galaxy, flux, r_half in objects:
        r2 = (xx - x) ** 2 + (yy - y) ** 2
        if is_galaxy:
            profile = np.exp(-1.678 * np.sqrt(r2) / r_half)
        else:
            profile = np.exp(-0.5 * r2 / sigma**2)
        image += scale * flux * profile / profile.sum()
    return image


def write_foreign_archive(root: Path, seed: int = 11) -> ForeignArchive:
    """Write the raw archive, the camera's profile and a CSV labels catalog under ``root``."""
    rng = np.random.default_rng(seed)
    raw = root / "raw"
    (raw / "calib").mkdir(parents=True)
    profile = root / "foreigncam.yaml"
    profile.write_text(PROFILE_YAML)
    archive = ForeignArchive(root, raw, profile, root / "labels.csv")
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    bias_adu = BIAS_ADU + 3.0 * np.sin(xx / 17.0)
    flats = {
        band: 1.0 + 0.06 * (xx - 128) / 128 * (1 if band == "g" else -1) + 0.03 * (yy - 128) / 128
        for band in BANDS
    }

    def noisy(electrons: np.ndarray) -> np.ndarray:
        e = rng.poisson(np.maximum(electrons, 0)) + rng.normal(0, READ_NOISE_E, SHAPE)
        return e / GAIN_E_PER_ADU + bias_adu

    for k in range(2):
        archive.calib.append(
            _write(raw / "calib" / f"bias_{k}.fits", noisy(np.zeros(SHAPE)), {"OBSTYPE": "BIAS"})
        )
        for band in BANDS:
            cards = {"OBSTYPE": "CALIB", "FILTNAME": band, "EXPOSURE": 5.0}
            archive.calib.append(
                _write(raw / "calib" / f"skyflat_{band}_{k}.fits", noisy(2e4 * flats[band]), cards)
            )
    rows = []
    for name, (ra0, dec0) in FIELDS.items():
        (raw / name).mkdir()
        wcs = _wcs(ra0, dec0)
        objects = _objects(rng)
        archive.science[name] = []
        for band, scale in zip(BANDS, (0.7, 1.0), strict=True):
            electrons = (SKY_E + _render(objects, scale)) * flats[band]
            cards = {
                "OBSTYPE": "SCIENCE",
                "FIELD": name,
                "FILTNAME": band,
                "EXPOSURE": EXPTIME_S,
                "DATE-BEG": "2026-03-01T02:00:00",
            }
            path = _write(raw / name / f"sci_{name}_{band}.fits", noisy(electrons), cards, wcs)
            archive.science[name].append(path)
        for x, y, is_galaxy, _, _ in objects:
            ra, dec = wcs.pixel_to_world_values(x, y)
            rows.append(f"{float(ra):.7f},{float(dec):.7f},{'G' if is_galaxy else 'S'}")
    archive.labels.write_text("RA_DEG,DEC_DEG,TYPE\n" + "\n".join(rows) + "\n")
    return archive
