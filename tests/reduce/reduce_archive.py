"""A small raw archive, written with astropy exactly as docs/data_contracts.md describes.

Known bias pattern, dark current (with hot pixels), per-band flats, per-amp gains and overscan
levels, sky, stars (Gaussian PSF) and galaxies (wider elliptical Gaussians) at known sky
positions, cosmic-ray hits and dithered epochs: the reduce tests check these are recovered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from astroflow.config import validate

BANDS = ["g", "r"]
AMP_NY, AMP_NX, N_OVER, N_AMPS = 128, 64, 8, 2
DET_SHAPE = (AMP_NY, AMP_NX * N_AMPS)
GAINS = [1.5, 2.0]
OVERSCAN_ADU = [1000.0, 1200.0]
READ_NOISE_E = 4.0
SATURATE_ADU = 60000
PIXEL_SCALE = 0.2
ZP = {"g": 26.3, "r": 26.2}
SKY_E_PER_S = {"g": 40.0, "r": 60.0}
EXPTIME_S = 30.0
PSF_SIGMA_PIX = {"g": 2.0, "r": 1.8}
RA0, DEC0 = 150.0, 2.0


def make_cfg(tmp_path: Path, **reduce_overrides) -> dict:
    """A validated config for the test camera."""
    cfg = {
        "instrument": {
            "bands": BANDS,
            "pixel_scale_arcsec": PIXEL_SCALE,
            "zeropoint_mag": ZP,
            "n_amps": N_AMPS,
            "amp_shape": [AMP_NY, AMP_NX],
            "overscan_cols": N_OVER,
        },
        "simulate": {"enabled": False},
        "reduce": {
            "detection_band": "r",
            "cutout_size": 32,
            "chunk_objects": 4,
            "detect_sigma": 3.0,
            **reduce_overrides,
        },
        "train": {"crop_size": 28},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "reduce-tests"},
    }
    return validate(cfg, source="test")


@dataclass
class Truth:
    """What was injected."""

    bias_e: np.ndarray
    dark_e_per_s: np.ndarray
    flats: dict[str, np.ndarray]
    objects: list[dict]
    calib_paths: list[str] = field(default_factory=list)
    science_paths: list[str] = field(default_factory=list)
    labels_path: str = ""
    raw_dir: str = ""


def detector_wcs(dx_pix: float = 0.0, dy_pix: float = 0.0) -> WCS:
    """TAN WCS of the assembled detector, pointed so the field centre is shifted by (dx, dy)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [DET_SHAPE[1] / 2 + 0.5 + dx_pix, DET_SHAPE[0] / 2 + 0.5 + dy_pix]
    w.wcs.cd = np.array([[-PIXEL_SCALE, 0.0], [0.0, PIXEL_SCALE]]) / 3600.0
    return w


def _gauss(shape, x0, y0, sigma_x, sigma_y, theta, flux):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    dx, dy = xx - x0, yy - y0
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    g = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return flux * g / (2 * np.pi * sigma_x * sigma_y)


def make_objects(rng: np.random.Generator) -> list[dict]:
    """16 objects on a jittered grid: 9 stars, 7 galaxies, with sky positions."""
    w = detector_wcs()
    objects = []
    grid = [22, 50, 78, 106]
    for j, gy in enumerate(grid):
        for i, gx in enumerate(grid):
            k = 4 * j + i
            x, y = gx + rng.uniform(-3, 3), gy + rng.uniform(-3, 3)
            ra, dec = w.wcs_pix2world([[x, y]], 0)[0]
            star = k % 2 == 0 or k == 15
            flux = {b: float(10 ** rng.uniform(2.6, 4.0)) for b in BANDS}
            objects.append(
                {
                    "ra": float(ra),
                    "dec": float(dec),
                    "star": star,
                    "flux": flux,
                    "gal_sigma": 0.0 if star else float(rng.uniform(1.5, 2.5)),
                    "q": 1.0 if star else float(rng.uniform(0.5, 0.9)),
                    "theta": float(rng.uniform(0, np.pi)),
                }
            )
    return objects


def sky_image_e_per_s(objects, band, wcs) -> np.ndarray:
    """Noise-free sky + objects [e-/s] on the detector grid of ``wcs``."""
    img = np.full(DET_SHAPE, SKY_E_PER_S[band])
    for obj in objects:
        x, y = wcs.wcs_world2pix([[obj["ra"], obj["dec"]]], 0)[0]
        psf = PSF_SIGMA_PIX[band]
        sx = np.hypot(psf, obj["gal_sigma"])
        sy = np.hypot(psf, obj["gal_sigma"] * obj["q"])
        img += _gauss(DET_SHAPE, x, y, sx, sy, obj["theta"], obj["flux"][band])
    return img


def write_raw(
    path: Path,
    primary: dict,
    electrons: np.ndarray,
    rng,
    wcs: WCS | None = None,
    compress: bool = False,
    amp_cards: dict | None = None,
) -> str:
    """Write a raw multi-amp frame: electrons -> ADU per amp + overscan, uint16 with BZERO."""
    hdus = [fits.PrimaryHDU()]
    for key, value in primary.items():
        hdus[0].header[key] = value
    hdus[0].header["NAMPS"] = N_AMPS
    for k in range(N_AMPS):
        sl = slice(k * AMP_NX, (k + 1) * AMP_NX)
        adu = np.empty((AMP_NY, AMP_NX + N_OVER))
        rows = OVERSCAN_ADU[k] + 0.02 * np.arange(AMP_NY)[:, None]
        adu[:, :AMP_NX] = electrons[:, sl] / GAINS[k] + rows
        adu[:, AMP_NX:] = rows
        adu += rng.normal(0, READ_NOISE_E / GAINS[k], adu.shape)
        data = np.clip(np.round(adu), 0, 65535).astype(np.uint16)
        hdu = (
            fits.CompImageHDU(data, compression_type="RICE_1") if compress else fits.ImageHDU(data)
        )
        h = hdu.header
        h["EXTNAME"] = f"AMP{k + 1}"
        h["BIASSEC"] = f"[{AMP_NX + 1}:{AMP_NX + N_OVER},1:{AMP_NY}]"
        h["DATASEC"] = f"[1:{AMP_NX},1:{AMP_NY}]"
        h["TRIMSEC"] = h["DATASEC"]
        h["DETSEC"] = f"[{k * AMP_NX + 1}:{(k + 1) * AMP_NX},1:{AMP_NY}]"
        h["GAIN"] = GAINS[k]
        h["RDNOISE"] = READ_NOISE_E
        h["SATURATE"] = SATURATE_ADU
        if wcs is not None:
            amp_wcs = wcs.deepcopy()
            amp_wcs.wcs.crpix = [wcs.wcs.crpix[0] - k * AMP_NX, wcs.wcs.crpix[1]]
            h.update(amp_wcs.to_header())
        for key, value in (amp_cards or {}).items():
            h[key] = value
        hdus.append(hdu)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return str(path)


def science_primary(field: str, band: str, expnum: int) -> dict:
    return {
        "INSTRUME": "testcam",
        "TELESCOP": "test",
        "OBJECT": field,
        "FILTER": band,
        "EXPTIME": EXPTIME_S,
        "DATE-OBS": "2026-01-01T00:00:00",
        "MJD-OBS": 61041.0 + expnum,
        "AIRMASS": 1.1,
        "EXPNUM": expnum,
        "IMAGETYP": "object",
    }


def build_archive(root: Path, n_epochs: int = 1, compress: bool = False, seed: int = 3) -> Truth:
    """Write calib/ and science/F00/ frames plus a labels catalog; return the truth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: DET_SHAPE[0], : DET_SHAPE[1]]
    bias_e = 6.0 * np.sin(xx / 9.0) + 3.0 * np.cos(yy / 13.0)
    dark = np.full(DET_SHAPE, 0.05)
    hot = rng.choice(dark.size, 5, replace=False)
    dark.flat[hot] = 20.0
    flats = {}
    for b_index, band in enumerate(BANDS):
        smooth = (
            1.0
            + 0.08 * (xx / DET_SHAPE[1] - 0.5)
            - 0.05 * (yy / DET_SHAPE[0] - 0.5) * (b_index + 1)
        )
        flat = smooth * rng.normal(1.0, 0.02, DET_SHAPE)
        flats[band] = flat / np.median(flat)
    objects = make_objects(rng)
    truth = Truth(bias_e, dark, flats, objects, raw_dir=str(root))
    expnum = 100
    suffix = ".fits.fz" if compress else ".fits"

    def noisy(electrons):
        return rng.poisson(np.maximum(electrons, 0)).astype(np.float64)

    for i in range(3):
        truth.calib_paths.append(
            write_raw(
                root / "calib" / f"bias_{i:03d}{suffix}",
                {"IMAGETYP": "bias", "EXPTIME": 0.0, "EXPNUM": expnum + i},
                bias_e,
                rng,
                compress=compress,
            )
        )
    for i in range(2):
        t = 100.0
        truth.calib_paths.append(
            write_raw(
                root / "calib" / f"dark_{i:03d}{suffix}",
                {"IMAGETYP": "dark", "EXPTIME": t, "EXPNUM": expnum + 10 + i},
                bias_e + noisy(dark * t),
                rng,
                compress=compress,
            )
        )
    for band in BANDS:
        for i in range(3):
            t, lamp = 5.0, 20000.0 * (1 + 0.1 * i)
            e = bias_e + noisy(dark * t + flats[band] * lamp)
            truth.calib_paths.append(
                write_raw(
                    root / "calib" / f"flat_{band}_{i:03d}{suffix}",
                    {"IMAGETYP": "flat", "FILTER": band, "EXPTIME": t, "EXPNUM": expnum + 20 + i},
                    e,
                    rng,
                    compress=compress,
                )
            )
    expnum = 1000
    for band in BANDS:
        for epoch in range(n_epochs):
            dx, dy = (0.0, 0.0) if epoch == 0 else (3.3, -2.6)
            wcs = detector_wcs(dx, dy)
            flux = sky_image_e_per_s(objects, band, wcs)
            e = noisy((flux * flats[band] + dark) * EXPTIME_S)
            for _ in range(4):  # cosmic-ray hits away from objects' cores
                y, x = rng.integers(5, DET_SHAPE[0] - 5), rng.integers(5, DET_SHAPE[1] - 5)
                e[y, x] += 4000.0
            truth.science_paths.append(
                write_raw(
                    root / "science" / "F00" / f"F00_{band}_e{epoch}{suffix}",
                    science_primary("F00", band, expnum),
                    bias_e + e,
                    rng,
                    wcs=wcs,
                    compress=compress,
                )
            )
            expnum += 1
    labels = Table(
        {
            "ra": [o["ra"] for o in objects[:12]] + [RA0 + 1.0],
            "dec": [o["dec"] for o in objects[:12]] + [DEC0],
            "class": [("star" if o["star"] else "galaxy") for o in objects[:12]] + ["star"],
        }
    )
    labels["ra"].unit = "deg"
    labels["dec"].unit = "deg"
    truth.labels_path = str(root / "labels.ecsv")
    labels.write(truth.labels_path, format="ascii.ecsv", overwrite=True)
    return truth


def field_args(cfg: dict, archive, exposures, calib, out: Path, threads: int = 2) -> list[str]:
    """``astroflow reduce field`` arguments reducing ``exposures`` of F00 into ``out``."""
    import json

    return [
        "field",
        "--config-json",
        json.dumps(cfg),
        "--field",
        "F00",
        "--exposures",
        *exposures,
        "--calib",
        str(calib),
        "--labels",
        archive.labels_path,
        "--out-store",
        str(out / "F00.zarr"),
        "--out-objects",
        str(out / "F00.objects.parquet"),
        "--out-quarantine",
        str(out / "F00.quarantine.json"),
        "--threads",
        str(threads),
    ]
