"""Planning speed: the exposure sheet against reading every header, at 10^3 to 10^5 files.

Synthetic archives hold the demo camera's real headers (primary and two amplifier extensions
written by the simulator's own header code: WCS, sections, a HIERARCH card, a lower-case
keyword, an unquoted value) around 64 x 64-pixel amplifiers: the headers cost what a real
archive's do, the pixels nothing. A field is 5 bands x 20 epochs; 1 % of the files are
calibration frames. Every figure is measured in this run, on the same files:

- ``plan_cold_s``: a fresh process's planning with no sheet: walk the archive, read every
  header, judge every file, write the sheet and the plan's lists (what the first ``snakemake``
  on an own archive does at parse time).
- ``plan_warm_s``: the same again, sheet present and nothing changed (every later invocation).
- ``plan_incremental_s``: after adding 1 % new files (new fields' exposures).
- ``getheader_loop_s``: ``astropy.io.fits.getheader`` of every file (primary only): the
  baseline the goal of "cold plan <= 1.5 x" refers to.
- ``peak_rss_mb``: peak resident memory of the cold planning process.
- ``job_parse_s`` (largest size only): a cluster job's parse of the Snakefile
  (``snakemake --mode remote``, as a SLURM job runs it), which reads the plan, not the archive.
- ``snakemake_dry_run_warm_s`` (extra key, largest size): ``snakemake -n`` with the sheet
  present: our planning plus Snakemake's own DAG over every input file.

The file system cache is warm for every figure (the files were just written), as it is for the
baseline. Usage: ``python benchmarks/bench_plan.py [--sizes 1000 10000 100000] [--dir DIR]``;
the last line printed is JSON with one value per size for each key.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
BANDS = ["u", "g", "r", "i", "z"]
EPOCHS = 20
AMP = (64, 64)  # the smallest amplifier the config schema allows


def _config(raw: Path) -> dict:
    from astroflow import config as config_mod

    return config_mod.validate(
        {
            "instrument": {"n_amps": 2, "amp_shape": list(AMP), "overscan_cols": 0},
            "simulate": {"enabled": False},
            "data": {"raw_dir": str(raw), "labels": str(raw.parent / "labels.ecsv"),
                     "truth": None},
        },
        source="bench_plan",
    )


def _templates(cfg: dict, tmp: Path) -> dict[str, bytes]:
    """One written file per frame kind (science per band), as bytes to clone."""
    from astroflow.simulate import archive as sim_archive
    from astroflow.simulate.camera import Detector

    sim_cfg = json.loads(json.dumps(cfg))
    sim_cfg["simulate"]["nonstandard_headers"] = True
    det = Detector(sim_cfg)
    wcs = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
           "CRPIX1": 2.0, "CRPIX2": 2.0, "CD1_1": -5.6e-5, "CD1_2": 0.0, "CD2_1": 0.0,
           "CD2_2": 5.6e-5, "CUNIT1": "deg", "CUNIT2": "deg"}
    kinds = {f"object_{b}": ("object", b) for b in BANDS}
    kinds.update({"bias": ("bias", None), "dark": ("dark", None), "flat_r": ("flat", "r")})
    out = {}
    for name, (imagetyp, band) in kinds.items():
        primary = sim_archive.primary_header(
            sim_cfg, object_name="F00000" if imagetyp == "object" else imagetyp,
            imagetyp=imagetyp, band=band, exptime_s=0.0 if imagetyp == "bias" else 90.0,
            expnum=123456, airmass=1.2)
        amps = [sim_archive.amp_header(det, amp, wcs if imagetyp == "object" else None)
                for amp in det.amps]
        data = [np.full(AMP, 1000, np.uint16) for _ in amps]
        path = tmp / f"{name}.fits"
        sim_archive.write_exposure(path, primary, data, amps, compress=False)
        out[name] = path.read_bytes()
    return out


def _set_card(blob: bytes, key: str, value) -> bytes:
    """``blob`` with the primary header's ``key`` card given ``value`` (same 80 bytes)."""
    start = blob.index(f"{key:<8}=".encode())
    card = fits.Card(key, value).image.encode("ascii")
    return blob[:start] + card + blob[start + 80:]


def write_archive(raw: Path, n_files: int, templates: dict[str, bytes], start: int = 0,
                  field_prefix: str = "F") -> list[Path]:
    """``n_files`` files (1 % calibration) with unique EXPNUM and per-field OBJECT values."""
    paths = []
    n_calib = max(3, n_files // 100)
    for i in range(start, start + n_files):
        k = i - start
        if k < n_calib:
            kind = ("bias", "dark", "flat_r")[k % 3]
            path = raw / "calib" / f"{kind}_{i:07d}.fits"
            field = None
        else:
            j = i - n_calib
            field = f"{field_prefix}{j // (len(BANDS) * EPOCHS):05d}"
            band = BANDS[(j // EPOCHS) % len(BANDS)]
            kind = f"object_{band}"
            path = raw / "science" / field / f"{field}_{band}_{j % EPOCHS:02d}.fits"
        blob = _set_card(templates[kind], "EXPNUM", 1_000_000 + i)
        if field:
            blob = _set_card(blob, "OBJECT", field)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        paths.append(path)
    return paths


def plan_once(cfg_json: str, plan_dir: str) -> dict:
    """One planning as the Snakefile's main process does it; seconds and peak RSS."""
    from astroflow import config as config_mod
    from astroflow.io import plan as plan_mod
    from astroflow.io.archive import scan_archive
    from astroflow.io.profile import load_profile

    cfg = config_mod.from_json(cfg_json)
    start = time.perf_counter()
    rows = scan_archive(cfg["data"]["raw_dir"], load_profile(cfg["instrument"]["profile"]),
                        sheet=f"{plan_dir}/sheet.parquet")
    plan = plan_mod.plan_archive(rows, cfg["instrument"])
    plan_mod.write_plan(plan, plan_dir)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s": seconds, "rss_mb": rss, "files": len(rows), "unusable": len(plan.unusable),
            "fields": len(plan.fields)}


def _plan_in_child(cfg: dict, plan_dir: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--plan-once", json.dumps(cfg), str(plan_dir)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _getheader_loop(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        fits.getheader(path)
    return time.perf_counter() - start


def _snakemake(work: Path, cfg_file: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
         *args, "--configfile", str(cfg_file)],
        check=True, capture_output=True, text=True,
    )
    return time.perf_counter() - start


def bench_size(n: int, root: Path, templates: dict[str, bytes], workflow: bool) -> dict:
    raw = root / f"raw_{n}"
    cfg = _config(raw)
    paths = write_archive(raw, n, templates)
    work = root / f"work_{n}"
    plan_dir = work / "results/reduce/plan"
    cold = _plan_in_child(cfg, plan_dir)
    assert cold["unusable"] == 0, cold  # every synthetic file is usable: nothing hides
    warm = _plan_in_child(cfg, plan_dir)
    write_archive(raw, max(1, n // 100), templates, start=n, field_prefix="N")
    incremental = _plan_in_child(cfg, plan_dir)
    loop = _getheader_loop(paths)
    out = {"files": n, "fields": cold["fields"], "plan_cold_s": cold["s"],
           "plan_warm_s": warm["s"], "plan_incremental_s": incremental["s"],
           "getheader_loop_s": loop, "peak_rss_mb": cold["rss_mb"]}
    print(f"{n} files, {cold['fields']} fields: cold {cold['s']:.2f} s, warm {warm['s']:.2f} s,"
          f" +1 % {incremental['s']:.2f} s, getheader loop {loop:.2f} s, "
          f"peak RSS {cold['rss_mb']:.0f} MB", flush=True)
    if workflow:
        (raw.parent / "labels.ecsv").write_text("# %ECSV 1.0\n# ---\n# datatype:\n"
                                                "# - {name: ra, datatype: float64}\n"
                                                "# - {name: dec, datatype: float64}\n"
                                                "# - {name: class, datatype: string}\n"
                                                "ra dec class\n150.0 2.0 star\n")
        cfg_file = root / f"config_{n}.json"
        cfg_file.write_text(json.dumps({k: cfg[k] for k in ("instrument", "simulate", "data")}))
        out["snakemake_dry_run_warm_s"] = _snakemake(work, cfg_file, "-n", "--quiet", "all")
        out["job_parse_s"] = min(
            _snakemake(work, cfg_file, "--mode", "remote", "--target-jobs",
                       "reduce_field:field=F00000", "-n", "--quiet", "all")
            for _ in range(3))
        print(f"  snakemake -n {out['snakemake_dry_run_warm_s']:.1f} s, a job's parse "
              f"{out['job_parse_s']:.2f} s", flush=True)
    shutil.rmtree(raw)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument("--plan-once", nargs=2, metavar=("CONFIG_JSON", "PLAN_DIR"),
                        help="(internal) plan once in this process and print its figures")
    args = parser.parse_args(argv)
    if args.plan_once:
        print(json.dumps(plan_once(*args.plan_once)))
        return 0
    root = Path(tempfile.mkdtemp(prefix="bench_plan_", dir=args.dir))
    try:
        templates = _templates(_config(root / "raw"), root)
        results = [bench_size(n, root, templates, workflow=n == max(args.sizes))
                   for n in sorted(args.sizes)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    keys = [k for k in results[-1] if k != "files"]
    summary = {"files": [r["files"] for r in results]}
    summary.update({k: [round(r[k], 3) if k in r else None for r in results] for k in keys})
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    raise SystemExit(main())
