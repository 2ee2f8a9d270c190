"""Keys of the per-exposure caches, and the calibrated-exposure cache itself.

Snakemake reruns a whole field when one of its exposures is added. What an exposure
contributes depends only on its bytes, the master calibrations, the calibration config and
code (and, for its products, on the catalog and cutout settings), so each cached item is keyed
by the sha256 of those, under ``results/reduce/exposures/``. By default only the small items
are kept: the detection catalog and each exposure's photometry and cutouts
(:mod:`astroflow.reduce.products`), which is all a rerun after adding exposures needs. With
``reduce.keep_calibrated`` the calibrated exposure itself is kept too (``<key>.npys``, ~9 bytes
per pixel), so that new detection or cutout settings re-sample without re-calibrating.

Items are back-to-back ``.npy`` records (:func:`write_records`), written atomically and read
sequentially, without the zip container and CRC of ``.npz``, which cost more than the copy.
A cached exposure is bit-identical to a fresh one (float32 planes saved as they are; the WCS
rebuilt from the amplifier header text it was first built from), so a field reduced partly
from the cache has the same digest as one reduced from scratch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
from astropy.io import fits

from astroflow.config import config_hash
from astroflow.io.profile import profile_from_config
from astroflow.reduce.assemble import detector_wcs
from astroflow.reduce.calibrate import Exposure
from astroflow.reduce.masters import Masters

log = logging.getLogger(__name__)

_PKG = Path(__file__).resolve().parent
#: Sources whose edits change a calibrated exposure (their hash is part of the cache key).
CALIBRATION_SOURCES = [
    _PKG / "calibrate.py",
    _PKG / "cosmics.py",
    _PKG / "islands.py",
    _PKG / "assemble.py",
    _PKG / "masters.py",
    _PKG / "arrays.py",
    _PKG.parent / "io" / "fits_read.py",
    _PKG.parent / "io" / "archive.py",
    _PKG.parent / "io" / "profile.py",
]
_SCALARS = (
    "path",
    "expnum",
    "band",
    "exptime_s",
    "mjd",
    "background_rms",
    "psf_fwhm_pix",
    "psf_fwhm_arcsec",
    "psf_aperture_pix",
    "aperture_correction",
    "depth_mag_5sigma",
    "zeropoint_mag",
    "n_cosmic",
)


def calibration_code_hash() -> str:
    """sha256 over the calibration source files (names and bytes)."""
    return source_hash(CALIBRATION_SOURCES)


class ExposureCache:
    """Load and store calibrated exposures under ``root`` (``root=None`` disables the cache).

    Parameters
    ----------
    root : str, Path or None
        Cache directory (``results/reduce/exposures``).
    cfg : dict
        Resolved config; ``instrument`` and ``reduce.overscan_method`` enter the key.
    masters : Masters
        Master calibrations; their input sha256s enter the key.
    """

    def __init__(self, root: str | Path | None, cfg: dict, masters: Masters):
        self.root = Path(root) if root is not None else None
        #: Whether calibrated exposures are kept (``reduce.keep_calibrated``); the directory
        #: and keys serve the catalogs and products of :mod:`astroflow.reduce.products` anyway.
        self.keep_exposures = bool(cfg["reduce"].get("keep_calibrated", False))
        salt = {
            "masters": dict(sorted(masters.inputs.items())),
            "config": config_hash(
                {
                    "instrument": cfg["instrument"],
                    # the profile's content, not only its name: an edited profile recalibrates
                    "profile": profile_from_config(cfg).spec,
                    "overscan_method": cfg["reduce"]["overscan_method"],
                    "cosmic_rays": cfg["reduce"].get("cosmic_rays") or {},
                }
            ),
            "code": calibration_code_hash(),
        }
        self.salt = hashlib.sha256(json.dumps(salt, sort_keys=True).encode()).hexdigest()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def file(self, exposure_sha256: str) -> Path:
        """Cache file of the exposure with this content hash."""
        key = hashlib.sha256(f"{exposure_sha256}:{self.salt}".encode()).hexdigest()[:40]
        return self.root / f"{key}.npys"

    def has(self, exposure_sha256: str) -> bool:
        return self.enabled and self.keep_exposures and self.file(exposure_sha256).is_file()

    def load(self, path: str, exposure_sha256: str) -> Exposure:
        """The cached calibrated exposure of ``path`` (which must be cached)."""
        meta, image, variance, mask = read_records(self.file(exposure_sha256), 4)
        meta = json.loads(str(meta))
        header = fits.Header.fromstring(meta.pop("amp_header"))
        wcs = detector_wcs(path, meta.pop("amp_name"), header)
        scalars = {k: meta[k] for k in _SCALARS}
        scalars["path"] = path
        return Exposure(image=image, variance=variance, mask=mask, wcs=wcs, **scalars)

    def save(
        self, exposure: Exposure, exposure_sha256: str, amp_name: str, amp_header: fits.Header
    ) -> None:
        """Store ``exposure`` atomically (temporary file, then rename), when kept."""
        if not (self.enabled and self.keep_exposures):
            return
        meta = {k: getattr(exposure, k) for k in _SCALARS}
        meta["amp_name"] = amp_name
        meta["amp_header"] = amp_header.tostring()
        arrays = [np.array(json.dumps(meta)), exposure.image, exposure.variance, exposure.mask]
        write_records(self.file(exposure_sha256), arrays)
        log.debug("cached %s as %s", exposure.path, self.file(exposure_sha256).name)


def write_records(final: Path, arrays: list[np.ndarray]) -> None:
    """Write ``arrays`` as back-to-back ``.npy`` records, atomically (temporary, rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as fh:
        for array in arrays:
            np.save(fh, array, allow_pickle=False)
    os.replace(tmp, final)


def read_records(path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` ``.npy`` records of a file written by :func:`write_records`."""
    with open(path, "rb") as fh:
        return [np.load(fh, allow_pickle=False) for _ in range(count)]


def source_hash(paths: list[Path]) -> str:
    """sha256 over source files (names and bytes): code that makes a cached product."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
