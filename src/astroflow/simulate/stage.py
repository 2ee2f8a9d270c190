"""``astroflow simulate``: make the demo survey's raw archive and catalogs.

Sub-commands (the Snakemake rules call exactly these)::

    astroflow simulate calib    --config-json J --raw-dir DIR
    astroflow simulate field    --config-json J --field F00 --raw-dir DIR --truth-out PATH
    astroflow simulate catalogs --config-json J --truth-in PATH... --truth-out PATH
                                --labels-out PATH
    astroflow simulate all      --config-json J --raw-dir DIR --catalog-dir DIR

Everything is deterministic from ``seed``: the same config gives byte-identical files.
A survey preset is one more config file:
``--config config/config.yaml config/presets/sdss_like.yaml`` (see ``docs/simulate.md``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping

from astroflow.cli_common import add_config_args, resolve_config, setup_logging
from astroflow.config import ConfigError
from astroflow.simulate import layout

log = logging.getLogger("astroflow.simulate")


def check_config(cfg: Mapping) -> None:
    """Simulator-specific checks the schema cannot express; errors name the key."""
    from astroflow.simulate import camera
    from astroflow.simulate.sky import check_bands

    check_bands(cfg["instrument"]["bands"])
    if len(cfg["instrument"]["bands"]) > 99:
        raise ConfigError("instrument.bands: the simulator numbers exposures for at most 99 bands")
    sim = cfg["simulate"]
    # The lowest-gain amplifier must still fit a full well into 16 bits above its bias.
    lowest_gain = (1 - camera.GAIN_SPREAD) * sim["gain_e_per_adu"]
    full_well_adu = sim["full_well_e"] / lowest_gain
    room_adu = camera.ADC_MAX_ADU - camera.BIAS_LEVEL_ADU - camera.BIAS_HEADROOM_ADU
    if full_well_adu > room_adu:
        raise ConfigError(
            f"simulate.full_well_e: {sim['full_well_e']:g} e- at simulate.gain_e_per_adu "
            f"{sim['gain_e_per_adu']:g} (amplifiers down to {lowest_gain:.3g} e-/ADU) is "
            f"{full_well_adu:.0f} ADU, more than the {room_adu:.0f} ADU a 16-bit pixel holds "
            f"above the bias; lower full_well_e or raise gain_e_per_adu"
        )
    if not cfg["simulate"]["enabled"]:
        log.warning("simulate.enabled is false; simulating anyway because it was asked for")


def simulate_calib(cfg: Mapping, raw_dir: str | os.PathLike) -> list[str]:
    """Write the bias, dark and flat frames; returns their paths."""
    from astroflow.simulate import archive, camera
    from astroflow.simulate.seeding import CALIB_FRAME, rng_for

    check_config(cfg)
    det = camera.Detector(cfg)
    paths = layout.calib_files(cfg, raw_dir)
    frames = layout.calib_frames(cfg)
    for count, (frame, path) in enumerate(zip(frames, paths, strict=True), start=1):
        rng = rng_for(cfg, CALIB_FRAME, frame["expnum"])
        kind = frame["kind"]
        if kind == "bias":
            exptime, electrons = 0.0, det.expose(0.0, 0.0, rng, None, cosmics=False)
        elif kind == "dark":
            exptime = layout.DARK_EXPTIME_S
            electrons = det.expose(0.0, exptime, rng, None, cosmics=True)
        else:
            exptime = layout.FLAT_EXPTIME_S
            level = det.flat_level_e * (1.0 + rng.normal(0.0, 0.03))
            electrons = det.expose(level, exptime, rng, frame["band"], cosmics=False)
        primary = archive.primary_header(
            cfg, object_name=kind, imagetyp=kind, band=frame["band"], exptime_s=exptime,
            expnum=frame["expnum"], airmass=1.0,
        )
        amps = det.read_out(electrons, rng)
        headers = [archive.amp_header(det, amp, None) for amp in det.amps]
        archive.write_exposure(path, primary, amps, headers, cfg["simulate"]["compress"])
        log.info("calib %d/%d: wrote %s", count, len(paths), path)
    return paths


def simulate_field(
    cfg: Mapping, field: str, raw_dir: str | os.PathLike, truth_out: str | os.PathLike
) -> list[str]:
    """Write every science exposure of ``field`` and its truth ECSV; returns the FITS paths."""
    import numpy as np

    from astroflow.simulate import archive, camera, catalogs, render, sky

    check_config(cfg)
    k = layout.field_index(cfg, field)
    det = camera.Detector(cfg)
    pop = sky.draw_population(cfg, k)
    log.info("%s: %d objects (%d stars)", field, len(pop["ra"]), int(pop["is_star"].sum()))
    exposures = layout.science_exposures(cfg, field)
    paths = layout.science_files(cfg, raw_dir, field)
    plans = []
    for count, (exp, path) in enumerate(zip(exposures, paths, strict=True), start=1):
        t0 = time.perf_counter()
        plan = render.plan_exposure(cfg, exp)
        wcs_keys = render.detector_wcs(cfg, k, plan)
        expected, n_drawn = render.render_sky(cfg, pop, plan, exp["band_index"], wcs_keys)
        rng = np.random.default_rng(plan["noise_seed"])
        electrons = det.expose(
            expected, cfg["simulate"]["exptime_s"], rng, exp["band"], cosmics=True
        )
        primary = archive.primary_header(
            cfg, object_name=field, imagetyp="object", band=exp["band"],
            exptime_s=cfg["simulate"]["exptime_s"], expnum=exp["expnum"],
            airmass=plan["airmass"],
        )
        amps = det.read_out(electrons, rng)
        headers = [archive.amp_header(det, amp, wcs_keys) for amp in det.amps]
        archive.write_exposure(path, primary, amps, headers, cfg["simulate"]["compress"])
        plan["n_objects_drawn"] = n_drawn
        plans.append(plan)
        log.info(
            "%s exposure %d/%d: %s, seeing %.2f arcsec, %d objects, %.1f s",
            field, count, len(paths), path, plan["seeing_fwhm_arcsec"], n_drawn,
            time.perf_counter() - t0,
        )
    catalogs.write_ecsv(catalogs.truth_table(cfg, field, k, pop, plans), truth_out)
    log.info("%s: wrote truth catalog %s", field, truth_out)
    return paths


def make_catalogs(
    cfg: Mapping,
    truth_in: list[str],
    truth_out: str | os.PathLike,
    labels_out: str | os.PathLike,
) -> tuple[int, int]:
    """Merge per-field truth tables and draw the labels catalog; returns (n_truth, n_labels)."""
    from astroflow.simulate import catalogs

    truth = catalogs.merge_truth(truth_in)
    labels = catalogs.make_labels(cfg, truth)
    catalogs.write_ecsv(truth, truth_out)
    catalogs.write_ecsv(labels, labels_out)
    log.info("wrote %s (%d objects) and %s (%d labels)", truth_out, len(truth), labels_out,
             len(labels))
    return len(truth), len(labels)


def simulate_all(cfg: Mapping, raw_dir: str, catalog_dir: str) -> None:
    """Calibrations, every field, then the catalogs, one after the other."""
    simulate_calib(cfg, raw_dir)
    truths = []
    for field in layout.field_names(cfg):
        path = os.path.join(catalog_dir, "fields", f"{field}.truth.ecsv")
        simulate_field(cfg, field, raw_dir, path)
        truths.append(path)
    make_catalogs(
        cfg, truths, os.path.join(catalog_dir, "truth.ecsv"),
        os.path.join(catalog_dir, "labels.ecsv"),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astroflow simulate", description="Make the demo survey (raw FITS + catalogs)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("calib", help="bias, dark and flat frames")
    p.add_argument("--raw-dir", required=True)
    p = sub.add_parser("field", help="science exposures of one field and its truth table")
    p.add_argument("--field", required=True)
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--truth-out", required=True)
    p = sub.add_parser("catalogs", help="merged truth table and labels catalog")
    p.add_argument("--truth-in", nargs="+", required=True)
    p.add_argument("--truth-out", required=True)
    p.add_argument("--labels-out", required=True)
    p = sub.add_parser("all", help="everything, sequentially")
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--catalog-dir", required=True)
    for p in sub.choices.values():
        add_config_args(p)
        p.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg = resolve_config(args)
        if args.command == "calib":
            simulate_calib(cfg, args.raw_dir)
        elif args.command == "field":
            simulate_field(cfg, args.field, args.raw_dir, args.truth_out)
        elif args.command == "catalogs":
            make_catalogs(cfg, args.truth_in, args.truth_out, args.labels_out)
        else:
            simulate_all(cfg, args.raw_dir, args.catalog_dir)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
