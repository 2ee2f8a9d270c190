"""Calibrated detection-band frames for the SExtractor baselines, rebuilt from the raw archive.

The reduce stage keeps cutouts, not calibrated exposures, so the SExtractor baselines calibrate
the detection-band exposure of each field again with the reduce stage's own library (read only:
:func:`astroflow.reduce.calibrate.calibrate_exposure` with the masters of ``reduce calib``).
The exposure picked is the one reduce detects on: the first detection-band exposure of the
field, in EXPNUM then path order, that calibrates without a quarantine reason. One field at a
time is held in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import sep

from astroflow.io.fits_read import FrameError, read_primary_header

log = logging.getLogger(__name__)


def _expnum_key(header) -> tuple:
    expnum = header.get("EXPNUM", 0)
    try:
        return (int(expnum), "")
    except (TypeError, ValueError):
        return (0, str(expnum))


def detection_exposures(
    paths: Iterable[str | Path], band: str
) -> dict[str, list[str]]:
    """Detection-band science exposures grouped by field (``OBJECT``), in reduce's order.

    Unreadable files and other bands are left out (reduce quarantines the former).
    """
    found: dict[str, list[tuple]] = {}
    for path in map(str, paths):
        try:
            header = read_primary_header(path)
        except FrameError as exc:
            log.warning("SExtractor baselines: skipping %s", exc)
            continue
        if str(header.get("FILTER", "")).strip() != band:
            continue
        field = str(header.get("OBJECT", "")).strip()
        if not field:
            log.warning("SExtractor baselines: %s has no OBJECT (field); skipped", path)
            continue
        found.setdefault(field, []).append((*_expnum_key(header), path))
    return {field: [k[-1] for k in sorted(keys)] for field, keys in found.items()}


def weight_map(variance: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Inverse *background* variance, 0 on masked pixels.

    The calibrated variance includes the objects' own Poisson noise, which SExtractor adds
    itself from ``GAIN``; a smooth background estimate of the variance (sep, sources clipped)
    leaves only sky and read noise.
    """
    bad = (mask != 0) | ~np.isfinite(variance) | (variance <= 0)
    var = np.ascontiguousarray(np.where(bad, 0.0, variance), dtype=np.float32)
    background = sep.Background(var, mask=bad, bw=64, bh=64, fw=3, fh=3).back()
    weight = np.zeros(var.shape, np.float32)
    ok = ~bad & (background > 0)
    weight[ok] = 1.0 / background[ok]
    return weight


def calibrated_detection_frames(
    cfg: dict, exposures: Iterable[str | Path], calib_dir: str | Path, fields: Iterable[str]
) -> Iterator[tuple[str, object | None, str | None]]:
    """For each field in ``fields``: ``(field, Exposure, None)`` or ``(field, None, reason)``.

    Parameters
    ----------
    cfg : dict
        Needs ``instrument`` and ``reduce`` (detection band, overscan method).
    exposures : iterable of paths
        Raw science exposures (any bands, any fields).
    calib_dir : path
        The folder of ``reduce calib`` (``masters.json`` and master FITS).
    fields : iterable of str
        Fields to calibrate.
    """
    from astroflow.reduce.assemble import Layout
    from astroflow.reduce.calibrate import calibrate_exposure
    from astroflow.reduce.masters import load_masters

    band = cfg["reduce"]["detection_band"]
    masters = load_masters(calib_dir, Layout.from_config(cfg))
    by_field = detection_exposures(exposures, band)
    for field in fields:
        candidates = by_field.get(field, [])
        if not candidates:
            yield field, None, f"no {band}-band exposure of field {field} among the exposures"
            continue
        reasons = []
        for path in candidates:
            try:
                exposure = calibrate_exposure(path, cfg, masters)
            except FrameError as exc:
                reasons.append(str(exc))
                log.warning("SExtractor baselines: %s", exc)
                continue
            log.info("field %s: calibrated %s for SExtractor", field, path)
            yield field, exposure, None
            break
        else:
            yield field, None, "no usable exposure: " + "; ".join(reasons)
