"""A shrunken simulated survey for the reliability tests, and the ways to break its files.

The base archive comes from the real simulator (one field, bands g and r, 256 x 128-pixel
amplifiers, a denser and star-richer sky than the demo so the small detector still holds the
three bright isolated stars the PSF measurement needs). Every bad input is a corrupted *copy*
of one of its files, so the good exposures stay intact and each test knows exactly which file
it broke and how. Named ``reliability_archive`` (not ``conftest``) so test files can import it.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits

from astroflow.config import deep_merge, validate

REPO = Path(__file__).resolve().parents[2]
FIELD = "F00"
BANDS = ["g", "r"]

#: What the reliability suite shrinks the default (demo) config to.
SMALL = {
    "instrument": {"bands": BANDS, "amp_shape": [256, 128]},
    "simulate": {
        "n_fields": 1,
        "n_epochs": 1,
        "n_bias": 2,
        "n_dark": 1,
        "n_flat": 1,
        "density_per_arcmin2": 600.0,
        "star_fraction": 0.5,
    },
    "reduce": {"chunk_objects": 32},
    "train": {
        "max_epochs": 4,
        "batch_size": 8,
        "early_stopping_patience": 10,
        "split": {"cell_arcsec": 10.0, "buffer_arcsec": 0.5},
    },
}


@dataclass(frozen=True)
class Archive:
    """The simulated base archive (read only: tests corrupt copies, never these files)."""

    root: Path
    cfg: dict
    calib: list[str]
    science: list[str]
    labels: str

    def science_in(self, band: str) -> str:
        """The (single-epoch) science exposure of ``band``."""
        (path,) = [p for p in self.science if f"_{band}_" in Path(p).name]
        return path


def small_config(tmp: Path, **overrides: dict) -> dict:
    """The validated shrunken config, its tracking store a sqlite file under ``tmp``."""
    with open(REPO / "config" / "config.yaml") as fh:
        cfg = deep_merge(yaml.safe_load(fh), SMALL)
    cfg = deep_merge(cfg, {"tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"}})
    return validate(deep_merge(cfg, overrides), source="reliability test config")


def simulate_archive(root: Path) -> Archive:
    """Run the real simulator (calibrations, one field, catalogs) into ``root``."""
    from astroflow.simulate.layout import calib_files, science_files
    from astroflow.simulate.stage import simulate_all

    cfg = small_config(root)
    raw, catalogs = root / "raw", root / "catalogs"
    simulate_all(cfg, str(raw), str(catalogs))
    return Archive(
        root=root,
        cfg=cfg,
        calib=[str(p) for p in calib_files(cfg, str(raw))],
        science=[str(p) for p in science_files(cfg, str(raw), FIELD)],
        labels=str(catalogs / "labels.ecsv"),
    )


def field_argv(
    cfg: dict, exposures: list[str], calib: Path, labels: str, out: Path, threads: int = 2
) -> list[str]:
    """``astroflow reduce field`` arguments writing F00's outputs under ``out``."""
    return [
        "field",
        "--config-json",
        json.dumps(cfg),
        "--field",
        FIELD,
        "--exposures",
        *exposures,
        "--calib",
        str(calib),
        "--labels",
        labels,
        "--out-store",
        str(out / f"{FIELD}.zarr"),
        "--out-objects",
        str(out / f"{FIELD}.objects.parquet"),
        "--out-quarantine",
        str(out / f"{FIELD}.quarantine.json"),
        "--threads",
        str(threads),
    ]


# -- corrupted copies -------------------------------------------------------------------------
def unique_expnum(dest: Path) -> int:
    """An EXPNUM for a corrupted copy, distinct from this small archive's (all below 800000)."""
    return 800_000 + zlib.crc32(dest.name.encode()) % 100_000


def _rewrite(src: str, dest: Path, edit) -> str:
    """Copy ``src`` to ``dest`` with ``edit(hdul)`` applied in memory (pixels as stored).

    The copy gets its own EXPNUM: it stands for another exposure, not a duplicate.
    """
    with fits.open(src, do_not_scale_image_data=True) as hdul:
        hdul.readall()
        hdul[0].header["EXPNUM"] = unique_expnum(dest)
        edit(hdul)
        hdul.writeto(dest, output_verify="silentfix")
    return str(dest)


def empty_file(src: str, dest: Path) -> str:
    dest.write_bytes(b"")
    return str(dest)


def truncated(src: str, dest: Path) -> str:
    raw = Path(src).read_bytes()
    dest.write_bytes(raw[: len(raw) * 2 // 3])
    return str(dest)


def not_fits(src: str, dest: Path) -> str:
    dest.write_text("SIMPLE? no: this is a text file that somebody named .fits\n" * 80)
    return str(dest)


def extension_missing(src: str, dest: Path) -> str:
    """The second amplifier's image extension is gone."""
    return _rewrite(src, dest, lambda hdul: hdul.pop(2))


def wrong_shape(src: str, dest: Path) -> str:
    """AMP2 lost half of its columns (the instrument's amp is 128 + overscan wide)."""

    def edit(hdul):
        hdul[2] = fits.ImageHDU(hdul[2].data[:, : hdul[2].data.shape[1] // 2], hdul[2].header)

    return _rewrite(src, dest, edit)


def wrong_bitpix(src: str, dest: Path) -> str:
    """Pixels stored as 8-bit integers (BITPIX = 8): the camera writes 16-bit ADU."""

    def edit(hdul):
        for k in (1, 2):
            header = hdul[k].header.copy()
            for key in ("BZERO", "BSCALE"):
                header.remove(key, ignore_missing=True)
            data = (hdul[k].data.astype(np.int32) + 32768) // 256
            hdul[k] = fits.ImageHDU(data.astype(np.uint8), header)

    return _rewrite(src, dest, edit)


def blank_region(src: str, dest: Path) -> str:
    """A 100 x 90 block of AMP1 is BLANK (read as NaN), as a dropped readout packet gives.

    The block covers detector pixels x 20..109, y 60..159 (AMP1's data columns come first).
    """

    def edit(hdul):
        hdul[1].header["BLANK"] = -32768
        data = hdul[1].data.copy()
        data[60:160, 20:110] = -32768
        hdul[1].data = data

    return _rewrite(src, dest, edit)


def drop_key(key: str):
    def corrupt(src: str, dest: Path) -> str:
        return _rewrite(src, dest, lambda hdul: hdul[0].header.remove(key))

    corrupt.__name__ = f"missing_{key.replace('-', '_').lower()}"
    return corrupt


def no_wcs(src: str, dest: Path) -> str:
    """Every WCS keyword removed from the amplifier headers."""

    def edit(hdul):
        for hdu in hdul[1:]:
            for key in list(hdu.header):
                if key.startswith(("CTYPE", "CRVAL", "CRPIX", "CD1_", "CD2_", "CDELT", "CUNIT")):
                    hdu.header.remove(key, ignore_missing=True, remove_all=True)

    return _rewrite(src, dest, edit)


def invalid_wcs(src: str, dest: Path) -> str:
    """A singular CD matrix (all zeros): no sky position can be computed."""

    def edit(hdul):
        for hdu in hdul[1:]:
            for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
                hdu.header[key] = 0.0

    return _rewrite(src, dest, edit)


def saturated(src: str, dest: Path) -> str:
    """Every pixel at the 16-bit ceiling (a shutter that stayed open in daylight)."""

    def edit(hdul):
        for hdu in hdul[1:]:
            hdu.data = np.full_like(hdu.data, 32767)  # stored int16 + BZERO 32768 = 65535 ADU

    return _rewrite(src, dest, edit)


def duplicate(src: str, dest: Path) -> str:
    """The same exposure again under another name (same EXPNUM, same bytes)."""
    shutil.copyfile(src, dest)
    return str(dest)
