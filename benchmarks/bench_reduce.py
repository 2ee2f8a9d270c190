"""Reduce-stage speed: against a naive reference, SExtractor, per core, 2 workers, incremental.

Frames come from the demo simulator (astroflow.simulate) on a 2048 x 2048 detector (two
2048 x 1024 amplifiers plus overscan), three bands x two epochs, dense enough for ~400
detections. Everything is measured in this one run, on the same frames:

- ``speedup_vs_naive``: the naive reference below (per-frame astropy ``CCDData`` arithmetic,
  L.A.Cosmic through astroscrappy, photutils background, detection, catalog and aperture
  photometry, one ``Cutout2D`` per object per exposure) over ``reduce_field`` with 1 worker.
  Most of it is the cosmic-ray algorithm, so ``speedup_vs_naive_same_cosmics`` (an extra key)
  gives the ratio with the naive reference running our cosmic-ray test instead: the
  implementation alone.
- ``time_ratio_vs_sextractor``: our detection + measurement (``detect_objects`` +
  ``measure``) over Debian's ``source-extractor`` single pass (detection, AUTO photometry,
  FLUX_RADIUS, CLASS_STAR) on the same calibrated detection frame; best of 3 each.
- ``mpix_per_s_per_core``: raw megapixels (overscan included) over the CPU seconds of the
  1-worker reduction (process CPU time, so other jobs on the machine do not count). Every
  timed run follows a warm-up reduction of one exposure, so imports and first-use costs are in
  none of them, but each loads the master calibrations itself, as a field job does; every
  reduction figure is the best of ``REPEATS`` interleaved runs.
- ``speedup_2_workers``: wall time with 1 worker over wall time with 2 (load-sensitive). On
  this field the work comes in 7 nearly equal parts (detection is about two exposures' worth)
  that 2 workers cannot split evenly, so even without serial work the ratio is at most ~1.75.
  A 1-worker job is not a one-core job on this 2-core machine: its idle-priority side threads
  (the masters' check, label matching, band combination) and its reading threads use the
  second core. ``speedup_2_workers_one_core_baseline`` (extra key) divides instead the wall
  time of 1 worker with every thread of this process confined to one CPU, as a job given
  one core runs (``threads: 1`` is ``--cpus-per-task=1`` under SLURM, a one-CPU cgroup).
  ``speedup_2_workers_12_exposures`` (and ``..._one_core_baseline``; extra keys) time the
  same on the wider field of 4 epochs per band that the frames are simulated for (the
  benchmark's field is its first 2).
- ``incremental_time_ratio``: reduce after adding the Nth exposure to a field reduced with
  N-1 (its catalog and products kept) over the full reduction, both with 1 worker: the share
  of the work a rerun still does. ``incremental_time_ratio_2_workers`` (extra key) is the
  same with 2 workers, where the rerun's one new exposure cannot use the second worker: with
  serial time S and N exposures of time 1 it is (S + 1) / (S + N / 2), above 2/N for any
  S > 0 once 2 workers scale well, so the 2/N goal is a 1-worker figure.
- ``field_job_start_s`` (extra key): seconds from a fresh interpreter to a field job's modules
  imported, best of 3. Snakemake runs every field in a process of its own, so each pays it
  on top of the reduction timed above (``tests/reduce/test_job_imports.py`` keeps modules
  the job does not use out of it).

Usage: ``python benchmarks/bench_reduce.py [--density 20] [--workdir DIR]``; needs the
``bench`` extra (photutils) and ``source-extractor`` on PATH. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from astroflow.config import load_config, validate
from astroflow.reduce.assemble import Layout
from astroflow.reduce.calibrate import calibrate_exposure
from astroflow.reduce.cosmics import clean_cosmic_rays, find_cosmic_rays
from astroflow.reduce.detect import detect_objects, measure
from astroflow.reduce.field import reduce_field
from astroflow.reduce.masters import build_masters, forget_masters, load_masters

REPO = Path(__file__).resolve().parents[1]
#: Interleaved repeats of every reduction figure (the best is kept: the whole reduction takes
#: ~2 s, where this machine's run-to-run noise is 10-25 %).
REPEATS = 3
#: Epochs per band of the benchmark's field, and of the wider field that times 2 workers
#: where the exposures can be shared out evenly.
EPOCHS, EPOCHS_WIDE = 2, 4
log = logging.getLogger("bench_reduce")


def bench_config(density: float) -> dict:
    """The demo config on a 2048 x 2048 detector, one field, 3 bands x ``EPOCHS_WIDE`` epochs
    (the first ``EPOCHS`` of each band make the benchmark's field)."""
    cfg = load_config(REPO / "config" / "config.yaml")
    cfg["instrument"].update({"bands": ["g", "r", "i"], "amp_shape": [2048, 1024], "n_amps": 2})
    cfg["instrument"]["zeropoint_mag"] = {
        b: cfg["instrument"]["zeropoint_mag"][b] for b in ("g", "r", "i")
    }
    cfg["simulate"].update(
        {"n_fields": 1, "n_epochs": EPOCHS_WIDE, "n_bias": 2, "n_dark": 1, "n_flat": 1,
         "density_per_arcmin2": density}
    )
    cfg["simulate"]["sky_mag_arcsec2"] = {
        b: cfg["simulate"]["sky_mag_arcsec2"][b] for b in ("g", "r", "i")
    }
    return validate(cfg, source="bench_reduce")


def _epoch(path: str) -> int:
    """The epoch of a simulated exposure, from its file name (``F00_r_e1.fits``)."""
    return int(re.search(r"_e(\d+)\.fits", os.path.basename(path)).group(1))


def simulate(cfg: dict, work: Path) -> tuple[list[str], list[str], str]:
    from astroflow.simulate import stage

    calib = stage.simulate_calib(cfg, work / "raw")
    science = stage.simulate_field(cfg, "F00", work / "raw", work / "F00.truth.ecsv")
    stage.make_catalogs(
        cfg, [str(work / "F00.truth.ecsv")], work / "truth.ecsv", work / "labels.ecsv"
    )
    return calib, science, str(work / "labels.ecsv")


def timed_reduce(
    cfg, science, calib_dir, labels, out: Path, threads: int, cache: Path, one_core=False
):
    """(wall s, cpu s, FieldResult) of one ``reduce_field`` run, masters loaded in it (as in
    a new field job); ``one_core``: with every thread of this process on one CPU."""
    forget_masters()
    with _on_one_cpu() if one_core else contextlib.nullcontext():
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = reduce_field(
            cfg, "F00", science, str(calib_dir), labels, str(out / "F00.zarr"),
            str(out / "F00.objects.parquet"), str(out / "F00.quarantine.json"),
            threads=threads, cache_dir=str(cache),
        )
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return wall, cpu, result


def _set_affinity_of_threads(cpus: set[int]) -> None:
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # a thread that ended meanwhile
            pass


@contextlib.contextmanager
def _on_one_cpu():
    """Every thread of this process, and those they start, on one CPU (Linux): a job given
    one core. Restores every thread's affinity to the whole set afterwards."""
    cpus = os.sched_getaffinity(0)
    _set_affinity_of_threads({min(cpus)})
    try:
        yield
    finally:
        _set_affinity_of_threads(cpus)


# -- the naive reference ------------------------------------------------------------------
def naive_reduce(
    cfg: dict, science: list[str], calib_dir: Path, out: Path, cosmics: str
) -> int:
    """Straightforward astropy/photutils reduction of the same frames; returns n objects.

    Per exposure: each amplifier read with ``fits.open``, overscan row medians subtracted,
    trimmed, gain applied, placed by DETSEC; then ``CCDData`` arithmetic with units and
    propagated uncertainty (bias, dark x EXPTIME, flat), cosmic rays either with L.A.Cosmic
    (``cosmics="lacosmic"``: astroscrappy, as ccdproc's ``cosmicray_lacosmic`` runs it, the
    textbook choice) or with our sharpness test (``"sharpness"``, so that ratio compares
    implementations only), a photutils ``Background2D``; detection on the first r exposure
    with ``detect_sources`` + ``SourceCatalog``; per exposure circular-aperture photometry and
    one ``Cutout2D`` per object, combined per band by a plain mean and saved with ``np.save``.
    """
    import astroscrappy
    from astropy import units as u
    from astropy.io import fits
    from astropy.nddata import CCDData, Cutout2D, StdDevUncertainty
    from astropy.wcs import WCS
    from photutils.aperture import CircularAperture, aperture_photometry
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import SourceCatalog, detect_sources, make_2dgaussian_kernel

    from astroflow.io.fits_read import parse_section

    bias = CCDData.read(calib_dir / "master_bias.fits", unit="electron")
    dark = CCDData.read(calib_dir / "master_dark.fits", unit="electron/s")
    flats = {}
    size = int(cfg["reduce"]["cutout_size"])
    frames = []
    for path in science:
        with fits.open(path) as hdul:
            band, exptime = hdul[0].header["FILTER"], float(hdul[0].header["EXPTIME"])
            ny, nx = Layout.from_config(cfg).detector_shape
            detector = np.zeros((ny, nx))
            for hdu in hdul[1:]:
                h = hdu.header
                data = hdu.data.astype(float)
                dy, dx = parse_section(h["DATASEC"])
                oy, ox = parse_section(h["BIASSEC"])
                ty, tx = parse_section(h["DETSEC"])
                level = np.median(data[oy, ox], axis=1)
                detector[ty, tx] = (data[dy, dx] - level[:, None]) * h["GAIN"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs = WCS(hdul[1].header)
                wcs.wcs.crpix = [
                    wcs.wcs.crpix[0] + parse_section(hdul[1].header["DETSEC"])[1].start,
                    wcs.wcs.crpix[1],
                ]
        if band not in flats:
            flats[band] = CCDData.read(calib_dir / f"master_flat_{band}.fits", unit="")
        raw = CCDData(
            detector, unit="electron",
            uncertainty=StdDevUncertainty(np.sqrt(np.maximum(detector, 0) + 16.0)),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ccd = raw.subtract(bias).subtract(dark.multiply(exptime * u.s))
            ccd = ccd.divide(flats[band])
        image = np.asarray(ccd.data, np.float32)
        var = np.asarray(ccd.uncertainty.array, np.float32) ** 2
        if cosmics == "lacosmic":
            _, image = astroscrappy.detect_cosmics(
                image, invar=var, sigclip=4.5, objlim=5.0, gain=1.0, readnoise=4.0, niter=4
            )
        bkg = Background2D(image, (64, 64), filter_size=(3, 3), bkg_estimator=MedianBackground())
        if cosmics == "sharpness":
            bad = np.zeros(image.shape, bool)
            hits = find_cosmic_rays(image, var, bkg.background.astype(np.float32), bad)
            clean_cosmic_rays(image, bkg.background.astype(np.float32), hits, bad)
        frames.append(
            (path, band, (image - bkg.background) / exptime, bkg.background_rms / exptime, wcs)
        )
    det = next(f for f in frames if f[1] == cfg["reduce"]["detection_band"])
    kernel = make_2dgaussian_kernel(3.0, size=5)
    from astropy.convolution import convolve

    smoothed = convolve(det[2], kernel)
    segm = detect_sources(smoothed, 3.0 * det[3], npixels=int(cfg["reduce"]["detect_min_area"]))
    catalog = SourceCatalog(det[2], segm, convolved_data=smoothed, wcs=det[4])
    sky = catalog.sky_centroid
    n = len(catalog)
    stacks = {b: np.zeros((n, size, size)) for b in cfg["instrument"]["bands"]}
    counts = {b: 0 for b in stacks}
    for _, band, image, _, wcs in frames:
        xy = np.column_stack(wcs.world_to_pixel(sky))
        aperture_photometry(image, CircularAperture(xy, r=4.0))
        for i, position in enumerate(sky):
            cut = Cutout2D(image, position, size, wcs=wcs, mode="partial", fill_value=0.0)
            stacks[band][i] += cut.data
        counts[band] += 1
    out.mkdir(parents=True, exist_ok=True)
    cube = np.stack([stacks[b] / max(counts[b], 1) for b in stacks], axis=1).astype(np.float32)
    np.save(out / "F00.npy", cube)
    return n


# -- SExtractor ---------------------------------------------------------------------------
def sextractor_time(exposure, cfg: dict, work: Path, repeats: int = 3) -> tuple[float, int]:
    """Best wall time of ``source-extractor``'s single pass on the calibrated frame."""
    from astropy.io import fits

    exe = shutil.which("source-extractor") or shutil.which("sex")
    if exe is None:
        raise SystemExit("source-extractor not found (apt install source-extractor)")
    share = Path("/usr/share/source-extractor")
    image = work / "det.fits"
    weight = work / "det.var.fits"
    fits.writeto(image, exposure.image, overwrite=True)
    fits.writeto(weight, exposure.variance, overwrite=True)
    params = work / "single.param"
    params.write_text(
        "NUMBER\nX_IMAGE\nY_IMAGE\nFLUX_AUTO\nFLUXERR_AUTO\nFLUX_APER(1)\nFLUX_RADIUS\n"
        "A_IMAGE\nB_IMAGE\nTHETA_IMAGE\nKRON_RADIUS\nFLAGS\nCLASS_STAR\n"
    )
    cmd = [
        exe, str(image), "-c", str(share / "default.sex"),
        "-PARAMETERS_NAME", str(params), "-FILTER_NAME", str(share / "default.conv"),
        "-STARNNW_NAME", str(share / "default.nnw"), "-CATALOG_TYPE", "ASCII_HEAD",
        "-CATALOG_NAME", str(work / "det.cat"), "-WEIGHT_TYPE", "MAP_VAR",
        "-WEIGHT_IMAGE", str(weight), "-DETECT_THRESH", str(cfg["reduce"]["detect_sigma"]),
        "-ANALYSIS_THRESH", str(cfg["reduce"]["detect_sigma"]),
        "-DETECT_MINAREA", str(cfg["reduce"]["detect_min_area"]),
        "-PIXEL_SCALE", str(cfg["instrument"]["pixel_scale_arcsec"]),
        "-SEEING_FWHM", f"{exposure.psf_fwhm_arcsec:.3f}", "-BACK_TYPE", "MANUAL",
        "-BACK_VALUE", "0.0", "-PHOT_APERTURES", f"{2 * exposure.psf_aperture_pix:.2f}",
        "-VERBOSE_TYPE", "QUIET", "-NTHREADS", "1",
    ]
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=work)
        best = min(best, time.perf_counter() - t0)
    n = sum(1 for line in (work / "det.cat").read_text().splitlines() if not line.startswith("#"))
    return best, n


def ours_detect_measure_time(exposure, cfg: dict, repeats: int = 3) -> tuple[float, int]:
    best, n = np.inf, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        catalog = detect_objects(
            exposure, float(cfg["reduce"]["detect_sigma"]), int(cfg["reduce"]["detect_min_area"])
        )
        measure(exposure, catalog)
        best, n = min(best, time.perf_counter() - t0), len(catalog)
    return best, n


def field_job_start_time(repeats: int = 3) -> float:
    """Best wall time of a fresh interpreter importing what ``astroflow reduce field`` imports."""
    code = "import astroflow.cli, astroflow.reduce.stage, astroflow.reduce.field"
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        walls.append(time.perf_counter() - start)
    return min(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=20.0, help="objects per arcmin^2")
    parser.add_argument("--workdir", default=None, help="keep the frames here (default: temp)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    if not hasattr(os, "sched_setaffinity"):
        raise SystemExit("bench_reduce needs Linux: the 1-worker baseline runs on one CPU")
    cfg = bench_config(args.density)
    tmp = None if args.workdir else tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        calib, wide, labels = simulate(cfg, work)
        science = [p for p in wide if _epoch(p) < EPOCHS]
        layout = Layout.from_config(cfg)
        raw_mpix = len(science) * layout.amp_ny * (layout.amp_nx + layout.overscan_cols)
        raw_mpix *= layout.n_amps / 1e6
        log.info("simulated %d exposures (%.1f raw Mpix) in %.0f s", len(science), raw_mpix,
                 time.perf_counter() - t0)
        calib_dir = work / "calib"
        build_masters(calib, cfg, calib_dir)

        warm = [p for p in science if "_r_" in os.path.basename(p)][:1]  # detects, cuts out
        timed_reduce(cfg, warm, calib_dir, labels, work / "w0", 1, work / "cache0")
        # best of REPEATS interleaved runs each, every full run from an empty cache
        runs: dict[int, list] = {1: [], 2: []}
        reruns: dict[int, list[float]] = {1: [], 2: []}
        one_core: list[float] = []
        for rep in range(REPEATS):
            one_core.append(timed_reduce(
                cfg, science, calib_dir, labels, work / "w1c", 1, work / f"cache1c-{rep}",
                one_core=True)[0])
            for threads in (1, 2):
                runs[threads].append(timed_reduce(
                    cfg, science, calib_dir, labels, work / f"w{threads}",
                    threads, work / f"cache{threads}-{rep}"))
                # incremental: the field reduced without its last exposure, then "added"
                cache = work / f"inc{threads}-{rep}"
                out = work / f"i{threads}"
                timed_reduce(cfg, science[:-1], calib_dir, labels, out, threads, cache)
                wall, _, res = timed_reduce(cfg, science, calib_dir, labels, out, threads, cache)
                assert (res.n_calibrated, res.digest) == (1, runs[threads][-1][2].digest)
                reruns[threads].append(wall)
        wall1, cpu1, res1 = min(runs[1], key=lambda run: run[1])  # least CPU
        wall1 = min(run[0] for run in runs[1])
        wall2, cpu2, res2 = min(runs[2], key=lambda run: run[0])
        inc1, inc2 = min(reruns[1]), min(reruns[2])
        wall1c = min(one_core)
        log.info("1 worker: %.2f s wall, %.2f s cpu, %d objects", wall1, cpu1, res1.n_objects)
        log.info("1 worker on one core: %.2f s wall", wall1c)
        log.info("2 workers: %.2f s wall", wall2)
        log.info("incremental (1 of %d new): %.2f s (1 worker), %.2f s (2 workers)",
                 len(science), inc1, inc2)
        assert res1.digest == res2.digest, "1 and 2 workers disagree"

        # 2 workers on a field with enough exposures to share out evenly: the field above
        # (detection ~2 exposures' work + 5) leaves one worker idle for one exposure's time
        walls_wide: dict[str, list[float]] = {"1c": [], "1": [], "2": []}
        for rep in range(REPEATS):
            for kind in walls_wide:
                walls_wide[kind].append(timed_reduce(
                    cfg, wide, calib_dir, labels, work / f"wide{kind}", int(kind[0]),
                    work / f"cache-wide{kind}-{rep}", one_core=kind == "1c")[0])
        wide_walls = {kind: min(walls) for kind, walls in walls_wide.items()}
        log.info("%d exposures: %.2f s with 1 worker on one core (%.2f s unconfined), %.2f s "
                 "with 2", len(wide), wide_walls["1c"], wide_walls["1"], wide_walls["2"])

        wall_naive = {}
        for cosmics in ("lacosmic", "sharpness"):
            wall0 = time.perf_counter()
            n_naive = naive_reduce(cfg, science, calib_dir, work / "naive", cosmics)
            wall_naive[cosmics] = time.perf_counter() - wall0
            log.info("naive reference (%s): %.1f s wall, %d objects", cosmics,
                     wall_naive[cosmics], n_naive)

        masters = load_masters(calib_dir, layout)
        detection = calibrate_exposure(
            next(p for p in science if "_r_" in os.path.basename(p)), cfg, masters
        )
        t_sex, n_sex = sextractor_time(detection, cfg, work)
        t_ours, n_ours = ours_detect_measure_time(detection, cfg)
        log.info("detect+measure: ours %.3f s (%d objects), source-extractor %.3f s (%d)",
                 t_ours, n_ours, t_sex, n_sex)
        job_start = field_job_start_time()
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"frames: {len(science)} x 2048x2048, {raw_mpix:.1f} raw Mpix, {res1.n_objects} objects")
    print(f"reduce 1 worker: {wall1:.1f} s wall, {cpu1:.1f} s cpu "
          f"({raw_mpix / wall1:.2f} Mpix/s wall)")
    print(f"reduce 1 worker on one core: {wall1c:.2f} s wall")
    print(f"reduce 2 workers: {wall2:.2f} s wall; incremental rerun {inc1:.2f} s with 1 worker, "
          f"{inc2:.2f} s with 2")
    print(f"naive reference: {wall_naive['lacosmic']:.1f} s wall with L.A.Cosmic, "
          f"{wall_naive['sharpness']:.1f} s with our cosmic-ray test")
    print(f"detect+measure: ours {t_ours:.3f} s, source-extractor {t_sex:.3f} s")
    print(f"field job start (interpreter and imports): {job_start:.2f} s")
    print(json.dumps({
        "speedup_vs_naive": round(wall_naive["lacosmic"] / wall1, 3),
        "time_ratio_vs_sextractor": round(t_ours / t_sex, 3),
        "mpix_per_s_per_core": round(raw_mpix / cpu1, 3),
        "speedup_2_workers": round(wall1 / wall2, 3),
        "incremental_time_ratio": round(inc1 / wall1, 3),
        "n_exposures": len(science),
        "speedup_vs_naive_same_cosmics": round(wall_naive["sharpness"] / wall1, 3),
        "incremental_time_ratio_2_workers": round(inc2 / wall2, 3),
        f"speedup_2_workers_{len(wide)}_exposures": round(wide_walls["1"] / wide_walls["2"], 3),
        "speedup_2_workers_one_core_baseline": round(wall1c / wall2, 3),
        f"speedup_2_workers_{len(wide)}_exposures_one_core_baseline": round(
            wide_walls["1c"] / wide_walls["2"], 3
        ),
        "field_job_start_s": round(job_start, 3),
    }))


if __name__ == "__main__":
    main()
