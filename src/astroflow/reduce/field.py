"""Reduce one field end to end: calibrate, detect, measure, cut out, label, store.

The unit of parallel work is the exposure (:mod:`astroflow.reduce.exposure_work`): a task
reads, calibrates, measures and cuts out one or two exposures and returns only their
per-object products, on the executor :meth:`astroflow.dask_cluster.DaskRunner.executor` picks
from the ``dask`` config section (by default the rule's threads as forked worker processes;
a LocalCluster or SLURM workers on request). The job itself calibrates the detection exposure
and detects while the first tasks calibrate theirs (two exposures each, so no worker idles
behind detection), and posts the catalog on a :class:`~astroflow.reduce.board.CatalogBoard`
for them. It folds the products into per-band accumulators in a fixed order as they come,
with at most ``2 x parallelism`` tasks outstanding, so memory is bounded whatever the number
of exposures, and the result does not depend on which task finished first (deterministic
output, the same for any number of workers).

Products, detection catalogs and (on request) calibrated exposures are kept per exposure
(:mod:`astroflow.reduce.products`, :mod:`astroflow.reduce.cache`): a rerun after exposures
were added calibrates only the new ones.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

import astroflow
from astroflow.config import config_hash
from astroflow.dask_cluster import DaskRunner, dask_client
from astroflow.io.fits_read import FrameError, read_primary_header, sha256_file
from astroflow.io.profile import InstrumentProfile, load_profile
from astroflow.processes import lower_thread_priority
from astroflow.reduce.arrays import njy_per_e_per_s
from astroflow.reduce.assemble import Layout
from astroflow.reduce.board import CatalogBoard
from astroflow.reduce.cache import ExposureCache
from astroflow.reduce.cutouts import BandAccumulator
from astroflow.reduce.detect import Catalog, flux_to_mag
from astroflow.reduce.exposure_work import (
    Detection,
    DetectionFrame,
    ExposureWork,
    KeptProduct,
    detect,
    exposure_products,
)
from astroflow.reduce.flags import FlagSettings, flag_bits_attr, flag_counts, object_flags
from astroflow.reduce.labels import (
    labels_columns,
    match_catalog,
    read_labels,
    unlabelled_columns,
)
from astroflow.reduce.masters import allowed_missing, cached_masters
from astroflow.reduce.products import Product, ProductCache
from astroflow.reduce.store import field_digest, write_field_store, write_parquet, write_text

log = logging.getLogger(__name__)


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
    inverse-variance photometry sums and the exposure ids covering each object; and the
    field's (N, bands, S, S) image, variance and mask planes, each band combined into them
    (:meth:`finish`) as soon as its last exposure is folded."""

    def __init__(self, n: int, size: int, bands: list[str]):
        self.bands = bands
        self.acc = {b: BandAccumulator((n, size, size)) for b in bands}
        shape = (n, len(bands), size, size)
        #: the bands being combined (futures of :meth:`finish`)
        self.finishing: list[Future] = []
        self.planes = (
            np.zeros(shape, np.float32),
            np.zeros(shape, np.float32),
            np.zeros(shape, np.uint8),
        )
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

    def finish(self, band: str, njy_per_e_per_s: float) -> None:
        """Combine ``band`` into the planes in nJy and free its accumulator (no product of
        it may follow; other bands' may be added meanwhile, from another thread)."""
        k = self.bands.index(band)
        self.acc.pop(band).result(tuple(plane[:, k] for plane in self.planes), njy_per_e_per_s)


class FieldReducer:
    """Reduce the exposures of one field (see module docstring).

    Parameters
    ----------
    work : ExposureWork
        What the exposure tasks share: config, master calibrations, caches.
    runner : DaskRunner
        Where the tasks run (its ``parallelism`` sizes the first tasks and the window).
    scratch : str
        A directory the workers can see, for the catalog board.
    """

    def __init__(self, work: ExposureWork, field: str, runner: DaskRunner, scratch: str):
        cfg = work.cfg
        self.cfg = cfg
        self.work = work
        self.field = field
        self.runner = runner
        self.threads = runner.parallelism
        self.scratch = scratch
        self.cache = work.exposures
        self.products = work.products
        #: sha256 of every exposure file, filled by :meth:`run` (provenance and cache keys).
        self.sha256: dict[str, str] = {}
        #: exposures calibrated here rather than taken from the cache (:attr:`n_calibrated`)
        self._calibrated: set[str] = set()
        self.n_from_cache = 0
        self.layout = Layout.from_config(cfg)
        self.bands: list[str] = list(cfg["instrument"]["bands"])
        self.size = int(cfg["reduce"]["cutout_size"])
        self.scale = float(cfg["instrument"]["pixel_scale_arcsec"])
        self.quarantine: list[dict] = []

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

    def _in_detection_band(self, paths: list[str]) -> list[str]:
        """The readable exposures of ``reduce.detection_band``, in order."""
        band = self.cfg["reduce"]["detection_band"]
        found = []
        for path in paths:
            try:
                header = read_primary_header(path)
            except FrameError:
                continue
            if str(self.layout.profile.get(header, "filter") or "").strip() == band:
                found.append(path)
        return found

    def _count(self, path: str) -> None:
        """Count an exposure about to be made: calibrated here, or taken from the cache."""
        sha = self.sha256.get(path)
        if self.cache is not None and sha is not None and self.cache.has(sha):
            self.n_from_cache += 1
        else:
            self._calibrated.add(path)

    @property
    def n_calibrated(self) -> int:
        """Exposures calibrated here; one set aside on the way (quarantined) is not."""
        return len(self._calibrated - {entry["path"] for entry in self.quarantine})

    def _detect(
        self, first: Future | None, candidates: list[str], board: CatalogBoard
    ) -> tuple[DetectionFrame | None, Catalog, dict[str, Product | FrameError | None]]:
        """The detection task's result (``first``: the task detecting on ``candidates[0]``,
        None without candidates): (frame, catalog, {path: product} of what it made).

        Should the first detection-band exposure be unusable, the next ones are tried here,
        in order (their tasks make their products and report their errors); with none
        usable, the catalog is empty."""
        found = _result(first, self.field, candidates[:1]) if first is not None else None
        made = {}
        if isinstance(found, FrameError):
            self._set_aside(found)
            made[found.path] = None
            for path in candidates[1:]:
                found = detect(self.work, path, self.sha256.get(path), board.path, False)
                if isinstance(found, Detection):
                    break
        if isinstance(found, Detection):
            log.info(
                "field %s: %d objects detected on %s",
                self.field,
                len(found.catalog),
                found.frame.path,
            )
            if found.product is not None:
                made[found.frame.path] = found.product
            return found.frame, found.catalog, made
        log.warning(
            "field %s: no usable %s-band exposure; writing an empty store",
            self.field,
            self.cfg["reduce"]["detection_band"],
        )
        board.post(Catalog.empty())
        return None, Catalog.empty(), made

    def _ordered(self, paths: list[str], sha256: dict[str, str]) -> list[str]:
        """``paths`` in fold order, this field's only, and their sha256 in ``self.sha256``
        (those not in ``sha256`` hashed here)."""
        # Ties (a repeated exposure id) keep the order given, so the first copy given is the
        # one co-added and later copies are set aside as duplicates (see the fold).
        order = {p: i for i, p in reversed(list(enumerate(paths)))}
        keys = {p: _order_key(p, self.bands, self.layout.profile) for p in paths}
        paths = sorted(paths, key=lambda p: (*keys[p][:-1], order[p]))
        self._band_index = {p: keys[p][0] for p in paths}
        paths = self._check_field(paths)
        self.sha256 = {p: sha256[p] if p in sha256 else sha256_file(p) for p in paths}
        return paths

    def run(
        self, paths: list[str], sha256: dict[str, str] | None = None, labels: str | None = None
    ) -> tuple[dict, pd.DataFrame, list[str]]:
        """Reduce ``paths`` (``sha256``: their hashes where known); returns (planes, objects
        table, used exposure paths). ``labels``: the labels catalog the objects are matched
        to (columns ``label``, ``label_sersic_n``, ``label_ellipticity``), matched while the
        exposure tasks run; None (``data.labels: null``): every object unlabelled (-1)."""
        paths = self._ordered(paths, sha256 or {})
        candidates = self._in_detection_band(paths)
        kept = self._kept_detection(candidates[:1])
        first = kept[0].path if kept else (candidates[0] if candidates else None)
        queue = ([first] if first else []) + [p for p in paths if p != first]
        with (
            self.runner.executor() as pool,
            CatalogBoard(self.scratch, self.field) as board,
            # the job's side work (checks, labels, finished bands) on cores the workers leave
            # idle: at normal priority it slowed two workers on two cores by ~10 %
            ThreadPoolExecutor(max_workers=2, initializer=lower_thread_priority) as idle,
        ):
            if kept:
                (detection, catalog), made = kept, {}
                todo = [p for p in queue if not self._product_is_kept(p, catalog)]
                tasks = self._submit(pool, todo, catalog, paired=0)
            else:
                found = None
                if first:  # detection first, so a worker starts on it at once
                    self._count(first)
                    sha = self.sha256.get(first)
                    found = pool.submit(detect, self.work, first, sha, board.path)
                # pairs keep the other workers busy during detection (none with one worker)
                paired = self.threads - 1 if self.threads > 1 else 0
                tasks = self._submit(pool, queue[1:] if first else queue, board.path, paired)
            checked = idle.submit(self.work.masters().verify)  # the workers have forked by now
            if not kept:
                detection, catalog, made = self._detect(found, candidates, board)
            labelled = idle.submit(self._labelled, labels, catalog) if labels else None
            fold, used = self._fold(queue, tasks, made, catalog, idle)
            planes = self._planes(fold)
            checked.result()
        log.info(
            "field %s: %d exposure(s) calibrated, %d taken from the exposure cache",
            self.field,
            self.n_calibrated,
            self.n_from_cache,
        )
        table = self._table(catalog, detection, fold.phot, fold.ids)
        table["flags"] = self._flags(fold, catalog)
        if labelled is not None:
            columns, problem = labelled.result()
            if problem is not None:
                self._set_aside(problem)
            table = table.assign(**columns)
        else:
            table = table.assign(**unlabelled_columns(len(table)))
        return planes, table, used

    def _flags(self, fold: _FieldSums, catalog: Catalog) -> np.ndarray:
        """The objects' ``flags`` (:mod:`astroflow.reduce.flags`) from the combined mask
        planes, the exposures covering each object and the detection catalog; logged."""
        n_exposures = np.array(
            [[len(fold.ids[b][i]) for b in self.bands] for i in range(len(catalog))], np.int64
        ).reshape(len(catalog), len(self.bands))
        flags = object_flags(
            fold.planes[2],
            n_exposures,
            np.column_stack([catalog.x, catalog.y]),
            self.scale,
            FlagSettings.from_config(self.cfg["reduce"]["flags"]),
        )
        counts = ", ".join(f"{k} {v}" for k, v in flag_counts(flags).items() if v)
        log.info("field %s: %d of %d objects flagged (%s)", self.field, int((flags != 0).sum()),
                 len(flags), counts or "none")
        return flags

    def _labelled(self, path: str, catalog: Catalog) -> tuple[dict, FrameError | None]:
        """The label columns of ``catalog``'s objects from the labels catalog at ``path``,
        and the quarantine entry of its malformed rows, if any (set aside by the caller, so
        the quarantine list's order does not depend on when this finished)."""
        malformed: list[int] = []
        labels = read_labels(path, labels_columns(self.cfg), malformed)
        problem = None
        if malformed:
            problem = FrameError(
                path,
                None,
                f"malformed labels catalog row(s) skipped (line(s) "
                f"{', '.join(map(str, malformed))}); its other rows label",
            )
        radius = float(self.cfg["reduce"]["match_radius_arcsec"])
        return match_catalog(catalog.ra, catalog.dec, labels, radius), problem

    def _submit(self, pool: Executor, todo: list[str], catalog, paired: int) -> _Tasks:
        for path in todo:
            self._count(path)
        return _Tasks(pool, self, _groups(todo, paired), catalog)

    def _fold(
        self, queue: list[str], tasks: _Tasks, made: dict, catalog: Catalog, side: Executor
    ) -> tuple[_FieldSums, list[str]]:
        """Fold every exposure's product in queue order: from its task, made already, or
        kept from an earlier run; a band whose last exposure is folded is combined on
        ``side``. Returns the sums and the exposures co-added."""
        fold = _FieldSums(len(catalog), self.size, self.bands)
        used: list[str] = []
        folded: dict[str, str] = {}  # exposure id -> the file co-added under it
        last = {self._band_index[p]: i for i, p in enumerate(queue)}  # of each band
        for done, path in enumerate(queue, 1):
            if path in tasks:
                product = tasks.take(path)
            elif path in made:
                product = made[path]
            else:
                self.n_from_cache += 1
                product = KeptProduct(path, self.sha256[path])
            if isinstance(product, KeptProduct):
                product = self.products.load_product(path, product.sha256, catalog)
            if isinstance(product, FrameError):
                self._set_aside(product)
            elif product is not None and not self._is_duplicate(product, folded):
                fold.add(product)
                used.append(product.path)
            band = self._band_index[path]  # len(bands) and above: not a configured band
            if last[band] == done - 1 and band < len(self.bands):
                fold.finishing.append(side.submit(self._finish, fold, self.bands[band]))
            log.info("field %s: %d/%d exposures processed", self.field, done, len(queue))
        return fold, used

    def _finish(self, fold: _FieldSums, band: str) -> None:
        zeropoint = float(self.cfg["instrument"]["zeropoint_mag"][band])
        fold.finish(band, njy_per_e_per_s(zeropoint))

    def _product_is_kept(self, path: str, catalog: Catalog) -> bool:
        sha = self.sha256.get(path)
        return self.products is not None and sha is not None and self.products.has_product(
            sha, catalog
        )

    def _kept_detection(self, candidates: list[str]) -> tuple[DetectionFrame, Catalog] | None:
        """The catalog an earlier run detected on the first detection-band exposure (same
        exposure, calibration and detection settings), with that exposure's PSF and depth."""
        if self.products is None or not candidates:
            return None
        path = candidates[0]
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

    def _planes(self, fold: _FieldSums) -> dict[str, np.ndarray]:
        """The field's (N, bands, S, S) planes in nJy (bands without exposures finished now:
        all off-detector)."""
        for finishing in fold.finishing:
            finishing.result()
        for band in list(fold.acc):
            self._finish(fold, band)
        images, variances, masks = fold.planes
        planes = {"images": images}
        if self.cfg["reduce"]["write_variance"]:
            planes["variance"] = variances
        if self.cfg["reduce"]["write_mask"]:
            planes["mask"] = masks
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


def _store_attrs(
    cfg: dict,
    field: str,
    n_objects: int,
    digest: str,
    inputs: dict[str, str],
    dask_spec: dict,
    labels_path: str | None = None,
) -> dict:
    """The field store's group attributes: what its planes hold, and their provenance
    (``provenance.labels``: the labels catalog the objects were matched to, None without)."""
    return {
        "bands": list(cfg["instrument"]["bands"]),
        "pixel_scale_arcsec": float(cfg["instrument"]["pixel_scale_arcsec"]),
        "flux_unit": "nJy",
        "field": field,
        "n_objects": n_objects,
        "digest": digest,
        "cutout_centre_pix": [cfg["reduce"]["cutout_size"] // 2] * 2,
        "mask_bits": {"1": "bad/saturated/bleed", "2": "cosmic ray", "4": "off-detector"},
        "flag_bits": flag_bits_attr(),
        "provenance": {
            "inputs": dict(sorted(inputs.items())),
            "labels": str(labels_path) if labels_path else None,
            "config_hash": config_hash({k: cfg[k] for k in ("reduce", "instrument")}),
            "code_version": astroflow.__version__,
        },
        "dask": {k: v for k, v in dask_spec.items() if k != "job_script"},  # no SLURM script
    }


def _sha256_if_readable(path: str) -> str | None:
    """sha256 of a file, None where it cannot be read (the field check quarantines it)."""
    try:
        return sha256_file(path)
    except OSError:
        return None


def _result(future: Future, field: str, paths: list[str]):
    """A task's result; a task that raised (a bug, a dead worker) fails the field job with
    an error naming its exposures."""
    try:
        return future.result()
    except Exception as exc:
        raise RuntimeError(
            f"field {field}: the task reducing {', '.join(paths)} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _groups(paths: list[str], paired: int) -> list[list[str]]:
    """Tasks of ``paths`` in order: the first ``paired`` of two exposures (they keep their
    workers busy while detection runs), the rest of one."""
    groups: list[list[str]] = []
    i = 0
    while i < len(paths):
        take = 2 if len(groups) < paired else 1
        groups.append(paths[i : i + take])
        i += take
    return groups


class _Tasks:
    """The field's exposure tasks, submitted in order with at most ``2 x parallelism``
    outstanding (not yet taken), so finished products cannot pile up in memory."""

    def __init__(self, pool: Executor, reducer: FieldReducer, groups: list[list[str]], catalog):
        self._pool = pool
        self._reducer = reducer
        self._catalog = catalog
        self._waiting = deque(groups)
        self._paths = {p for g in groups for p in g}
        self._window = 2 * reducer.threads
        self._running: dict[str, tuple[Future, int]] = {}
        self._outstanding: set[Future] = set()
        self._top_up()

    def __contains__(self, path: str) -> bool:
        return path in self._paths

    def _top_up(self) -> None:
        while self._waiting and len(self._outstanding) < self._window:
            group = self._waiting.popleft()
            items = [(p, self._reducer.sha256.get(p)) for p in group]
            future = self._pool.submit(exposure_products, self._reducer.work, items, self._catalog)
            self._outstanding.add(future)
            for k, path in enumerate(group):
                self._running[path] = (future, k)

    def take(self, path: str) -> Product | KeptProduct | FrameError:
        """The product of ``path`` (waiting for it); frees its slot when its task is done."""
        self._top_up()
        future, k = self._running.pop(path)
        group = [path, *(p for p, (f, _) in self._running.items() if f is future)]
        product = _result(future, self._reducer.field, group)[k]
        if not any(f is future for f, _ in self._running.values()):
            self._outstanding.discard(future)
            self._top_up()
        return product


def reduce_field(
    cfg: dict,
    field: str,
    exposures: list[str],
    calib_dir: str,
    labels_path: str | None,
    out_store: str,
    out_objects: str,
    out_quarantine: str,
    threads: int = 1,
    cache_dir: str | None = None,
) -> FieldResult:
    """Reduce one field and write its store, object table and quarantine list.

    Parameters
    ----------
    labels_path : str or None
        The labels catalog (``data.labels``); None: no labels, every object's ``label`` is -1
        (a reduce-only archive, docs/own_data.md).
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
    paths = [str(p) for p in exposures]
    with ThreadPoolExecutor(max_workers=2) as pool:  # file reads and sha256 release the GIL
        hashing = pool.map(_sha256_if_readable, paths)
        # unreadable: see run
        labels_hashing = pool.submit(_sha256_if_readable, labels_path) if labels_path else None
        # meanwhile the masters, loaded before the workers start so forked ones inherit them
        masters = cached_masters(calib_dir, layout)
        sha256 = {p: h for p, h in zip(paths, hashing, strict=True) if h is not None}
        labels_sha256 = labels_hashing.result() if labels_hashing else None
    uncorrected = masters.uncorrected(cfg["instrument"]["bands"], allowed_missing(cfg["reduce"]))
    if uncorrected:
        log.warning("field %s: %s: those corrections are not applied (reduce.allow_uncorrected)",
                    field, uncorrected)  # fmt: skip
    if cache_dir is None:
        cache_dir = str(Path(out_store).resolve().parent.parent / "exposures")
    cache = products = None
    if cfg["reduce"]["exposure_cache"]:
        cache = ExposureCache(cache_dir, cfg, masters)
        products = ProductCache(cache, cfg)
    with dask_client(cfg, threads) as runner:  # its workers leave while the outputs are written
        if runner.forks_workers:
            masters.prepare()  # once here, shared by the forked workers
        work = ExposureWork(cfg, str(calib_dir), cache, products, runner.out_of_process)
        reducer = FieldReducer(work, field, runner, str(Path(out_store).resolve().parent))
        planes, table, used = reducer.run(paths, sha256, labels_path)
        inputs = {p: reducer.sha256[p] for p in sorted(used)}
        inputs.update(masters.inputs)
        if labels_path:
            inputs[str(labels_path)] = labels_sha256
        with ThreadPoolExecutor(max_workers=1) as side:  # hashed while the planes are written
            digest = side.submit(field_digest, planes["images"], table)
            write_field_store(
                out_store,
                planes,
                lambda: _store_attrs(cfg, field, len(table), digest.result(), inputs, runner.spec,
                                     labels_path),
                int(cfg["reduce"]["chunk_objects"]),
            )
    write_parquet(out_objects, table)
    write_text(out_quarantine, json.dumps(reducer.quarantine, indent=2) + "\n")
    n_labelled = int((table["label"] >= 0).sum())
    log.info(
        "field %s: %d objects (%s) from %d exposures; %d file(s) quarantined",
        field,
        len(table),
        f"{n_labelled} labelled" if labels_path else "no labels catalog: data.labels is null",
        len(used),
        len(reducer.quarantine),
    )
    return FieldResult(
        len(table),
        len(used),
        len(reducer.quarantine),
        digest.result(),
        reducer.n_calibrated,
        reducer.n_from_cache,
    )
