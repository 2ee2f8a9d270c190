"""What one exposure contributes to its field (photometry and cutouts), and a cache of it.

An exposure added to a field changes neither the detection catalog (unless it is the detection
exposure) nor the other exposures' photometry and cutouts, so a rerun need only make the new
exposure's. Next to the calibrated exposures (:mod:`astroflow.reduce.cache`), the detection
catalog is kept per detection exposure and detection settings (``<key>.catalog``), and each
exposure's product per exposure, catalog and cutout settings (``<key>.products``), as
back-to-back ``.npy`` records. Keys also hold the source of the code that makes them, so an
edit to detection or resampling remakes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astroflow.config import config_hash
from astroflow.io.fits_read import FrameError
from astroflow.reduce.cache import ExposureCache, read_records, source_hash, write_records
from astroflow.reduce.calibrate import Exposure
from astroflow.reduce.cutouts import sample_cutouts, weigh
from astroflow.reduce.detect import Catalog, Photometry, measure

_PKG = Path(__file__).resolve().parent
#: Sources whose edits change an exposure's product (part of the product key).
_PRODUCT_SOURCES = ("detect.py", "cutouts.py", "products.py")
_CATALOG_FIELDS = [f.name for f in dataclasses.fields(Catalog)]
_PHOTOMETRY_FIELDS = [f.name for f in dataclasses.fields(Photometry)]


@dataclass
class Product:
    """What one exposure contributes: its photometry, and its cutouts of every object weighed
    for their band's combination (:func:`~astroflow.reduce.cutouts.weigh`)."""

    path: str
    expnum: str
    band: str
    photometry: Photometry
    cutouts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def exposure_product(
    exposure: Exposure | FrameError, catalog: Catalog, size: int, scale: float, batch: int
) -> Product | FrameError:
    """Photometry and cutouts of every catalog object in one calibrated exposure."""
    if isinstance(exposure, FrameError):
        return exposure
    cutouts = sample_cutouts(exposure, catalog.ra, catalog.dec, size, scale, batch=batch)
    return Product(
        exposure.path, exposure.expnum, exposure.band, measure(exposure, catalog), weigh(*cutouts)
    )


def catalog_digest(catalog: Catalog) -> str:
    """sha256 over a catalog's columns (which objects, where, with which apertures)."""
    digest = hashlib.sha256()
    for name in _CATALOG_FIELDS:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(getattr(catalog, name), dtype="<f8").tobytes())
    return digest.hexdigest()


class ProductCache:
    """Detection catalogs and exposure products beside the calibrated-exposure cache.

    Parameters
    ----------
    exposures : ExposureCache
        The enabled calibrated-exposure cache: its keys (raw bytes, masters, calibration config
        and code) start these keys.
    cfg : dict
        Resolved config: the detection and cutout settings enter the keys.
    """

    def __init__(self, exposures: ExposureCache, cfg: dict):
        self.exposures = exposures
        self._last_digest: tuple[Catalog, str] | None = None
        reduce = cfg["reduce"]
        self._detect_salt = config_hash(
            {
                "sigma": float(reduce["detect_sigma"]),
                "min_area": int(reduce["detect_min_area"]),
                "code": source_hash([_PKG / "detect.py"]),
            }
        )
        self._product_salt = config_hash(
            {
                "size": int(reduce["cutout_size"]),
                "scale": float(cfg["instrument"]["pixel_scale_arcsec"]),
                "code": source_hash(
                    [_PKG / "detect.py", _PKG / "cutouts.py", _PKG / "products.py"]
                ),
            }
        )

    def _digest(self, catalog: Catalog) -> str:
        """:func:`catalog_digest`, remembered for the last catalog (a field asks for every
        exposure with the same one)."""
        if self._last_digest is None or self._last_digest[0] is not catalog:
            self._last_digest = (catalog, catalog_digest(catalog))
        return self._last_digest[1]

    def _file(self, exposure_sha256: str, kind: str, salt: str) -> Path:
        base = self.exposures.file(exposure_sha256).stem
        key = hashlib.sha256(f"{base}:{salt}".encode()).hexdigest()[:40]
        return self.exposures.root / f"{key}.{kind}"

    # -- detection catalogs ---------------------------------------------------------------------
    def load_catalog(self, exposure_sha256: str) -> tuple[Catalog, dict] | None:
        """(catalog, the detection exposure's scalars) of this exposure and settings, if kept."""
        path = self._file(exposure_sha256, "catalog", self._detect_salt)
        if not path.is_file():
            return None
        meta, *columns = read_records(path, 1 + len(_CATALOG_FIELDS))
        return Catalog(*columns), json.loads(str(meta))

    def save_catalog(self, exposure_sha256: str, catalog: Catalog, scalars: dict) -> None:
        """Keep ``catalog`` with JSON-able ``scalars`` of its exposure (PSF, depth)."""
        path = self._file(exposure_sha256, "catalog", self._detect_salt)
        write_records(path, [np.array(json.dumps(scalars)), *catalog.columns()])

    # -- exposure products ----------------------------------------------------------------------
    def _product_file(self, exposure_sha256: str, digest: str) -> Path:
        return self._file(exposure_sha256, "products", f"{self._product_salt}:{digest}")

    def has_product(self, exposure_sha256: str, catalog: Catalog) -> bool:
        return self._product_file(exposure_sha256, self._digest(catalog)).is_file()

    def load_product(self, path: str, exposure_sha256: str, catalog: Catalog) -> Product:
        """The kept product of the exposure at ``path`` (which must be kept)."""
        file = self._product_file(exposure_sha256, self._digest(catalog))
        count = 1 + len(_PHOTOMETRY_FIELDS) + 4
        meta, *arrays = read_records(file, count)
        meta = json.loads(str(meta))
        photometry = Photometry(*arrays[: len(_PHOTOMETRY_FIELDS)])
        cutouts = tuple(arrays[len(_PHOTOMETRY_FIELDS) :])
        return Product(path, meta["expnum"], meta["band"], photometry, cutouts)

    def save_product(self, product: Product, exposure_sha256: str, catalog: Catalog) -> None:
        file = self._product_file(exposure_sha256, self._digest(catalog))
        meta = np.array(json.dumps({"expnum": product.expnum, "band": product.band}))
        photometry = [getattr(product.photometry, f) for f in _PHOTOMETRY_FIELDS]
        write_records(file, [meta, *photometry, *product.cutouts])


def product_kept(
    cache: ProductCache,
    exposure_sha256: str,
    exposure: Exposure | FrameError,
    catalog: Catalog,
    size: int,
    scale: float,
    batch: int,
) -> Product | FrameError:
    """:func:`exposure_product`, kept in ``cache`` (one Dask task: the write runs in parallel)."""
    product = exposure_product(exposure, catalog, size, scale, batch)
    if isinstance(product, Product):
        cache.save_product(product, exposure_sha256, catalog)
    return product
