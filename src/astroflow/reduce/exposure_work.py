"""One worker's task: raw exposures in, their photometry and cutouts out.

The unit of parallel work in a field is the exposure: a task reads its amplifiers, calibrates
(or takes the calibrated exposure from the cache), and measures and cuts out every catalog
object, so only the per-object products (~13 MB for 549 objects of 48 x 48 pixels) travel
back, never a calibrated exposure (~9 bytes per pixel). The task gets the master calibrations
in its own process (:func:`~astroflow.reduce.masters.cached_masters`: inherited from a forked
parent, else loaded once per worker), and the catalog either with its arguments or, when it
was submitted before detection finished, from the field's
:class:`~astroflow.reduce.board.CatalogBoard`: it calibrates first and waits only then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from astroflow.io.fits_read import FrameError
from astroflow.reduce.assemble import Layout
from astroflow.reduce.board import post_catalog, take_catalog
from astroflow.reduce.cache import ExposureCache
from astroflow.reduce.calibrate import Exposure, amp_task, finish_exposure
from astroflow.reduce.detect import Catalog, detect_objects
from astroflow.reduce.masters import Masters, cached_masters
from astroflow.reduce.products import Product, ProductCache, exposure_product, product_kept


@dataclass
class DetectionFrame:
    """The exposure objects were detected on: what the object table records of it."""

    path: str
    psf_fwhm_arcsec: float
    depth_mag_5sigma: float

    @classmethod
    def of(cls, exposure: Exposure) -> DetectionFrame:
        return cls(exposure.path, exposure.psf_fwhm_arcsec, exposure.depth_mag_5sigma)


@dataclass(frozen=True)
class KeptProduct:
    """A product a worker kept in the product cache, to be read there by the job."""

    path: str
    sha256: str


@dataclass
class Detection:
    """What detection returns: the frame, the catalog, and the exposure's own product."""

    frame: DetectionFrame
    catalog: Catalog
    product: Product | KeptProduct | None


@dataclass(frozen=True)
class ExposureWork:
    """What every exposure task of a field shares (small and picklable: no arrays).

    Attributes
    ----------
    cfg : dict
        Resolved config (``instrument`` and ``reduce``).
    calib_dir : str
        Directory of the master calibrations.
    exposures, products : ExposureCache or None
        The caches to take from and keep into (None: no cache).
    by_reference : bool
        Whether tasks run in other processes: then a product kept in the cache comes back as
        a :class:`KeptProduct`, which the job reads from the cache (a page-cache copy)
        rather than receive through a pipe (pickled, ~13 MB, and the worker blocked until
        the job takes it).
    """

    cfg: dict
    calib_dir: str
    exposures: ExposureCache | None
    products: ProductCache | None
    by_reference: bool = False

    def masters(self) -> Masters:
        return cached_masters(self.calib_dir, Layout.from_config(self.cfg))

    def calibrated(self, path: str, sha256: str | None) -> Exposure | FrameError:
        """The calibrated exposure at ``path``: from the cache, or read and calibrated (and
        kept when the cache keeps exposures); a bad exposure comes back as its error."""
        cache = self.exposures
        if cache is not None and sha256 is not None and cache.has(sha256):
            return cache.load(path, sha256)
        layout = Layout.from_config(self.cfg)
        method = self.cfg["reduce"]["overscan_method"]
        amps = [amp_task(path, k, layout, method) for k in range(layout.n_amps)]
        exposure = finish_exposure(path, amps, self.cfg, self.masters())
        if isinstance(exposure, Exposure) and exposure.band == "":
            return FrameError(path, "PRIMARY", "empty FILTER")
        if isinstance(exposure, Exposure) and cache is not None and sha256 is not None:
            cache.save(exposure, sha256, amps[0].name, amps[0].header)
        return exposure

    def product(
        self, exposure: Exposure | FrameError, sha256: str | None, catalog: Catalog
    ) -> Product | KeptProduct | FrameError:
        """Photometry and cutouts of every catalog object (kept when there is a cache)."""
        size = int(self.cfg["reduce"]["cutout_size"])
        scale = float(self.cfg["instrument"]["pixel_scale_arcsec"])
        batch = int(self.cfg["reduce"]["chunk_objects"])
        if self.products is None or sha256 is None:
            return exposure_product(exposure, catalog, size, scale, batch)
        product = product_kept(self.products, sha256, exposure, catalog, size, scale, batch)
        if self.by_reference and isinstance(product, Product):
            return KeptProduct(product.path, sha256)
        return product


def detect(
    work: ExposureWork, path: str, sha256: str | None, board: str, with_product: bool = True
) -> Detection | FrameError:
    """Calibrate the detection exposure, detect, post the catalog on ``board`` (and keep it),
    then make the exposure's own product (unless ``with_product`` is false)."""
    exposure = work.calibrated(path, sha256)
    if isinstance(exposure, FrameError):
        return exposure
    reduce = work.cfg["reduce"]
    catalog = detect_objects(
        exposure, float(reduce["detect_sigma"]), int(reduce["detect_min_area"])
    )
    post_catalog(board, catalog)
    frame = DetectionFrame.of(exposure)
    if work.products is not None and sha256 is not None:
        work.products.save_catalog(sha256, catalog, dataclasses.asdict(frame))
    product = work.product(exposure, sha256, catalog) if with_product else None
    return Detection(frame, catalog, product)


def exposure_products(
    work: ExposureWork, items: list[tuple[str, str | None]], catalog: Catalog | str
) -> list[Product | KeptProduct | FrameError]:
    """The products of ``items`` ((path, sha256) pairs), in order.

    ``catalog`` is the catalog, or the path of the board it will be posted on: exposures
    calibrated before it is posted wait, calibrated, until it is (so a task of two exposures
    keeps its worker busy while detection runs elsewhere).
    """
    if isinstance(catalog, str):
        board, catalog = catalog, take_catalog(catalog, wait=False)
    products: list[Product | KeptProduct | FrameError | None] = []
    waiting: list[tuple[int, Exposure | FrameError, str | None]] = []
    for path, sha256 in items:
        exposure = work.calibrated(path, sha256)
        if catalog is None:
            catalog = take_catalog(board, wait=False)
        if catalog is None:
            waiting.append((len(products), exposure, sha256))
            products.append(None)
        else:
            products.append(work.product(exposure, sha256, catalog))
    if waiting:
        catalog = take_catalog(board)
        for index, exposure, sha256 in waiting:
            products[index] = work.product(exposure, sha256, catalog)
    return products
