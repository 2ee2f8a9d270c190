"""Master calibration frames: bias (e-), dark (e-/s) and a normalised flat per band.

Frames are classified as the instrument profile says (``IMAGETYP`` in the demo camera's
headers; image-type values or file-name patterns in general). Each frame is
overscan-subtracted, trimmed, gain-corrected and assembled in its own Dask task; the stack is
combined pixel-chunk by pixel-chunk with a sigma-clipped mean (:mod:`astroflow.reduce.arrays`).
Unusable calibration frames are quarantined (or fail the run with ``reduce.strict``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
from astropy.io import fits

import astroflow
from astroflow.config import config_hash
from astroflow.io.fits_read import FrameError, read_frame, read_primary_header, sha256_file
from astroflow.io.profile import InstrumentProfile, load_profile
from astroflow.reduce.arrays import sigma_clipped_mean_dask
from astroflow.reduce.assemble import Layout, amp_to_electrons, assemble

log = logging.getLogger(__name__)

#: Pixel chunk (y, x) used when combining stacks with Dask.
COMBINE_CHUNK = (256, 256)


@dataclass
class CalibFrame:
    """A classified calibration frame."""

    path: str
    imagetyp: str
    band: str | None
    exptime_s: float | None


#: A dark-rate pixel this many robust sigma above the median is hot (flagged bad).
HOT_PIXEL_SIGMA = 8.0
#: Flat values outside this range mark dead or unusable pixels (flagged bad, not divided).
FLAT_USABLE = (0.5, 2.0)


@dataclass
class Masters:
    """Master calibration images on the assembled detector grid.

    :meth:`flat_and_bad` derives, once per band, what every exposure of the band needs (the
    flat safe to divide by, and the static bad-pixel mask), so exposures do not recompute
    medians of the masters.
    """

    bias_e: np.ndarray
    dark_e_per_s: np.ndarray | None
    flats: dict[str, np.ndarray]
    #: sha256 of every master file and of the frames they were made from.
    inputs: dict[str, str] = field(default_factory=dict)
    #: The master files read, with the sha256 ``masters.json`` recorded for each.
    files: dict[str, str] = field(default_factory=dict)
    _prepared: dict = field(default_factory=dict, repr=False, compare=False)

    def prepare(self) -> None:
        """Make every band's :meth:`flat_and_bad` now, side by side (numpy releases the GIL):
        worker processes forked afterwards share them instead of each making its own."""
        self.hot_pixels()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(self.flat_and_bad, sorted(self.flats)))

    def verify(self) -> None:
        """Check that the master files still hash to what ``masters.json`` recorded.

        Loading trusts the record (hashing gigabytes of masters would delay every field job);
        a field job runs this beside its work and fails before writing anything if a master
        was changed after ``astroflow reduce calib`` wrote it, so provenance never lies.

        Raises
        ------
        ValueError
            Naming the file that changed.
        """
        for path, recorded in self.files.items():
            if sha256_file(path) != recorded:
                raise ValueError(
                    f"{path}: its sha256 differs from the one masters.json recorded; the file "
                    "changed after `astroflow reduce calib` wrote it: rerun that step"
                )

    def hot_pixels(self) -> np.ndarray | None:
        """Pixels whose dark rate is a ``HOT_PIXEL_SIGMA`` robust outlier (None: no dark)."""
        if self.dark_e_per_s is None:
            return None
        if "hot" not in self._prepared:
            dark = self.dark_e_per_s
            # the robust statistics of a regular 1-in-16 pixel sample: the same to < 1 % of
            # sigma, 16x cheaper than two medians over the detector for every field job
            sample = dark.ravel()[::16]
            median = np.median(sample)
            sigma = 1.4826 * np.median(np.abs(sample - median))
            self._prepared["hot"] = (
                np.zeros(dark.shape, bool)
                if sigma == 0
                else dark > median + HOT_PIXEL_SIGMA * sigma
            )
        return self._prepared["hot"]

    def flat_and_bad(self, band: str) -> tuple[np.ndarray, np.ndarray]:
        """(flat with unusable pixels set to 1, static bad mask: unusable flat | hot) of a band.

        A band without a master flat (``reduce.allow_uncorrected``) gets a flat of ones.
        Computed on first use and kept (threads may race to fill it: both compute the same).
        """
        key = ("flat", band)
        if key not in self._prepared:
            flat = self.flats.get(band)
            if flat is None:
                flat = np.ones_like(self.bias_e)
            low, high = FLAT_USABLE
            usable = (flat >= low) & (flat <= high)  # NaN compares False: unusable
            safe = np.where(usable, flat, np.float32(1.0)).astype(np.float32, copy=False)
            bad = ~usable
            hot = self.hot_pixels()
            if hot is not None:
                bad |= hot
            self._prepared[key] = (safe, bad)
        return self._prepared[key]


def frame_electrons(path: str, layout: Layout, overscan_method: str) -> np.ndarray:
    """A whole frame in electrons on the detector grid (overscan removed, bias not)."""
    frame = read_frame(path, primary_pixels=layout.profile.primary_pixels)
    amps = [amp_to_electrons(a, path, layout, overscan_method) for a in frame.amps]
    return assemble(amps, path, layout).image_e


def classify(
    paths: list[str], profile: InstrumentProfile | None = None
) -> tuple[list[CalibFrame], list[FrameError]]:
    """Classify calibration frames as ``profile`` says; unusable frames become errors."""
    profile = profile or load_profile()
    filter_key = profile.key("filter") or "FILTER"
    exptime_key = profile.key("exptime") or "EXPTIME"
    frames, problems = [], []
    for path in sorted(paths):
        try:
            header = read_primary_header(path)
        except FrameError as exc:
            problems.append(exc)
            continue
        found = profile.classify(header, path)
        imagetyp = found.frame_type
        if imagetyp not in {"bias", "dark", "flat"}:
            problems.append(FrameError(path, "PRIMARY", f"not a calibration frame: {found.how}"))
            continue
        filter_value = profile.get(header, "filter")
        band = str(filter_value).strip() if imagetyp == "flat" and filter_value else None
        if imagetyp == "flat" and band is None:
            problems.append(FrameError(path, "PRIMARY", f"missing header keyword {filter_key}"))
            continue
        exptime = None
        if imagetyp in {"dark", "flat"}:
            try:
                exptime = float(profile.get(header, "exptime"))
            except (TypeError, ValueError):
                problems.append(
                    FrameError(path, "PRIMARY", f"missing header keyword {exptime_key}")
                )
                continue
            if imagetyp == "dark" and exptime <= 0:
                problems.append(FrameError(path, "PRIMARY", f"dark with EXPTIME {exptime} <= 0"))
                continue
        frames.append(CalibFrame(path, imagetyp, band, exptime))
    return frames, problems


def _electrons_many(
    frames: list[CalibFrame], layout: Layout, method: str, problems: list[FrameError]
) -> tuple[list[CalibFrame], list[np.ndarray]]:
    """Read frames in parallel Dask tasks; failures are appended to ``problems``."""

    def one(path: str) -> np.ndarray | FrameError:
        try:
            return frame_electrons(path, layout, method)
        except FrameError as exc:
            return exc

    results = dask.compute(*[dask.delayed(one)(f.path) for f in frames])
    good_frames, images = [], []
    for frame, result in zip(frames, results, strict=True):
        if isinstance(result, FrameError):
            problems.append(result)
        else:
            good_frames.append(frame)
            images.append(result)
    return good_frames, images


def _combine(images: list[np.ndarray]) -> np.ndarray:
    import dask.array as da  # here: field jobs import this module but never combine

    stack = da.from_array(np.stack(images), chunks=(-1, *COMBINE_CHUNK))
    return sigma_clipped_mean_dask(stack).compute()


def _write_fits(path: Path, data: np.ndarray, cards: dict) -> None:
    """Write a float32 master atomically (temporary sibling, then rename)."""
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(tmp, overwrite=True)
    os.replace(tmp, path)


def build_masters(paths: list[str], cfg: dict, out_dir: str | Path) -> dict:
    """Make master bias/dark/flats from calibration frames and write them to ``out_dir``.

    Parameters
    ----------
    paths : list of str
        Calibration frames of any type, in any order.
    cfg : dict
        Resolved config (``instrument`` layout, ``reduce.strict``, ``reduce.overscan_method``).
    out_dir : str or Path
        Gets ``master_bias.fits``, ``master_dark.fits`` (when darks are given),
        ``master_flat_<band>.fits`` and ``masters.json``.

    Returns
    -------
    dict
        The ``masters.json`` content: per master its file, sha256 and input sha256s.

    Raises
    ------
    FrameError
        With ``reduce.strict``, on the first unusable frame.
    ValueError
        When no usable bias frame is given.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = Layout.from_config(cfg)
    method = cfg["reduce"]["overscan_method"]
    frames, problems = classify(paths, layout.profile)
    _check_strict(cfg, problems)
    if layout.overscan_cols == 0:
        log.info("no overscan (instrument.overscan_cols = 0): bias level from bias frames only")

    biases = [f for f in frames if f.imagetyp == "bias"]
    biases, bias_images = _electrons_many(biases, layout, method, problems)
    _check_strict(cfg, problems)
    if not biases:
        for problem in problems:
            log.warning("quarantined %s", problem)
        raise ValueError(
            f"no usable bias frame among {len(paths)} calibration frames "
            f"(instrument profile {layout.profile.name!r}; see `astroflow inspect`)"
        )
    bias = _combine(bias_images)
    del bias_images
    record: dict = {"bias": None, "dark": None, "flat": {}}
    record["bias"] = _save(
        out / "master_bias.fits", bias, biases, {"IMAGETYP": "master bias", "BUNIT": "electron"}
    )
    log.info("master bias from %d frames", len(biases))

    dark = None
    darks = [f for f in frames if f.imagetyp == "dark"]
    darks, dark_images = _electrons_many(darks, layout, method, problems)
    _check_strict(cfg, problems)
    if darks:
        rates = [(img - bias) / f.exptime_s for f, img in zip(darks, dark_images, strict=True)]
        dark = _combine(rates)
        record["dark"] = _save(
            out / "master_dark.fits",
            dark,
            darks,
            {"IMAGETYP": "master dark", "BUNIT": "electron/s"},
        )
        log.info("master dark from %d frames", len(darks))
    else:
        log.warning("no usable dark frames: dark correction will be skipped")

    bands = sorted({f.band for f in frames if f.imagetyp == "flat"})
    for band in bands:
        flats = [f for f in frames if f.imagetyp == "flat" and f.band == band]
        flats, flat_images = _electrons_many(flats, layout, method, problems)
        _check_strict(cfg, problems)
        normalised = []
        for frame, img in zip(flats, flat_images, strict=True):
            signal = img - bias - (dark * frame.exptime_s if dark is not None else 0.0)
            level = float(np.median(signal))
            if not level > 0:
                problems.append(
                    FrameError(
                        frame.path, None, f"flat with non-positive median level {level:.3g} e-"
                    )
                )
                continue
            normalised.append(signal / level)
        _check_strict(cfg, problems)
        if not normalised:
            continue
        flat = _combine(normalised)
        flat = flat / np.median(flat)
        record["flat"][band] = _save(
            out / f"master_flat_{band}.fits",
            flat,
            flats,
            {"IMAGETYP": "master flat", "FILTER": band, "BUNIT": ""},
        )
        log.info("master flat %s from %d frames", band, len(normalised))

    for band in cfg["instrument"]["bands"]:
        if band not in record["flat"]:
            log.warning(
                "no usable flat for band %s: its exposures will be %s",
                band,
                "reduced without flat-field correction (reduce.allow_uncorrected)"
                if cfg["reduce"].get("allow_uncorrected", False)
                else "quarantined (set reduce.allow_uncorrected: true to keep them)",
            )
    record["quarantine"] = [p.to_entry() for p in problems]
    record["config_hash"] = config_hash({k: cfg[k] for k in ("reduce", "instrument")})
    record["code_version"] = astroflow.__version__
    if problems:
        log.warning("quarantined %d of %d calibration frames", len(problems), len(paths))
    tmp = out / f".masters.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / "masters.json")
    return record


def _save(path: Path, data: np.ndarray, frames: list[CalibFrame], cards: dict) -> dict:
    cards = {**cards, "NCOMBINE": len(frames)}
    _write_fits(path, data, cards)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "inputs": {f.path: sha256_file(f.path) for f in frames},
    }


def _check_strict(cfg: dict, problems: list[FrameError]) -> None:
    if cfg["reduce"]["strict"] and problems:
        raise problems[0]


def load_masters(calib_dir: str | Path, layout: Layout) -> Masters:
    """Read the masters written by :func:`build_masters`, checking their shape.

    Raises
    ------
    FileNotFoundError
        When ``master_bias.fits`` or ``masters.json`` is missing.
    ValueError
        When a master does not have the detector shape of ``instrument``.
    """
    root = Path(calib_dir)
    record_path = root / "masters.json"
    if not record_path.exists():
        raise FileNotFoundError(f"{record_path} not found: run `astroflow reduce calib` first")
    record = json.loads(record_path.read_text())
    inputs: dict[str, str] = {}
    files: dict[str, str] = {}

    def read(name: str) -> np.ndarray:
        path = root / name
        data = fits.getdata(path).astype(np.float32)
        if data.shape != layout.detector_shape:
            raise ValueError(
                f"{path}[PRIMARY]: shape {data.shape} does not match the detector "
                f"{layout.detector_shape} of instrument.*"
            )
        return data

    names = {"bias": record["bias"]["file"]}
    if record.get("dark"):
        names["dark"] = record["dark"]["file"]
    names.update({f"flat {b}": entry["file"] for b, entry in sorted(record["flat"].items())})
    # file reads and byte swaps release the GIL: read the masters side by side
    with ThreadPoolExecutor(max_workers=4) as pool:
        planes = dict(zip(names, pool.map(read, names.values()), strict=True))
    bias, dark = planes["bias"], planes.get("dark")
    flats = {key.split(" ", 1)[1]: data for key, data in planes.items() if key.startswith("flat ")}
    for entry in [record["bias"], record.get("dark"), *record["flat"].values()]:
        if entry:
            inputs.update(entry["inputs"])
            path = str(root / entry["file"])
            # as recorded when written (older records: hashed now); Masters.verify checks it
            files[path] = entry.get("sha256") or sha256_file(path)
    inputs.update(files)
    return Masters(bias, dark, flats, dict(sorted(inputs.items())), files)


def cached_masters(calib_dir: str | Path, layout: Layout) -> Masters:
    """:func:`load_masters`, once per process while ``masters.json`` is unchanged.

    A field job loads the masters before it starts its worker processes, which (forked)
    inherit them; a worker started otherwise (spawned, a Dask worker) loads them with its
    first exposure and reuses them for the next. One set is kept per process.
    """
    record = Path(calib_dir) / "masters.json"
    if not record.is_file():
        return load_masters(calib_dir, layout)  # raises, naming the missing file
    stat = record.stat()
    return _masters_once(str(record.parent.resolve()), stat.st_mtime_ns, stat.st_size, layout)


@functools.lru_cache(maxsize=1)
def _masters_once(calib_dir: str, mtime_ns: int, size: int, layout: Layout) -> Masters:
    return load_masters(calib_dir, layout)


def forget_masters() -> None:
    """Drop this process's cached masters (so a benchmark times the load, as a new job does)."""
    _masters_once.cache_clear()
