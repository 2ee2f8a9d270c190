"""Reduce one field end to end: calibrate, detect, measure, cut out, label, store.

Exposures (and, inside each, amplifiers) are Dask tasks, computed on the scheduler that
:func:`astroflow.dask_cluster.dask_client` picks from the ``dask`` config section (the rule's
``threads`` on the threaded scheduler by default). Exposures are submitted in batches of the
runner's parallelism, together with the calibration of up to ``parallelism - 1`` exposures of
the next batch (so no thread idles behind detection or a batch's slowest task); each product
task returns only the per-object products (photometry and cutouts), which are folded into
per-band accumulators in a fixed order. So at most two calibrated exposures per worker thread
(one with a single thread, plus the detection exposure) are alive at a time, and the result
does not depend on which task finished first (deterministic output).

Calibrated exposures are cached per exposure (:mod:`astroflow.reduce.cache`): a rerun after
exposures were added calibrates only the new ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dask
import numpy as np
import pandas as pd
from dask.delayed import Delayed

import astroflow
from astroflow.config import config_hash
from astroflow.dask_cluster import DaskRunner, dask_client
from astroflow.io.fits_read import FrameError, read_primary_header, sha256_file
from astroflow.io.profile import InstrumentProfile, load_profile
from astroflow.reduce.arrays import njy_per_e_per_s
from astroflow.reduce.assemble import Layout
from astroflow.reduce.cache import ExposureCache
from astroflow.reduce.calibrate import Exposure, amp_task, finish_exposure
from astroflow.reduce.cutouts import BandAccumulator
from astroflow.reduce.detect import Catalog, detect_objects, flux_to_mag
from astroflow.reduce.labels import labels_columns, match_labels, match_morphology, read_labels
from astroflow.reduce.masters import Masters, load_masters
from astroflow.reduce.products import Product, ProductCache, exposure_product, product_kept
from astroflow.reduce.store import field_digest, write_field_store, write_parquet, write_text

log = logging.getLogger(__name__)


@dataclass
class DetectionFrame:
    """The exposure objects were detected on: what the object table records of it."""

    path: str
    psf_fwhm_arcsec: float
    depth_mag_5sigma: float

    @classmethod
    def of(cls, exposure: Exposure) -> DetectionFrame:
        return cls(exposure.path, exposure.psf_fwhm_arcsec, exposure.depth_mag_5sigma)


@dataclass
class FieldResult:
    """Summary of a reduced field."""

    n_objects: int
    n_exposures: int
    n_quarantined: int
    digest: str
    n_calibrated: int = 0
    n_from_cache: int = 0


def _order_key(path: str, bands: list[str], profile: InstrumentProfile | None = None) -> tuple:
    """Sort exposures by band order, then EXPNUM, then path (unreadable ones last)."""
    profile = profile or load_profile()
    try:
        header = read_primary_header(path)
    except FrameError:
        return (len(bands) + 1, 0, "", path)
    band = str(profile.get(header, "filter") or "").strip()
    expnum = profile.get(header, "expnum")
    expnum = 0 if expnum is None else expnum
    try:
        expnum_key = (int(expnum), "")
    except (TypeError, ValueError):
        expnum_key = (0, str(expnum))
    return (bands.index(band) if band in bands else len(bands), *expnum_key, path)


class _FieldSums:
    """Per-band sums an exposure's products are folded into: cutout accumulators,
    inverse-variance photometry sums and the exposure ids covering each object."""

    def __init__(self, n: int, size: int, bands: list[str]):
        self.acc = {b: BandAccumulator((n, size, size)) for b in bands}
        self.phot = {
            b: {k: np.zeros(n) for k in ("wf_auto", "w_auto", "wf_psf", "w_psf")} for b in bands
        }
        self.ids: dict[str, list[list[str]]] = {b: [[] for _ in range(n)] for b in bands}

    def add(self, product: Product) -> None:
        self.acc[product.band].add(*product.cutouts)
        p = product.photometry
        phot = self.phot[product.band]
        for kind in ("auto", "psf"):
            flux, var = getattr(p, f"flux_{kind}"), getattr(p, f"var_{kind}")
            ok = p.covered & (var > 0) & np.isfinite(flux)
            w = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
            phot[f"wf_{kind}"] += w * np.where(ok, flux, 0.0)
            phot[f"w_{kind}"] += w
        ids = self.ids[product.band]
        for i in np.flatnonzero(p.covered):
            ids[i].append(product.expnum)


class FieldReducer:
    """Reduce the exposures of one field (see module docstring)."""

    def __init__(
        self,
        cfg: dict,
        field: str,
        masters: Masters,
        runner: DaskRunner,
        cache: ExposureCache | None = None,
    ):
        self.cfg = cfg
        self.field = field
        self.masters = masters
        self.runner = runner
        self.threads = runner.parallelism
        self.cache = cache
        enabled = cache is not None and cache.enabled
        self.products = ProductCache(cache, cfg) if enabled else None
        #: sha256 of every exposure file, filled by :meth:`run` (provenance and cache keys).
        self.sha256: dict[str, str] = {}
        self.n_calibrated = 0
        self.n_from_cache = 0
        self.layout = Layout.from_config(cfg)
        self.bands: list[str] = list(cfg["instrument"]["bands"])
        self.size = int(cfg["reduce"]["cutout_size"])
        self.scale = float(cfg["instrument"]["pixel_scale_arcsec"])
        self.quarantine: list[dict] = []

    # -- Dask graph pieces -------------------------------------------------------------------
    def _exposure_task(self, path: str):
        """Delayed calibrated exposure: from the cache, or one task per amplifier + finish."""
        sha = self.sha256.get(path)
        cache = self.cache
        if cache is not None and sha is not None and cache.has(sha):
            self.n_from_cache += 1
            return dask.delayed(cache.load)(path, sha)
        self.n_calibrated += 1
        method = self.cfg["reduce"]["overscan_method"]
        amps = [
            dask.delayed(amp_task)(path, k, self.layout, method) for k in range(self.layout.n_amps)
        ]
        cfg, masters = self.cfg, self.masters

        def finish(amp_results):
            exposure = finish_exposure(path, amp_results, cfg, masters)
            if isinstance(exposure, Exposure) and exposure.band == "":
                return FrameError(path, "PRIMARY", "empty FILTER")
            if isinstance(exposure, Exposure) and cache is not None and sha is not None:
                cache.save(exposure, sha, amp_results[0].name, amp_results[0].header)
            return exposure

        return dask.delayed(finish)(amps)

    def _product_task(self, item, catalog):
        """Delayed product of a queue item (a path, or an exposure/error in hand): kept from
        an earlier run when the catalog is known and unchanged, else made (and kept).

        Free functions only: the task must not carry the runner, whose distributed client
        cannot be pickled to workers.
        """
        path = item if isinstance(item, str) else getattr(item, "path", None)
        sha = self.sha256.get(path) if path is not None else None
        if self._product_is_kept(item, catalog):
            if isinstance(item, str):
                self.n_from_cache += 1
            return dask.delayed(self.products.load_product)(path, sha, catalog)
        batch = int(self.cfg["reduce"]["chunk_objects"])
        source = self._source(item)
        if self.products is not None and sha is not None and not isinstance(item, FrameError):
            return dask.delayed(product_kept)(
                self.products, sha, source, catalog, self.size, self.scale, batch
            )
        return dask.delayed(exposure_product)(source, catalog, self.size, self.scale, batch)

    def _product_is_kept(self, item, catalog) -> bool:
        if self.products is None or isinstance(catalog, Delayed):
            return False
        if not isinstance(item, str | Exposure):
            return False
        sha = self.sha256.get(item if isinstance(item, str) else item.path)
        return sha is not None and self.products.has_product(sha, catalog)

    def _compute(self, tasks: list):
        return self.runner.compute(*tasks)

    def _set_aside(self, error: FrameError) -> None:
        if self.cfg["reduce"]["strict"]:
            raise error
        log.warning("quarantined %s", error)
        self.quarantine.append(error.to_entry())

    # -- stages -------------------------------------------------------------------------------
    def _check_field(self, paths: list[str]) -> list[str]:
        """Drop (quarantine) exposures that are not science frames of this field."""
        usable = []
        for path in paths:
            try:
                header = read_primary_header(path)
            except FrameError as exc:
                self._set_aside(exc)
                continue
            obj = str(self.layout.profile.get(header, "object") or "").strip()
            if obj and obj != self.field:
                key = self.layout.profile.key("object")
                self._set_aside(
                    FrameError(path, "PRIMARY", f"{key} {obj!r} is not field {self.field!r}")
                )
                continue
            usable.append(path)
        return usable

    def _detection_exposure(
        self, paths: list[str]
    ) -> tuple[Exposure | None, dict[str, Exposure | FrameError], list[str]]:
        """Calibrate detection-band exposures in order until one is usable.

        Each try calibrates the next ``parallelism - 1`` exposures alongside, which the first
        batch of products needs anyway, so no worker idles while detection waits for its
        exposure. Returns (detection exposure or None, those already calibrated by path, the
        paths other than the detection exposure's, in order).
        """
        band = self.cfg["reduce"]["detection_band"]
        remaining = list(paths)
        done: dict[str, Exposure | FrameError] = {}
        for path in paths:
            try:
                header = read_primary_header(path)
                header_band = str(self.layout.profile.get(header, "filter") or "").strip()
            except FrameError:
                continue
            if header_band != band:
                continue
            remaining.remove(path)
            if path in done:
                result = done.pop(path)
            else:
                along = [p for p in remaining if p not in done][: self.threads - 1]
                result, *others = self._compute([self._exposure_task(p) for p in (path, *along)])
                done.update(zip(along, others, strict=True))
            if isinstance(result, FrameError):
                self._set_aside(result)
                continue
            return result, done, remaining
        return None, done, remaining

    def run(self, paths: list[str]) -> tuple[dict, pd.DataFrame, list[str]]:
        """Reduce ``paths``; returns (planes, objects table, used exposure paths)."""
        # Ties (a repeated exposure id) keep the order given, so the first copy given is the
        # one co-added and later copies are set aside as duplicates (see the fold below).
        order = {p: i for i, p in reversed(list(enumerate(paths)))}
        paths = sorted(
            paths, key=lambda p: (*_order_key(p, self.bands, self.layout.profile)[:-1], order[p])
        )
        paths = self._check_field(paths)
        with ThreadPoolExecutor(max_workers=max(2, self.threads)) as pool:  # I/O, no GIL
            self.sha256 = dict(zip(paths, pool.map(sha256_file, paths), strict=True))
        kept = self._kept_detection(paths)
        if kept is not None:  # detected in an earlier run: nothing to calibrate for it
            detection, catalog = kept
            queue: list = [detection.path] + [p for p in paths if p != detection.path]
        else:
            exposure, calibrated, rest = self._detection_exposure(paths)
            queue = ([exposure] if exposure is not None else []) + [
                calibrated.get(p, p) for p in rest
            ]
            detection = DetectionFrame.of(exposure) if exposure is not None else None
            if exposure is None:
                log.warning(
                    "field %s: no usable %s-band exposure; writing an empty store",
                    self.field,
                    self.cfg["reduce"]["detection_band"],
                )
                catalog = Catalog.empty()
            else:  # computed with the first batch, while other threads calibrate ahead
                catalog = dask.delayed(detect_objects)(
                    dask.delayed(exposure, traverse=False),
                    float(self.cfg["reduce"]["detect_sigma"]),
                    int(self.cfg["reduce"]["detect_min_area"]),
                )
        used: list[str] = []
        folded: dict[str, str] = {}  # exposure id -> the file co-added under it
        total = len(queue)
        step = self.threads
        fold = None
        for start in range(0, total, step):
            batch = queue[start : start + step]
            tasks = [self._product_task(item, catalog) for item in batch]
            # Calibrate up to threads - 1 of the next batch's exposures meanwhile, so threads do
            # not idle behind detection or a batch's slowest task (at most 2 x threads
            # calibrated exposures alive; none ahead with one thread).
            ahead = [
                i
                for i in range(start + step, min(start + 2 * step - 1, total))
                if isinstance(queue[i], str) and not self._product_is_kept(queue[i], catalog)
            ]
            found, products, early = self._compute(
                [
                    [catalog] if isinstance(catalog, Delayed) else [],
                    tasks,
                    [self._exposure_task(queue[i]) for i in ahead],
                ]
            )
            if found:
                (catalog,) = found
                if self.products is not None and detection.path in self.sha256:
                    self.products.save_catalog(
                        self.sha256[detection.path], catalog, dataclasses.asdict(detection)
                    )
                log.info(
                    "field %s: %d objects detected on %s",
                    self.field,
                    len(catalog),
                    detection.path,
                )
            if fold is None:
                fold = _FieldSums(len(catalog), self.size, self.bands)
            queue[start : start + step] = [None] * len(batch)  # done: let them go
            for i, exposure in zip(ahead, early, strict=True):
                queue[i] = exposure
            for product in products:
                if isinstance(product, FrameError):
                    self._set_aside(product)
                    continue
                if self._is_duplicate(product, folded):
                    continue
                fold.add(product)
                used.append(product.path)
            log.info(
                "field %s: %d/%d exposures processed",
                self.field,
                min(start + step, total),
                total,
            )
        if fold is None:  # no usable exposure at all
            fold = _FieldSums(len(catalog), self.size, self.bands)
        log.info(
            "field %s: %d exposure(s) calibrated, %d taken from the exposure cache",
            self.field,
            self.n_calibrated,
            self.n_from_cache,
        )
        planes = self._planes(fold.acc)
        table = self._table(catalog, detection, fold.phot, fold.ids)
        return planes, table, used

    def _kept_detection(self, paths: list[str]) -> tuple[DetectionFrame, Catalog] | None:
        """The catalog an earlier run detected on the first detection-band exposure (same
        exposure, calibration and detection settings), with that exposure's PSF and depth."""
        if self.products is None:
            return None
        band = self.cfg["reduce"]["detection_band"]
        for path in paths:
            try:
                header = read_primary_header(path)
            except FrameError:
                continue
            if str(self.layout.profile.get(header, "filter") or "").strip() != band:
                continue
            kept = self.products.load_catalog(self.sha256[path])
            if kept is None:
                return None
            catalog, scalars = kept
            log.info(
                "field %s: %d objects, detected on %s in an earlier run",
                self.field,
                len(catalog),
                path,
            )
            return DetectionFrame(**{**scalars, "path": path}), catalog
        return None

    def _source(self, item):
        """Delayed calibrated exposure of a queue item (a path, or an exposure/error in hand)."""
        if isinstance(item, str):
            return self._exposure_task(item)
        return dask.delayed(item, traverse=False)

    def _is_duplicate(self, product: Product, folded: dict[str, str]) -> bool:
        """Set ``product`` aside when its exposure id was already co-added (the same exposure
        given twice must not count twice); otherwise record it. Only ids read from the header
        count: a profile without an exposure-id keyword names exposures by file stem."""
        key = self.layout.profile.key("expnum")
        if key is None:
            return False
        kept = folded.setdefault(product.expnum, product.path)
        if kept == product.path:
            return False
        self._set_aside(
            FrameError(
                product.path,
                None,
                f"duplicate exposure {key}={product.expnum}: already co-added from {kept} (kept)",
            )
        )
        return True

    def _planes(self, acc: dict[str, BandAccumulator]) -> dict[str, np.ndarray]:
        images, variances, masks = [], [], []
        for band in self.bands:
            image, variance, mask = acc[band].result()
            factor = njy_per_e_per_s(float(self.cfg["instrument"]["zeropoint_mag"][band]))
            images.append(image * np.float32(factor))
            variances.append(variance * np.float32(factor**2))
            masks.append(mask)
        planes = {"images": np.stack(images, axis=1)}
        if self.cfg["reduce"]["write_variance"]:
            planes["variance"] = np.stack(variances, axis=1)
        if self.cfg["reduce"]["write_mask"]:
            planes["mask"] = np.stack(masks, axis=1)
        return planes

    def _table(
        self, catalog: Catalog, detection: DetectionFrame | None, phot: dict, ids: dict
    ) -> pd.DataFrame:
        n = len(catalog)
        columns: dict[str, object] = {
            "object_id": [f"{self.field}-{i:06d}" for i in range(n)],
            "field": [self.field] * n,
            "row": np.arange(n, dtype=np.int64),
            "ra": catalog.ra,
            "dec": catalog.dec,
            "x": catalog.x,
            "y": catalog.y,
            "psf_fwhm_arcsec": np.full(n, detection.psf_fwhm_arcsec if detection else np.nan),
            "depth_mag_5sigma": np.full(n, detection.depth_mag_5sigma if detection else np.nan),
        }
        det_band = self.cfg["reduce"]["detection_band"]
        for band in self.bands:
            zp = float(self.cfg["instrument"]["zeropoint_mag"][band])
            p = phot[band]
            results = {}
            for kind in ("auto", "psf"):
                w = p[f"w_{kind}"]
                has = w > 0
                flux = np.where(has, p[f"wf_{kind}"] / np.where(has, w, 1.0), np.nan)
                err = np.where(has, 1.0 / np.sqrt(np.where(has, w, 1.0)), np.nan)
                results[kind] = (flux, err)
            mag, magerr = flux_to_mag(*results["auto"], zp)
            mag_psf, _ = flux_to_mag(*results["psf"], zp)
            columns[f"mag_{band}"] = mag
            columns[f"magerr_{band}"] = magerr
            columns[f"mag_psf_{band}"] = mag_psf
            columns[f"exposure_ids_{band}"] = [",".join(e) for e in ids[band]]
            if band == det_band:
                flux_det, err_det = results["auto"]
                with np.errstate(divide="ignore", invalid="ignore"):
                    snr = flux_det / err_det
                concentration = mag_psf - mag
        columns["flux_radius_arcsec"] = catalog.flux_radius_pix * self.scale
        columns["concentration"] = concentration
        with np.errstate(divide="ignore", invalid="ignore"):
            columns["ellipticity"] = np.where(catalog.a > 0, 1.0 - catalog.b / catalog.a, np.nan)
        columns["snr"] = snr
        table = pd.DataFrame(columns)
        float_cols = [c for c in table.columns if table[c].dtype.kind == "f"]
        table[float_cols] = table[float_cols].astype(np.float64)
        return table


def reduce_field(
    cfg: dict,
    field: str,
    exposures: list[str],
    calib_dir: str,
    labels_path: str,
    out_store: str,
    out_objects: str,
    out_quarantine: str,
    threads: int = 1,
    cache_dir: str | None = None,
) -> FieldResult:
    """Reduce one field and write its store, object table and quarantine list.

    Parameters
    ----------
    threads : int
        The rule's threads, handed to :func:`astroflow.dask_cluster.dask_client`.
    cache_dir : str, optional
        Per-exposure cache (catalogs, products, and calibrated exposures with
        ``reduce.keep_calibrated``); default ``exposures/`` next to the store's directory
        (``results/reduce/exposures``). Not used when ``reduce.exposure_cache`` is false.

    Returns
    -------
    FieldResult
        Object/exposure/quarantine counts, the field digest, and how many exposures were
        calibrated here versus taken from the cache.
    """
    from pathlib import Path

    layout = Layout.from_config(cfg)
    masters = load_masters(calib_dir, layout)
    if cache_dir is None:
        cache_dir = str(Path(out_store).resolve().parent.parent / "exposures")
    cache = ExposureCache(cache_dir, cfg, masters) if cfg["reduce"]["exposure_cache"] else None
    with dask_client(cfg, threads) as runner:
        reducer = FieldReducer(cfg, field, masters, runner, cache)
        planes, table, used = reducer.run([str(p) for p in exposures])
    dask_spec = {k: v for k, v in runner.spec.items() if k != "job_script"}
    malformed: list[int] = []
    labels = read_labels(labels_path, labels_columns(cfg), malformed)
    if malformed:
        reducer._set_aside(
            FrameError(
                labels_path,
                None,
                f"malformed labels catalog row(s) skipped (line(s) "
                f"{', '.join(map(str, malformed))}); its other rows label",
            )
        )
    table["label"] = match_labels(
        table["ra"].to_numpy(),
        table["dec"].to_numpy(),
        labels,
        float(cfg["reduce"]["match_radius_arcsec"]),
    ).astype(np.int8)
    table = table.assign(**match_morphology(
        table["ra"].to_numpy(), table["dec"].to_numpy(), labels,
        float(cfg["reduce"]["match_radius_arcsec"]),
    ))  # fmt: skip
    digest = field_digest(planes["images"], table)
    inputs = {p: reducer.sha256[p] for p in sorted(used)}
    inputs.update(masters.inputs)
    inputs[str(labels_path)] = sha256_file(labels_path)
    attrs = {
        "bands": list(cfg["instrument"]["bands"]),
        "pixel_scale_arcsec": float(cfg["instrument"]["pixel_scale_arcsec"]),
        "flux_unit": "nJy",
        "field": field,
        "n_objects": len(table),
        "digest": digest,
        "cutout_centre_pix": [cfg["reduce"]["cutout_size"] // 2] * 2,
        "mask_bits": {"1": "bad/saturated/bleed", "2": "cosmic ray", "4": "off-detector"},
        "provenance": {
            "inputs": dict(sorted(inputs.items())),
            "config_hash": config_hash({k: cfg[k] for k in ("reduce", "instrument")}),
            "code_version": astroflow.__version__,
        },
        "dask": dask_spec,
    }
    write_field_store(out_store, planes, attrs, int(cfg["reduce"]["chunk_objects"]))
    write_parquet(out_objects, table)
    write_text(out_quarantine, json.dumps(reducer.quarantine, indent=2) + "\n")
    n_labelled = int((table["label"] >= 0).sum())
    log.info(
        "field %s: %d objects (%d labelled) from %d exposures; %d file(s) quarantined",
        field,
        len(table),
        n_labelled,
        len(used),
        len(reducer.quarantine),
    )
    return FieldResult(
        len(table),
        len(used),
        len(reducer.quarantine),
        digest,
        reducer.n_calibrated,
        reducer.n_from_cache,
    )
