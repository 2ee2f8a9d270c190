"""``astroflow inspect RAW_DIR``: what the instrument profile makes of an archive.

Reads every file's headers (no pixels) and says how the current profile classifies it: science
exposures per field and band, calibration frames, unusable files with the reason, and what is
missing (a band without flats, a science frame without WCS, no bias frames, no darks). Run it
before the pipeline on a new camera: every problem it lists would otherwise surface later as
a quarantine entry or a failed rule.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from astroflow import config as config_mod
from astroflow.cli_common import add_config_args, setup_logging
from astroflow.io.archive import FITS_SUFFIXES
from astroflow.io.fits_read import FrameError, read_headers
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


def _has_celestial_wcs(header: fits.Header) -> bool:
    if "CTYPE1" not in header:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception:  # any invalid WCS counts as none
            return False
    return bool(wcs.has_celestial)


def _verdict(path: Path, profile: InstrumentProfile, cfg: dict) -> FileVerdict:
    """Classify one file from its headers and check what reduce will need from them."""
    inst = cfg["instrument"]
    try:
        headers = read_headers(path)
    except FrameError as exc:
        return FileVerdict(str(path), None, "unreadable", problem=exc.reason)
    name, primary = headers[0]
    found = profile.classify(primary, path)
    verdict = FileVerdict(str(path), found.frame_type, found.how)
    if found.frame_type is None:
        verdict.problem = found.how
        return verdict
    images = [(n, h) for n, h in headers[1:] if h.get("NAXIS", 0) == 2]
    if not images and profile.primary_pixels and primary.get("NAXIS", 0) == 2:
        images = [(name, primary)]
    ny, nx = int(inst["amp_shape"][0]), int(inst["amp_shape"][1]) + int(inst["overscan_cols"])
    band = profile.get(primary, "filter")
    verdict.band = str(band).strip() if band is not None else None
    problems = []
    if len(images) != int(inst["n_amps"]):
        problems.append(
            f"wrong shape: {len(images)} image extension(s), expected instrument.n_amps = "
            f"{inst['n_amps']}"
            + ("" if profile.primary_pixels else " (profile pixels.primary_hdu is false)")
        )
    for ext, header in images:
        shape = (header.get("NAXIS2"), header.get("NAXIS1"))
        if shape != (ny, nx):
            problems.append(
                f"[{ext}] wrong shape {shape}, expected {(ny, nx)} "
                "(instrument.amp_shape + overscan_cols)"
            )
        gain_key = profile.key("gain")
        if profile.values["gain"] is None and gain_key not in header and gain_key not in primary:
            problems.append(f"[{ext}] missing header keyword {gain_key}")
        if profile.sections["required"] and not profile.sections.get("datasec"):
            for key in ("DATASEC", "DETSEC"):
                if key not in header and not (key == "DATASEC" and "TRIMSEC" in header):
                    problems.append(f"[{ext}] missing header keyword {key}")
    if found.frame_type == "object":
        obj = profile.get(primary, "object")
        verdict.field = str(obj).strip() if obj is not None else None
        for quantity in ("object", "filter", "exptime", "date"):
            if profile.get(primary, quantity) is None:
                problems.append(f"missing header keyword {profile.key(quantity) or quantity}")
        if verdict.band is not None and verdict.band not in inst["bands"]:
            problems.append(f"band {verdict.band!r} is not one of instrument.bands {inst['bands']}")
        verdict.has_wcs = _has_celestial_wcs(primary) or any(
            _has_celestial_wcs(h) for _, h in images
        )
        if not verdict.has_wcs:
            problems.append("missing or invalid WCS (no celestial CTYPE)")
    elif found.frame_type == "flat" and verdict.band is None:
        problems.append(f"missing header keyword {profile.key('filter')}")
    elif found.frame_type in {"flat", "dark"}:
        if profile.get(primary, "exptime") is None:
            problems.append(f"missing header keyword {profile.key('exptime')}")
    verdict.problem = "; ".join(problems) or None
    return verdict


def inspect_archive(raw_dir: str | Path, cfg: dict, profile: InstrumentProfile | None = None):
    """Classify every FITS file under ``raw_dir`` and list what the reduction will miss.

    Parameters
    ----------
    raw_dir : str or Path
        Archive root, searched recursively.
    cfg : dict
        Resolved config (``instrument``, ``reduce``).
    profile : InstrumentProfile, optional
        Default: the one ``instrument.profile`` names.

    Returns
    -------
    ArchiveReport
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"raw archive directory {root} does not exist")
    profile = profile or load_profile(cfg["instrument"].get("profile"))
    report = ArchiveReport(str(root), profile.name)
    paths = sorted(
        p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES)
    )
    for count, path in enumerate(paths, start=1):
        report.files.append(_verdict(path, profile, cfg))
        if count % 500 == 0:
            log.info("inspected %d/%d files", count, len(paths))
    science = report.usable("object")
    flat_bands = {f.band for f in report.usable("flat")}
    allow = cfg["reduce"].get("allow_uncorrected", False)
    for band, n in sorted(Counter(f.band for f in science).items()):
        if band not in flat_bands:
            action = "reduced without flat-field correction" if allow else "quarantined"
            report.missing.append(
                f"band {band}: {n} science exposure(s) but no usable flat: they will be "
                f"{action} (reduce.allow_uncorrected: {str(allow).lower()})"
            )
    if not report.usable("bias"):
        report.missing.append("no usable bias frame: `astroflow reduce calib` will fail")
    if not report.usable("dark"):
        report.missing.append("no dark frames: dark correction will be skipped")
    for f in report.files:
        if f.frame_type == "object" and not f.has_wcs:
            report.missing.append(f"science frame without WCS: {f.path}")
    detection = cfg["reduce"]["detection_band"]
    fields = sorted({f.field for f in science if f.field})
    for name in fields:
        if not any(f.field == name and f.band == detection for f in science):
            report.missing.append(
                f"field {name}: no {detection}-band exposure (reduce.detection_band): no objects"
            )
    return report


def format_report(report: ArchiveReport) -> str:
    """The report as the text ``astroflow inspect`` prints."""
    lines = [
        f"archive {report.raw_dir}: {len(report.files)} FITS file(s), "
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
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the archive report; exit code 1 when no science exposure is usable."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.config_json is not None:
        cfg = config_mod.from_json(args.config_json)
    elif args.config or Path("config/config.yaml").exists():
        cfg = config_mod.load_config(*(args.config or ["config/config.yaml"]))
    else:
        cfg = config_mod.validate({}, source="defaults")
    if args.profile:
        cfg["instrument"]["profile"] = args.profile
    try:
        report = inspect_archive(args.raw_dir, cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"astroflow inspect: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if report.usable("object") else 1
