"""Simulation throughput on the demo camera (1024 x 1024 detector, all five bands, one field).

Runs ``simulate field`` for one field of the default config into a temporary directory and
reports raw megapixels written per second of CPU time (process time, so the number is per
core whatever the machine's load). The last line is JSON: ``{"mpix_per_s_per_core": f}``.
Also prints the default demo's projected CPU time (4 fields x 5 bands + calibrations).
``--config`` measures another configuration, e.g. a survey preset::

    python benchmarks/bench_simulate.py --config config/config.yaml config/presets/sdss_like.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from astroflow.config import load_config
from astroflow.simulate import layout, stage

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=[str(REPO / "config" / "config.yaml")],
                        help="config files, later ones override earlier ones")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(*args.config)
    inst = cfg["instrument"]
    ny, nx = inst["amp_shape"]
    mpix_per_exposure = ny * (nx + inst["overscan_cols"]) * inst["n_amps"] / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        stage.simulate_field(cfg, "F00", tmp, Path(tmp) / "F00.truth.ecsv")  # warm caches
        cpu0, wall0 = time.process_time(), time.perf_counter()
        paths = stage.simulate_field(cfg, "F01", tmp, Path(tmp) / "F01.truth.ecsv")
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        cpu0 = time.process_time()
        calib = stage.simulate_calib(cfg, Path(tmp) / "raw")
        cpu_calib = time.process_time() - cpu0
    mpix = mpix_per_exposure * len(paths)
    n_fields = cfg["simulate"]["n_fields"]
    print(f"science: {len(paths)} exposures, {mpix:.2f} Mpix, cpu {cpu:.2f} s, wall {wall:.2f} s")
    print(f"calibration: {len(calib)} frames, cpu {cpu_calib:.2f} s")
    print(f"whole survey ({len(layout.field_names(cfg))} fields): projected cpu "
          f"{n_fields * cpu + cpu_calib:.1f} s")
    print(json.dumps({"mpix_per_s_per_core": round(mpix / cpu, 3)}))


if __name__ == "__main__":
    main()
