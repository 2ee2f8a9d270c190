"""``astroflow reduce {calib,field,index}``: the reduce stage's command line.

The Snakemake rules call exactly these sub-commands; tests call :func:`main` in-process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from astroflow import config as config_mod
from astroflow.cli_common import add_config_args, resolve_config, setup_logging
from astroflow.io.fits_read import FrameError
from astroflow.io.plan import read_list

log = logging.getLogger(__name__)
DASK_ENV = "ASTROFLOW_DASK_JSON"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astroflow reduce", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    calib = sub.add_parser("calib", help="master bias, dark and flats from calibration frames")
    add_config_args(calib)
    frames = calib.add_mutually_exclusive_group(required=True)
    frames.add_argument(
        "--frames",
        nargs="+",
        metavar="FILE",
        help="calibration frames (classified as instrument.profile says)",
    )
    frames.add_argument(
        "--frames-from", metavar="LIST", help="file listing the calibration frames, one a line"
    )
    calib.add_argument("--out", required=True, metavar="DIR", help="output directory")

    field = sub.add_parser("field", help="calibrate, detect and cut out one field")
    add_config_args(field)
    field.add_argument("--field", required=True, help="field name (OBJECT)")
    exposures = field.add_mutually_exclusive_group(required=True)
    exposures.add_argument("--exposures", nargs="+", metavar="FILE", help="raw exposures")
    exposures.add_argument(
        "--exposures-from", metavar="LIST", help="file listing the raw exposures, one a line"
    )
    field.add_argument("--calib", required=True, metavar="DIR", help="masters directory")
    # nargs="?": a rule that expands an empty input list (data.labels: null) leaves "--labels"
    # without a value.
    field.add_argument(
        "--labels",
        nargs="?",
        const=None,
        default=None,
        metavar="PATH",
        help="labels catalog (ECSV, CSV or FITS table; columns per data.labels_columns); "
        "absent or empty: no labels, every object's label is -1",
    )
    field.add_argument("--out-store", required=True, metavar="DIR")
    field.add_argument("--out-objects", required=True, metavar="PATH")
    field.add_argument("--out-quarantine", required=True, metavar="PATH")
    field.add_argument("--threads", type=int, default=1, help="Dask worker threads")
    field.add_argument(
        "--dask-json",
        default=os.environ.get(DASK_ENV),
        help=f"the config's dask section as JSON (default: ${DASK_ENV}, which the workflow "
        "sets): where the graphs run, not what they compute, so it stays out of --config-json "
        "and a scheduler change reruns nothing",
    )
    field.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="per-exposure cache of products and catalogs (default: exposures/ beside the "
        "store's directory)",
    )

    index = sub.add_parser("index", help="gather fields: index.json, objects, quarantine, MLflow")
    add_config_args(index)
    index.add_argument("--field-dir", required=True, metavar="DIR")
    names = index.add_mutually_exclusive_group(required=True)
    names.add_argument("--fields", nargs="+", help="field names")
    names.add_argument("--fields-from", metavar="LIST", help="file listing the field names")
    index.add_argument(
        "--unusable",
        metavar="JSON",
        default=None,
        help="quarantine entries of the files the plan set aside (results/reduce/plan/"
        "unusable.json), listed in quarantine.json beside the fields' own",
    )
    index.add_argument(
        "--masters",
        metavar="JSON",
        default=None,
        help="masters.json of `reduce calib`: the calibration frames it set aside are listed in "
        "quarantine.json too",
    )
    index.add_argument("--out-dir", required=True, metavar="DIR")
    index.add_argument("--no-tracking", action="store_true", help="skip the MLflow run")

    for p in (calib, field, index):
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _set_aside_before_fields(unusable: str | None, masters: str | None) -> list[dict]:
    """Quarantine entries of the files set aside before the field jobs: by the plan, then by
    the calibration."""
    entries = json.loads(Path(unusable).read_text()) if unusable else []
    if masters:
        entries += json.loads(Path(masters).read_text()).get("quarantine", [])
    return entries


def main(argv: list[str] | None = None) -> int:
    """Run a reduce sub-command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = resolve_config(args)
    if getattr(args, "dask_json", None):
        cfg["dask"] = config_mod.from_json(json.dumps({"dask": json.loads(args.dask_json)}))["dask"]
    try:
        if args.command == "calib":
            from astroflow.reduce.masters import build_masters

            build_masters(args.frames or read_list(args.frames_from), cfg, args.out)
        elif args.command == "field":
            from astroflow.reduce.field import reduce_field

            reduce_field(
                cfg,
                args.field,
                args.exposures or read_list(args.exposures_from),
                args.calib,
                args.labels or None,
                args.out_store,
                args.out_objects,
                args.out_quarantine,
                threads=args.threads,
                cache_dir=args.cache_dir,
            )
        else:
            from astroflow.reduce.index import build_index

            build_index(
                cfg,
                args.field_dir,
                args.fields or read_list(args.fields_from),
                args.out_dir,
                track=not args.no_tracking,
                unusable=_set_aside_before_fields(args.unusable, args.masters),
            )
    except FrameError as exc:
        log.error("reduce.strict: %s", exc)
        return 1
    except (ValueError, FileNotFoundError) as exc:  # messages name the file and the problem
        log.error("reduce %s: %s", args.command, exc)
        return 1
    return 0
