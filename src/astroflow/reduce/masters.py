"""Master calibration frames: bias (e-), dark (e-/s) and a normalised flat per band.

Frames are classified as the instrument profile says (``IMAGETYP`` in the demo camera's
headers; image-type values or file-name patterns in general). Each frame is
overscan-subtracted, trimmed, gain-corrected and assembled in its own Dask task; the stack is
combined pixel-chunk by pixel-chunk with a sigma-clipped mean (:mod:`astroflow.reduce.arrays`).
Unusable calibration frames are quarantined (or fail the run with ``reduce.strict``).

Each master is checked before it is written (:class:`MasterChecks`, ``reduce.master_checks``):
saturated fraction, level, pixel noise and structure. A master that fails is refused: its
frames are quarantined with a reason naming them all, and the reduction goes on as if the
archive had no such frames. What may be missing is ``reduce.allow_uncorrected``
(:func:`allowed_missing`); anything else missing stops the job with one line naming it and
the key to set.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import dask
import numpy as np
from astropy.io import fits

import astroflow
from astroflow.config import config_hash
from astroflow.io.fits_read import FrameError, read_frame, read_primary_header, sha256_file
from astroflow.io.profile import InstrumentProfile, load_profile
from astroflow.reduce.arrays import sigma_clipped_mean_dask
from astroflow.reduce.assemble import DetectorElectrons, Layout, amp_to_electrons, assemble

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

#: The corrections master frames make, in the order they are applied.
CORRECTIONS = ("bias", "dark", "flat")
#: What a science exposure goes without when a master is missing.
_WITHOUT = {"bias": "bias subtraction", "dark": "dark correction", "flat": "flat-field correction"}


def allowed_missing(reduce_cfg: Mapping) -> frozenset[str]:
    """The masters a reduction may go without, from ``reduce.allow_uncorrected``.

    ``true``: any of bias, dark and flat; ``false`` (the default): the dark only (many CCD
    archives have no darks, and dark correction is then skipped, as it always was); a list
    names exactly those that may be missing (``[]``: all three are required).
    """
    value = reduce_cfg.get("allow_uncorrected", False)
    if value is True:
        return frozenset(CORRECTIONS)
    if value is False or value is None:
        return frozenset({"dark"})
    return frozenset(value)


def missing_error(
    kinds: list[str], n_frames: int, profile_name: str, refused: Mapping[str, str] | None = None
) -> ValueError:
    """The one-line error of a calibration that is missing and not allowed to be.

    Names what is missing, why (no frames, or the master was refused by its checks) and the
    key to set: ``no usable bias frame among 0 calibration frames (instrument profile
    'afcam'; see `astroflow inspect`): set reduce.allow_uncorrected: true (or list bias in it)
    to reduce without bias subtraction``.
    """
    notes = [f"master {k} refused: {refused[k]}" for k in kinds if refused and k in refused]
    what = " or ".join(kinds)
    return ValueError(
        f"no usable {what} frame among {n_frames} calibration frames (instrument profile "
        f"{profile_name!r}; see `astroflow inspect`" + "".join(f"; {n}" for n in notes) + "): "
        f"set reduce.allow_uncorrected: true (or list {' and '.join(kinds)} in it) to reduce "
        f"without {' and '.join(_WITHOUT[k] for k in kinds)}"
    )


def hot_pixel_mask(dark_e_per_s: np.ndarray) -> np.ndarray:
    """Pixels whose dark rate is a ``HOT_PIXEL_SIGMA`` robust outlier above the median."""
    # the robust statistics of a regular 1-in-16 pixel sample: the same to < 1 % of sigma,
    # 16x cheaper than two medians over the detector for every field job
    sample = dark_e_per_s.ravel()[::16]
    median = np.median(sample)
    sigma = 1.4826 * np.median(np.abs(sample - median))
    if sigma == 0:
        return np.zeros(dark_e_per_s.shape, bool)
    return dark_e_per_s > median + HOT_PIXEL_SIGMA * sigma


@dataclass(frozen=True)
class MasterChecks:
    """Limits a master must meet to be used (``reduce.master_checks``; see config.yaml).

    Saturation: the fraction of the master's pixels saturated (at ``SATURATE``) in any of its
    frames. Level: a bias's median after overscan subtraction (not checked without an
    overscan, where the bias level is the master itself), a dark's median rate, a flat's
    median signal. Noise: the pixel-to-pixel noise (:func:`pixel_noise`) at least
    ``min_noise_ratio`` of the photon and read noise its frames must carry (less: clipped,
    saturated or processed pixels), and a flat's at most ``max_flat_noise``. Structure: a
    flat's unusable pixels (outside ``FLAT_USABLE``), a dark's hot pixels; a bias's structure
    is what it corrects, so it is not limited.
    """

    max_saturated_fraction: float = 0.01
    max_bias_level_e: float = 500.0
    max_dark_e_per_s: float = 10.0
    min_flat_level_e: float = 1000.0
    max_flat_noise: float = 0.05
    min_noise_ratio: float = 0.5
    max_bad_fraction: float = 0.05

    @classmethod
    def from_config(cls, reduce_cfg: Mapping) -> MasterChecks:
        given = reduce_cfg.get("master_checks") or {}
        return cls(**{f.name: float(given[f.name]) for f in fields(cls) if f.name in given})


def pixel_noise(image: np.ndarray) -> float:
    """Robust pixel-to-pixel noise of an image: 1.4826 x the median absolute deviation of
    the differences of neighbouring pixels along x, over sqrt(2).

    Differences of neighbours cancel structure wider than a pixel (a bias pattern, a flat's
    vignetting, amplifier offsets), and the median ignores hot pixels and cosmic rays. Rows
    are sampled (about 512) for large detectors.
    """
    step = max(1, image.shape[0] // 512)
    diff = np.diff(np.asarray(image[::step], dtype=np.float64), axis=1).ravel()
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2.0))


@dataclass
class Masters:
    """Master calibration images on the assembled detector grid.

    :meth:`flat_and_bad` derives, once per band, what every exposure of the band needs (the
    flat safe to divide by, and the static bad-pixel mask), so exposures do not recompute
    medians of the masters.
    """

    #: None: no master bias (``reduce.allow_uncorrected``), likewise the dark; a band
    #: missing from ``flats`` has no master flat.
    bias_e: np.ndarray | None
    dark_e_per_s: np.ndarray | None
    flats: dict[str, np.ndarray]
    #: sha256 of every master file and of the frames they were made from.
    inputs: dict[str, str] = field(default_factory=dict)
    #: The master files read, with the sha256 ``masters.json`` recorded for each.
    files: dict[str, str] = field(default_factory=dict)
    #: Detector shape (needed when there is no master at all).
    shape: tuple[int, int] | None = None
    #: Masters refused by their checks (``"bias"``, ``"dark"``, ``"flat g"``) -> reason.
    refused: dict[str, str] = field(default_factory=dict)
    _prepared: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def detector_shape(self) -> tuple[int, int]:
        """Shape of the assembled detector the masters are on."""
        for plane in (self.bias_e, self.dark_e_per_s, *self.flats.values()):
            if plane is not None:
                return plane.shape
        if self.shape is None:
            raise ValueError("Masters without any master frame need their shape")
        return tuple(self.shape)

    def missing(self, band: str) -> list[str]:
        """The corrections (``bias``, ``dark``, ``flat``) an exposure of ``band`` goes without."""
        have = {"bias": self.bias_e is not None, "dark": self.dark_e_per_s is not None}
        have["flat"] = band in self.flats
        return [kind for kind in CORRECTIONS if not have[kind]]

    def uncorrected(self, bands: list[str], allowed: frozenset[str]) -> str | None:
        """What exposures of ``bands`` go without, among the ``allowed`` missing masters, in
        words for the log (None: nothing): ``no master bias, no master flat for band(s) g``."""
        parts = [f"no master {kind}" for kind in ("bias", "dark") if kind in self.missing("")]
        parts = [p for p in parts if p.rsplit(" ", 1)[1] in allowed]
        no_flat = [band for band in bands if band not in self.flats]
        if no_flat and "flat" in allowed:
            parts.append(f"no master flat for band(s) {', '.join(no_flat)}")
        return ", ".join(parts) or None

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
            self._prepared["hot"] = hot_pixel_mask(self.dark_e_per_s)
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
                flat = np.ones(self.detector_shape, np.float32)
            low, high = FLAT_USABLE
            usable = (flat >= low) & (flat <= high)  # NaN compares False: unusable
            safe = np.where(usable, flat, np.float32(1.0)).astype(np.float32, copy=False)
            bad = ~usable
            hot = self.hot_pixels()
            if hot is not None:
                bad |= hot
            self._prepared[key] = (safe, bad)
        return self._prepared[key]


def frame_electrons(path: str, layout: Layout, overscan_method: str) -> DetectorElectrons:
    """A whole frame in electrons on the detector grid (overscan removed, bias not), with its
    saturated pixels and read noise."""
    frame = read_frame(path, primary_pixels=layout.profile.primary_pixels)
    amps = [amp_to_electrons(a, path, layout, overscan_method) for a in frame.amps]
    return assemble(amps, path, layout)


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


@dataclass
class Stack:
    """The usable frames of one master, read: images in electrons and what the checks need."""

    frames: list[CalibFrame]
    images: list[np.ndarray]
    #: Pixels saturated in any frame (None: no frame).
    saturated: np.ndarray | None
    #: Each frame's mean read-noise variance over its amplifiers [e-^2].
    read_noise_var: list[float]
    #: Whether every frame had an overscan subtracted from every amplifier.
    overscan: bool

    def names(self) -> str:
        return ", ".join(f.path for f in self.frames)


def _electrons_many(
    frames: list[CalibFrame], layout: Layout, method: str, problems: list[FrameError]
) -> Stack:
    """Read frames in parallel Dask tasks; failures are appended to ``problems``."""

    def one(path: str) -> DetectorElectrons | FrameError:
        try:
            return frame_electrons(path, layout, method)
        except FrameError as exc:
            return exc

    results = dask.compute(*[dask.delayed(one)(f.path) for f in frames])
    stack = Stack([], [], None, [], True)
    for frame, result in zip(frames, results, strict=True):
        if isinstance(result, FrameError):
            problems.append(result)
            continue
        stack.frames.append(frame)
        stack.images.append(result.image_e)
        if stack.saturated is None:
            stack.saturated = result.saturated.copy()
        else:
            stack.saturated |= result.saturated
        areas = [(y.stop - y.start) * (x.stop - x.start) for (y, x), _ in result.read_noise_e]
        variances = [rn**2 for _, rn in result.read_noise_e]
        stack.read_noise_var.append(float(np.average(variances, weights=areas)))
        stack.overscan &= result.overscan_subtracted
    return stack


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


def _judge(
    kind: str,
    master: np.ndarray,
    stack: Stack,
    checks: MasterChecks,
    exptimes: list[float] | None = None,
    levels: list[float] | None = None,
) -> tuple[dict, list[str]]:
    """Quality figures of a master and the checks it fails (empty: usable).

    ``kind`` is bias (``master`` in e-), dark (e-/s; ``exptimes`` of its frames) or flat
    (normalised; ``levels``: each frame's median signal in e-). The expected noise is the
    photon and read noise of the frames, combined by the mean.
    """
    n = len(stack.frames)
    key = "reduce.master_checks"
    rn_var = np.asarray(stack.read_noise_var)
    level = float(np.median(master))
    saturated = float(stack.saturated.mean()) if stack.saturated is not None else 0.0
    noise = pixel_noise(master)
    quality: dict = {"n_frames": n, "saturated_fraction": saturated}
    failed = []
    if saturated > checks.max_saturated_fraction:
        failed.append(
            f"{100 * saturated:.1f} % of its pixels saturated in its frames "
            f"(> {key}.max_saturated_fraction {checks.max_saturated_fraction})"
        )
    if kind == "bias":
        expected = float(np.sqrt(rn_var.sum())) / n
        unit = "e-"
        quality["level_e"] = level
        if stack.overscan and abs(level) > checks.max_bias_level_e:
            failed.append(
                f"level {level:.1f} e- after overscan subtraction "
                f"(beyond +-{key}.max_bias_level_e {checks.max_bias_level_e})"
            )
    elif kind == "dark":
        t = np.asarray(exptimes, dtype=float)
        expected = float(np.sqrt(np.sum((max(level, 0.0) * t + rn_var) / t**2))) / n
        unit = "e-/s"
        bad = float(hot_pixel_mask(master).mean())
        quality.update(level_e_per_s=level, hot_fraction=bad)
        if level > checks.max_dark_e_per_s:
            failed.append(
                f"dark current {level:.3g} e-/s per pixel "
                f"(> {key}.max_dark_e_per_s {checks.max_dark_e_per_s})"
            )
        if bad > checks.max_bad_fraction:
            failed.append(
                f"{100 * bad:.2f} % hot pixels (> {key}.max_bad_fraction {checks.max_bad_fraction})"
            )
    else:
        signal = np.asarray(levels, dtype=float)
        expected = float(np.sqrt(np.sum((signal + rn_var) / signal**2))) / n
        unit = "(relative)"
        low, high = FLAT_USABLE
        bad = float(np.mean(~((master >= low) & (master <= high))))
        flat_level = float(np.median(signal))
        quality.update(level_e=flat_level, unusable_fraction=bad)
        if flat_level < checks.min_flat_level_e:
            failed.append(
                f"level {flat_level:.0f} e- (< {key}.min_flat_level_e {checks.min_flat_level_e})"
            )
        if noise > checks.max_flat_noise:
            failed.append(
                f"pixel noise {noise:.3g} (> {key}.max_flat_noise {checks.max_flat_noise})"
            )
        if bad > checks.max_bad_fraction:
            failed.append(
                f"{100 * bad:.1f} % of its pixels outside {low}-{high} "
                f"(> {key}.max_bad_fraction {checks.max_bad_fraction})"
            )
    quality.update(noise=noise, expected_noise=expected)
    if expected > 0 and not noise >= checks.min_noise_ratio * expected:
        failed.append(
            f"pixel noise {noise:.3g} {unit}, {noise / expected:.2f} x the photon and read "
            f"noise of its frames ({expected:.3g}; < {key}.min_noise_ratio "
            f"{checks.min_noise_ratio}): clipped, saturated or processed pixels"
        )
    return quality, failed


def build_masters(paths: list[str], cfg: dict, out_dir: str | Path) -> dict:
    """Make master bias/dark/flats from calibration frames and write them to ``out_dir``.

    Each master is checked (:class:`MasterChecks`); one that fails is refused, its frames
    quarantined with the reason. What is then missing follows ``reduce.allow_uncorrected``
    (:func:`allowed_missing`): allowed, the reduction goes without it (said in the log);
    otherwise a missing bias or dark stops here, and a band without a flat has its exposures
    quarantined by the field jobs.

    Parameters
    ----------
    paths : list of str
        Calibration frames of any type, in any order; may be empty (an archive of infrared
        or pre-reduced frames).
    cfg : dict
        Resolved config (``instrument`` layout, ``reduce.strict``, ``reduce.overscan_method``,
        ``reduce.allow_uncorrected``, ``reduce.master_checks``).
    out_dir : str or Path
        Gets ``master_bias.fits`` and ``master_dark.fits`` (when made),
        ``master_flat_<band>.fits`` and ``masters.json``.

    Returns
    -------
    dict
        The ``masters.json`` content: per master its file, sha256, input sha256s and quality
        figures (null: no such master); the masters refused, with their reasons and frames;
        the quarantined frames.

    Raises
    ------
    FrameError
        With ``reduce.strict``, on the first unusable frame or refused master.
    ValueError
        When a bias (or, if ``reduce.allow_uncorrected`` does not allow it, a dark) is missing
        and not allowed to be: one line naming what and the key to set (:func:`missing_error`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = Layout.from_config(cfg)
    method = cfg["reduce"]["overscan_method"]
    allowed = allowed_missing(cfg["reduce"])
    checks = MasterChecks.from_config(cfg["reduce"])
    frames, problems = classify(paths, layout.profile)
    _check_strict(cfg, problems)
    record: dict = {"bias": None, "dark": None, "flat": {}, "refused": []}
    refused: dict[str, str] = {}

    def stop(kinds: list[str]) -> ValueError:
        for problem in problems:
            log.warning("quarantined %s", problem)
        return missing_error(kinds, len(paths), layout.profile.name, refused)

    def refuse(label: str, stack: Stack, quality: dict, failed: list[str]) -> None:
        reason = f"master {label} refused: {'; '.join(failed)}; frames: {stack.names()}"
        log.warning("%s", reason)
        refused[label] = "; ".join(failed)
        record["refused"].append(
            {"master": label, "reason": reason, "frames": [f.path for f in stack.frames],
             "quality": quality}
        )  # fmt: skip
        problems.extend(FrameError(f.path, None, reason) for f in stack.frames)
        _check_strict(cfg, problems)

    def keep(label: str, master: np.ndarray, stack: Stack, judged: tuple[dict, list[str]],
             name: str, cards: dict) -> dict | None:
        """Save a master that passed its checks (its masters.json entry), else refuse it."""
        quality, failed = judged
        if failed:
            refuse(label, stack, quality, failed)
            return None
        log.info("master %s from %d frames", label, len(stack.frames))
        return _save(out / name, master, stack.frames, cards, quality)

    by_type = {k: [f for f in frames if f.imagetyp == k] for k in ("bias", "dark")}
    absent = [k for k in ("bias", "dark") if not by_type[k] and k not in allowed]
    if absent:  # before reading any pixels
        raise stop(absent)

    bias = None
    if by_type["bias"]:
        stack = _electrons_many(by_type["bias"], layout, method, problems)
        _check_strict(cfg, problems)
        if stack.frames:
            if not stack.overscan:
                log.info("no overscan (no BIASSEC in the headers, instrument.overscan_cols 0): "
                         "bias level from bias frames only")  # fmt: skip
            master = _combine(stack.images)
            record["bias"] = keep("bias", master, stack, _judge("bias", master, stack, checks),
                                  "master_bias.fits",
                                  {"IMAGETYP": "master bias", "BUNIT": "electron"})
            bias = master if record["bias"] else None
        del stack
    if bias is None:
        if "bias" not in allowed:
            raise stop(["bias"])
        log.warning(
            "no master bias: exposures are reduced without bias subtraction "
            "(reduce.allow_uncorrected); an overscan, where there is one, still removes the "
            "bias level"
        )

    dark = None
    if by_type["dark"]:
        stack = _electrons_many(by_type["dark"], layout, method, problems)
        _check_strict(cfg, problems)
        if stack.frames:
            exptimes = [f.exptime_s for f in stack.frames]
            rates = [
                (img - bias if bias is not None else img) / t
                for t, img in zip(exptimes, stack.images, strict=True)
            ]
            stack.images = []
            master = _combine(rates)
            del rates
            judged = _judge("dark", master, stack, checks, exptimes=exptimes)
            record["dark"] = keep("dark", master, stack, judged, "master_dark.fits",
                                  {"IMAGETYP": "master dark", "BUNIT": "electron/s"})
            dark = master if record["dark"] else None
        del stack
    if dark is None:
        if "dark" not in allowed:
            raise stop(["dark"])
        log.warning("no usable dark frames: dark correction will be skipped")

    bands = sorted({f.band for f in frames if f.imagetyp == "flat"})
    for band in bands:
        flats = [f for f in frames if f.imagetyp == "flat" and f.band == band]
        stack = _electrons_many(flats, layout, method, problems)
        _check_strict(cfg, problems)
        normalised, used, levels = [], [], []
        for k, (frame, img) in enumerate(zip(stack.frames, stack.images, strict=True)):
            signal = img
            if bias is not None:
                signal = signal - bias
            if dark is not None:
                signal = signal - dark * frame.exptime_s
            level = float(np.median(signal))
            if not level > 0:
                problems.append(
                    FrameError(
                        frame.path, None, f"flat with non-positive median level {level:.3g} e-"
                    )
                )
                continue
            normalised.append(signal / level)
            used.append(k)
            levels.append(level)
        _check_strict(cfg, problems)
        if not normalised:
            continue
        stack.frames = [stack.frames[k] for k in used]
        stack.read_noise_var = [stack.read_noise_var[k] for k in used]
        stack.images = []
        flat = _combine(normalised)
        del normalised
        flat = flat / np.median(flat)
        entry = keep(f"flat {band}", flat, stack,
                     _judge("flat", flat, stack, checks, levels=levels),
                     f"master_flat_{band}.fits",
                     {"IMAGETYP": "master flat", "FILTER": band, "BUNIT": ""})
        if entry:
            record["flat"][band] = entry

    for band in cfg["instrument"]["bands"]:
        if band not in record["flat"]:
            log.warning(
                "no usable flat for band %s: its exposures will be %s",
                band,
                "reduced without flat-field correction (reduce.allow_uncorrected)"
                if "flat" in allowed
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


def _save(
    path: Path, data: np.ndarray, frames: list[CalibFrame], cards: dict, quality: dict
) -> dict:
    cards = {**cards, "NCOMBINE": len(frames)}
    _write_fits(path, data, cards)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "inputs": {f.path: sha256_file(f.path) for f in frames},
        "quality": quality,
    }


def _check_strict(cfg: dict, problems: list[FrameError]) -> None:
    if cfg["reduce"]["strict"] and problems:
        raise problems[0]


def load_masters(calib_dir: str | Path, layout: Layout) -> Masters:
    """Read the masters written by :func:`build_masters`, checking their shape.

    A master that ``masters.json`` records as null (none made: ``reduce.allow_uncorrected``)
    is None in the result; refused masters are listed in :attr:`Masters.refused`.

    Raises
    ------
    FileNotFoundError
        When ``masters.json`` or a master file it names is missing.
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

    names = {}
    if record.get("bias"):  # null: none made (reduce.allow_uncorrected)
        names["bias"] = record["bias"]["file"]
    if record.get("dark"):
        names["dark"] = record["dark"]["file"]
    names.update({f"flat {b}": entry["file"] for b, entry in sorted(record["flat"].items())})
    # file reads and byte swaps release the GIL: read the masters side by side
    with ThreadPoolExecutor(max_workers=4) as pool:
        planes = dict(zip(names, pool.map(read, names.values()), strict=True))
    bias, dark = planes.get("bias"), planes.get("dark")
    flats = {key.split(" ", 1)[1]: data for key, data in planes.items() if key.startswith("flat ")}
    for entry in [record.get("bias"), record.get("dark"), *record["flat"].values()]:
        if entry:
            inputs.update(entry["inputs"])
            path = str(root / entry["file"])
            # as recorded when written (older records: hashed now); Masters.verify checks it
            files[path] = entry.get("sha256") or sha256_file(path)
    inputs.update(files)
    refused = {entry["master"]: entry["reason"] for entry in record.get("refused", [])}
    return Masters(
        bias,
        dark,
        flats,
        dict(sorted(inputs.items())),
        files,
        shape=layout.detector_shape,
        refused=refused,
    )


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
