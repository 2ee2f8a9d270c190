"""``astroflow inspect RAW_DIR``: what the instrument profile makes of an archive.

Reads every file's headers (no pixels) with the code the workflow plans with, and says how the
current profile classifies it: science exposures per field and band, calibration frames,
unusable files with the reason, and what is missing (a band without flats, no bias frames, no
darks). Run it before the pipeline on a new camera: every problem it lists would otherwise
surface later as a quarantine entry or a failed rule.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from astroflow import config as config_mod
from astroflow.cli_common import add_config_args, setup_logging
from astroflow.io.archive import judge_all, scan_archive
from astroflow.io.profile import InstrumentProfile, load_profile

log = logging.getLogger(__name__)


@dataclass
class FileVerdict:
    """How one file was classified: type, field, band, how it was decided, or why unusable."""

    path: str
    frame_type: str | None
    how: str
    field: str | None = None
    band: str | None = None
    problem: str | None = None
    has_wcs: bool = True


@dataclass
class ArchiveReport:
    """Everything ``astroflow inspect`` prints, as data (tests and callers use this)."""

    raw_dir: str
    profile: str
    files: list[FileVerdict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def unusable(self) -> list[FileVerdict]:
        return [f for f in self.files if f.problem]

    def usable(self, frame_type: str) -> list[FileVerdict]:
        return [f for f in self.files if f.frame_type == frame_type and not f.problem]


def inspect_archive(
    raw_dir: str | Path,
    cfg: dict,
    profile: InstrumentProfile | None = None,
    sheet: str | Path | None = None,
):
    """Classify every file under ``raw_dir`` and list what the reduction will miss.

    The files are read and judged by the code the workflow plans with
    (:func:`astroflow.io.archive.scan_archive` and :func:`~astroflow.io.archive.judge`), so
    a file inspect calls usable is one the workflow reduces, and every file it calls unusable
    is one the workflow names in ``quarantine.json`` with the same reason.

    Parameters
    ----------
    raw_dir : str or Path
        Archive root, searched recursively.
    cfg : dict
        Resolved config (``instrument``, ``reduce``).
    profile : InstrumentProfile, optional
        Default: the one ``instrument.profile`` names.
    sheet : str or Path, optional
        Exposure sheet to read and update (the workflow's is
        ``results/reduce/plan/sheet.parquet``): only new or changed files are read.

    Returns
    -------
    ArchiveReport
    """
    profile = profile or load_profile(cfg["instrument"].get("profile"))
    report = ArchiveReport(str(raw_dir), profile.name)
    for row, problem in judge_all(scan_archive(raw_dir, profile, sheet=sheet),
                                  cfg["instrument"]):
        report.files.append(FileVerdict(
            row.path, row.imagetyp, row.how, row.field, row.band, problem, row.has_wcs,
        ))
    # what the reduction does without a master is reduce's rule: ask it
    from astroflow.reduce.masters import allowed_missing

    allowed = allowed_missing(cfg["reduce"])
    setting = f"reduce.allow_uncorrected: {json.dumps(cfg['reduce'].get('allow_uncorrected'))}"
    science = report.usable("object")
    flat_bands = {f.band for f in report.usable("flat")}
    for band, n in sorted(Counter(f.band for f in science).items()):
        if band not in flat_bands:
            action = ("reduced without flat-field correction" if "flat" in allowed
                      else "quarantined")
            report.missing.append(
                f"band {band}: {n} science exposure(s) but no usable flat: they will be "
                f"{action} ({setting})"
            )
    for kind, without in (("bias", "bias subtraction"), ("dark", "dark correction")):
        if report.usable(kind):
            continue
        if kind in allowed:
            report.missing.append(f"no usable {kind} frame: {without} will be skipped "
                                  f"({setting})")
        else:
            report.missing.append(f"no usable {kind} frame: `astroflow reduce calib` will stop "
                                  f"({setting}; list {kind} in it to go without)")
    detection = cfg["reduce"]["detection_band"]
    with_detection = {f.field for f in science if f.band == detection}
    for name in sorted({f.field for f in science if f.field} - with_detection):
        report.missing.append(
            f"field {name}: no {detection}-band exposure (reduce.detection_band): no objects"
        )
    return report


def format_report(report: ArchiveReport) -> str:
    """The report as the text ``astroflow inspect`` prints."""
    lines = [
        f"archive {report.raw_dir}: {len(report.files)} file(s), "
        f"instrument profile {report.profile!r}"
    ]
    science = report.usable("object")
    per_field: dict[str, Counter] = defaultdict(Counter)
    for f in science:
        per_field[f.field or "?"][f.band or "?"] += 1
    lines.append(f"science exposures: {len(science)}")
    for name, bands in sorted(per_field.items()):
        counts = ", ".join(f"{b}: {n}" for b, n in sorted(bands.items()))
        lines.append(f"  field {name}: {counts}")
    lines.append("calibration frames:")
    for kind in ("bias", "dark", "flat"):
        usable = report.usable(kind)
        text = f"  {kind}: {len(usable)}"
        if kind == "flat" and usable:
            counts = Counter(f.band for f in usable)
            text += " (" + ", ".join(f"{b}: {n}" for b, n in sorted(counts.items())) + ")"
        lines.append(text)
    lines.append(f"unusable files: {len(report.unusable)}")
    for f in report.unusable:
        lines.append(f"  {f.path}: {f.problem}")
    lines.append(f"missing: {len(report.missing)}")
    lines.extend(f"  {m}" for m in report.missing)
    lines.append("classification:")
    for f in report.files:
        what = f.frame_type or "unknown"
        extra = " ".join(
            x for x in (f.field and f"field={f.field}", f.band and f"band={f.band}") if x
        )
        lines.append(f"  {f.path}: {what} ({f.how}){' ' + extra if extra else ''}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astroflow inspect", description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", metavar="RAW_DIR", help="raw archive folder")
    add_config_args(parser)
    parser.add_argument(
        "--profile", default=None, help="instrument profile name or YAML (default: the config's)"
    )
    parser.add_argument(
        "--sheet",
        default=None,
        metavar="PARQUET",
        help="exposure sheet to read and update, so only new or changed files are read "
        "(the workflow keeps results/reduce/plan/sheet.parquet)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the archive report; exit code 1 when no science exposure is usable."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.config_json is not None:
            cfg = config_mod.from_json(args.config_json)
        elif args.config or Path("config/config.yaml").exists():
            cfg = config_mod.load_config(*(args.config or ["config/config.yaml"]))
        else:
            cfg = config_mod.validate({}, source="defaults")
        if args.profile:
            cfg["instrument"]["profile"] = args.profile
        report = inspect_archive(args.raw_dir, cfg, sheet=args.sheet)
    except (FileNotFoundError, ValueError, config_mod.ConfigError) as exc:
        print(f"astroflow inspect: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if report.usable("object") else 1
