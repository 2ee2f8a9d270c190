"""A tiny raw archive for the SExtractor baseline tests, made by the real simulator and reduced
by the real reduce library: one 256 x 256 r-band exposure, its masters and its object table.

About 3 s on one core; one build per test session (see conftest.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from astroflow.config import validate

FIELD = "F00"


@dataclass
class RawField:
    cfg: dict
    exposures: list[str]
    calib_dir: Path
    truth: Path
    objects: pd.DataFrame


def sextractor_config() -> dict:
    """A one-band camera with a 256 x 256 detector (two 256 x 128 amplifiers) and a star-rich
    sky, so that both reduce's PSF measurement and PSFEx find enough bright stars."""
    return validate({
        "instrument": {"bands": ["r"], "amp_shape": [256, 128], "n_amps": 2,
                       "zeropoint_mag": {"r": 26.2}},
        "reduce": {"detection_band": "r"},
        "simulate": {"n_fields": 1, "n_bias": 1, "n_dark": 1, "n_flat": 1,
                     "density_per_arcmin2": 200.0, "star_fraction": 0.6, "mag_faint": 24.0},
    }, source="sextractor test")


def build_raw_field(root: Path) -> RawField:
    """Simulate, build masters and reduce one field under ``root``."""
    from astroflow.reduce.field import reduce_field
    from astroflow.reduce.masters import build_masters
    from astroflow.simulate.stage import make_catalogs, simulate_calib, simulate_field

    cfg = sextractor_config()
    raw = root / "raw"
    calib_frames = simulate_calib(cfg, raw)
    exposures = simulate_field(cfg, FIELD, raw, root / f"{FIELD}.truth.ecsv")
    make_catalogs(cfg, [str(root / f"{FIELD}.truth.ecsv")], root / "truth.ecsv",
                  root / "labels.ecsv")
    calib_dir = root / "calib"
    build_masters(calib_frames, cfg, calib_dir)
    reduce_field(cfg, FIELD, exposures, str(calib_dir), str(root / "labels.ecsv"),
                 str(root / f"{FIELD}.zarr"), str(root / f"{FIELD}.parquet"),
                 str(root / "quarantine.json"))
    objects = pd.read_parquet(root / f"{FIELD}.parquet")
    return RawField(cfg, [str(p) for p in exposures], calib_dir, root / "truth.ecsv", objects)
