"""The plan: which raw files each reduce job takes, in files, never on a command line.

The workflow decides what to reduce from the exposure sheet (:mod:`astroflow.io.archive`)
or, for the demo survey, from the simulator's layout, and writes the decision once under
``results/reduce/plan/``:

``calib.txt``          usable calibration frames, one path a line (``reduce calib``)
``fields.txt``         field names (``reduce index``)
``fields/<F>.txt``     usable science exposures of field F (``reduce field``)
``science.txt``        every usable science exposure (``evaluate``'s detection frames)
``unusable.json``      quarantine entries ``{path, hdu, reason}`` of the files set aside
``plan.json``          all of the above in one file, for jobs that reparse the Snakefile

Each file is rewritten only when its content changes, so Snakemake reruns a field's job only
when that field's exposures change, and no command line grows with the survey (a 10^4-
exposure field is one path on it). Cluster jobs read ``plan.json``, never the archive.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from astroflow.io.archive import FrameInfo, judge_all

PLAN_FILE = "plan.json"


@dataclass
class Plan:
    """Calibration frames, science exposures per field, and the files set aside (with why)."""

    calib: list[str] = field(default_factory=list)
    science: dict[str, list[str]] = field(default_factory=dict)
    unusable: list[dict] = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        return sorted(self.science)

    def to_json(self) -> str:
        return json.dumps({"calib": self.calib, "science": self.science,
                           "unusable": self.unusable}, indent=1, sort_keys=True) + "\n"


def plan_archive(rows: Iterable[FrameInfo], instrument: dict) -> Plan:
    """Sort sheet rows into the plan: usable frames by role, every other file with its reason.

    Parameters
    ----------
    rows : iterable of FrameInfo
        The exposure sheet (:func:`astroflow.io.archive.scan_archive`).
    instrument : dict
        The config's ``instrument`` section (bands, amplifier count and shape).
    """
    plan = Plan()
    for row, reason in judge_all(rows, instrument):
        if reason:
            plan.unusable.append({"path": row.path, "hdu": None, "reason": reason})
        elif row.imagetyp == "object":
            plan.science.setdefault(row.field, []).append(row.path)
        else:
            plan.calib.append(row.path)
    plan.calib.sort()
    plan.science = {f: sorted(paths) for f, paths in sorted(plan.science.items())}
    return plan


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless ``path`` holds it already (its mtime then stays)."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _lines(items: Iterable[str]) -> str:
    return "".join(f"{item}\n" for item in items)


def write_plan(plan: Plan, plan_dir: str | Path) -> None:
    """Write the plan's files (module docstring) under ``plan_dir``, each only if changed.

    The list of a field that left the plan is removed.
    """
    plan_dir = Path(plan_dir)
    _write_if_changed(plan_dir / "calib.txt", _lines(plan.calib))
    _write_if_changed(plan_dir / "fields.txt", _lines(plan.fields))
    _write_if_changed(plan_dir / "science.txt",
                      _lines(p for paths in plan.science.values() for p in paths))
    _write_if_changed(plan_dir / "unusable.json", json.dumps(plan.unusable, indent=2) + "\n")
    for name, paths in plan.science.items():
        _write_if_changed(plan_dir / "fields" / f"{name}.txt", _lines(paths))
    if (plan_dir / "fields").is_dir():
        for stale in (plan_dir / "fields").glob("*.txt"):
            if stale.stem not in plan.science:
                stale.unlink()
    _write_if_changed(plan_dir / PLAN_FILE, plan.to_json())


def load_plan(plan_dir: str | Path) -> Plan:
    """The plan written by :func:`write_plan` (what a job that reparses the workflow reads)."""
    path = Path(plan_dir) / PLAN_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} missing: run snakemake (the main process writes the plan) first"
        ) from None
    return Plan(data["calib"], data["science"], data["unusable"])


def read_list(path: str | Path) -> list[str]:
    """The non-empty lines of a plan list file (one path or name a line)."""
    return [line for line in Path(path).read_text().splitlines() if line.strip()]
