"""Where the simulator writes, what it calls things, and when "it observed" them.

Pure functions of the config (no GalSim, no randomness), so the Snakefile can declare the exact
outputs of every simulate job and tests can predict file names, exposure numbers and dates
without rendering anything.

Exposure numbers (``EXPNUM``) are unique across the archive and stable for a given config:
bias ``1000 + i``, dark ``2000 + i``, flat ``3000 + 100 * band_index + i``, science
``100000 + 10000 * field_index + 100 * band_index + epoch``.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping

from astroflow.config import ConfigError

#: The night the demo survey starts (UTC); calibrations are taken the evening before.
SURVEY_START = _dt.datetime(2026, 3, 1, 3, 0, 0)
_MJD_EPOCH = _dt.datetime(1858, 11, 17)

#: Exposure time of the dark and flat calibration frames [s].
DARK_EXPTIME_S = 300.0
FLAT_EXPTIME_S = 3.0

#: Science field centres: field k sits at (FIELD_RA0 + FIELD_RA_STEP * k, FIELD_DEC) [deg].
FIELD_RA0_DEG = 150.0
FIELD_RA_STEP_DEG = 0.2
FIELD_DEC_DEG = 2.0


def _suffix(cfg: Mapping) -> str:
    return ".fits.fz" if cfg["simulate"]["compress"] else ".fits"


def field_names(cfg: Mapping) -> list[str]:
    """Field names ``F00, F01, ...`` (zero padded to at least two digits)."""
    n = int(cfg["simulate"]["n_fields"])
    width = max(2, len(str(n - 1)))
    return [f"F{k:0{width}d}" for k in range(n)]


def field_index(cfg: Mapping, field: str) -> int:
    """Index of ``field`` in :func:`field_names`; a clear error for an unknown field."""
    names = field_names(cfg)
    if field not in names:
        raise ConfigError(
            f"field {field!r} is not one of the {len(names)} simulated fields "
            f"(simulate.n_fields = {len(names)}: {names[0]} .. {names[-1]})"
        )
    return names.index(field)


def field_center_deg(index: int) -> tuple[float, float]:
    """(RA, Dec) of a field's pointing centre [deg]."""
    return FIELD_RA0_DEG + FIELD_RA_STEP_DEG * index, FIELD_DEC_DEG


def calib_frames(cfg: Mapping) -> list[dict]:
    """Every calibration frame as ``{kind, band, index, name, expnum}`` in write order."""
    sim = cfg["simulate"]
    frames = [
        {"kind": "bias", "band": None, "index": i, "name": f"bias_{i:03d}", "expnum": 1000 + i}
        for i in range(sim["n_bias"])
    ]
    frames += [
        {"kind": "dark", "band": None, "index": i, "name": f"dark_{i:03d}", "expnum": 2000 + i}
        for i in range(sim["n_dark"])
    ]
    for b, band in enumerate(cfg["instrument"]["bands"]):
        frames += [
            {
                "kind": "flat",
                "band": band,
                "index": i,
                "name": f"flat_{band}_{i:03d}",
                "expnum": 3000 + 100 * b + i,
            }
            for i in range(sim["n_flat"])
        ]
    return frames


def calib_files(cfg: Mapping, raw_dir: str | os.PathLike) -> list[str]:
    """Paths ``astroflow simulate calib`` writes, in write order."""
    suffix = _suffix(cfg)
    return [os.path.join(str(raw_dir), "calib", f["name"] + suffix) for f in calib_frames(cfg)]


def science_exposures(cfg: Mapping, field: str) -> list[dict]:
    """Every science exposure of ``field`` as ``{field, band, band_index, epoch, name, expnum}``."""
    k = field_index(cfg, field)
    out = []
    for b, band in enumerate(cfg["instrument"]["bands"]):
        for epoch in range(cfg["simulate"]["n_epochs"]):
            out.append(
                {
                    "field": field,
                    "field_index": k,
                    "band": band,
                    "band_index": b,
                    "epoch": epoch,
                    "name": f"{field}_{band}_e{epoch}",
                    "expnum": 100000 + 10000 * k + 100 * b + epoch,
                }
            )
    return out


def science_files(cfg: Mapping, raw_dir: str | os.PathLike, field: str) -> list[str]:
    """Paths ``astroflow simulate field --field FIELD`` writes (besides the truth ECSV)."""
    suffix = _suffix(cfg)
    return [
        os.path.join(str(raw_dir), "science", field, e["name"] + suffix)
        for e in science_exposures(cfg, field)
    ]


def observation_time(cfg: Mapping, expnum: int) -> _dt.datetime:
    """Deterministic UTC start time of an exposure, from its exposure number.

    Calibrations are taken the evening before the survey starts, one per 20 s; field k is
    observed on night k, its exposures back to back (exposure time plus 60 s overhead).
    """
    if expnum < 100000:
        kind, i = divmod(expnum, 1000)
        slot = (kind - 1) * 100 + i
        return SURVEY_START - _dt.timedelta(hours=12) + _dt.timedelta(seconds=20.0 * slot)
    k, rest = divmod(expnum - 100000, 10000)
    b, epoch = divmod(rest, 100)
    slot = b * cfg["simulate"]["n_epochs"] + epoch
    step = cfg["simulate"]["exptime_s"] + 60.0
    return SURVEY_START + _dt.timedelta(days=k, seconds=step * slot)


def iso_and_mjd(when: _dt.datetime) -> tuple[str, float]:
    """``DATE-OBS`` (ISO, millisecond precision) and ``MJD-OBS`` of a UTC datetime."""
    iso = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}"
    mjd = (when - _MJD_EPOCH).total_seconds() / 86400.0
    return iso, mjd
