"""The exposure sheet and the plan: incremental, nothing dropped, lists in files, inspect agrees."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from astropy.io import fits
from synthetic_archive import INSTRUMENT, write_archive

from astroflow import config as config_mod
from astroflow.io import plan as plan_mod
from astroflow.io.archive import scan_archive
from astroflow.io.inspect import inspect_archive
from astroflow.io.profile import load_profile
from astroflow.reduce.stage import main as reduce_main

REPO = Path(__file__).resolve().parents[2]


def _cfg(raw: Path, **instrument) -> dict:
    return config_mod.validate(
        {"instrument": {**INSTRUMENT, **instrument}, "simulate": {"enabled": False},
         "data": {"raw_dir": str(raw), "labels": str(raw.parent / "labels.ecsv"),
                  "truth": None}},
        source="test",
    )


def _n_read(caplog) -> int:
    (line,) = [r.getMessage() for r in caplog.records if " read, " in r.getMessage()]
    caplog.clear()
    return int(re.search(r"(\d+) read", line).group(1))


def test_sheet_reads_only_new_or_changed_files_and_names_bad_ones(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="astroflow.io.archive")
    raw, sheet = tmp_path / "raw", tmp_path / "plan" / "sheet.parquet"
    paths = write_archive(raw, n_fields=2, epochs=2, n_calib=1)
    profile = load_profile("afcam")
    rows = scan_archive(raw, profile, sheet=sheet)
    assert len(rows) == len(paths) and _n_read(caplog) == len(paths)
    assert not [r for r in rows if r.problem]

    scan_archive(raw, profile, sheet=sheet)
    assert _n_read(caplog) == 0  # warm: nothing read

    new = raw / "science" / "F0002" / "F0002_r_000.fits"
    new.parent.mkdir()
    new.write_bytes(paths[-1].read_bytes().replace(b"'F0001   '", b"'F0002   '"))
    changed = paths[-2]
    changed.write_bytes(changed.read_bytes().replace(b"FILTER  = 'i", b"FILTER  = 'z"))
    paths[0].unlink()
    (raw / "science" / "notes.txt").write_text("seeing 0.9 arcsec\n")
    (raw / "science" / "F0000" / "cut.fits").write_bytes(paths[-3].read_bytes()[:4000])
    rows = {Path(r.path).name: r for r in scan_archive(raw, profile, sheet=sheet)}
    assert _n_read(caplog) == 4  # new, changed, and two bad files; the deleted one is gone
    assert paths[0].name not in rows
    assert rows[new.name].field == "F0002" and rows[changed.name].band == "z"

    plan = plan_mod.plan_archive(rows.values(), _cfg(raw)["instrument"])
    reasons = {Path(e["path"]).name: e["reason"] for e in plan.unusable}
    assert set(reasons) == {"notes.txt", "cut.fits", changed.name}
    assert "not a FITS file" in reasons["notes.txt"]
    assert "truncated" in reasons["cut.fits"]
    assert "band 'z' is not one of instrument.bands" in reasons[changed.name]
    assert plan.fields == ["F0000", "F0001", "F0002"]

    # the plan's unusable files reach quarantine.json, through the command the rule runs
    out = tmp_path / "plan"
    plan_mod.write_plan(plan, out)
    (tmp_path / "fields").mkdir()
    (out / "none.txt").write_text("")
    refused = {"path": str(raw / "calib" / "flat_g_000.fits"), "hdu": None,
               "reason": "master flat g refused: 77.3 % of its pixels saturated"}
    (tmp_path / "masters.json").write_text(json.dumps({"quarantine": [refused]}))
    assert reduce_main(["index", "--config-json", json.dumps(_cfg(raw)),
                        "--field-dir", str(tmp_path / "fields"), "--fields-from",
                        str(out / "none.txt"), "--unusable", str(out / "unusable.json"),
                        "--masters", str(tmp_path / "masters.json"),
                        "--out-dir", str(tmp_path / "reduce"), "--no-tracking"]) == 0
    quarantine = json.loads((tmp_path / "reduce" / "quarantine.json").read_text())
    assert {Path(e["path"]).name: e["reason"] for e in quarantine} == {
        **reasons, "flat_g_000.fits": refused["reason"]}


def test_a_profile_change_rebuilds_the_sheet_a_config_change_does_not(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="astroflow.io.archive")
    raw, sheet = tmp_path / "raw", tmp_path / "sheet.parquet"
    paths = write_archive(raw, n_fields=1, epochs=1, n_calib=1)
    scan_archive(raw, load_profile("afcam"), sheet=sheet)
    _n_read(caplog)
    rows = scan_archive(raw, load_profile("afcam"), sheet=sheet)
    assert _n_read(caplog) == 0
    # fewer bands in the config: judged anew from the sheet, no header read
    plan = plan_mod.plan_archive(rows, _cfg(raw, bands=["g", "r"])["instrument"])
    assert {Path(e["path"]).name for e in plan.unusable} == {
        "F0000_i_000.fits", "flat_i_000.fits"}
    scan_archive(raw, load_profile("single_ccd"), sheet=sheet)
    assert _n_read(caplog) == len(paths)


def test_plan_files_change_only_when_their_content_does(tmp_path):
    rows = scan_archive(write_archive(tmp_path / "raw", 2, 1)[0].parents[1])
    plan = plan_mod.plan_archive(rows, _cfg(tmp_path / "raw")["instrument"])
    out = tmp_path / "plan"
    plan_mod.write_plan(plan, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")}
    os.utime(out / "fields" / "F0000.txt", ns=(1, 1))
    plan.science["F0001"] = plan.science["F0001"][:1]
    del plan.science["F0000"]
    plan_mod.write_plan(plan, out)
    assert not (out / "fields" / "F0000.txt").exists()  # a field that left is gone
    assert (out / "calib.txt").stat().st_mtime_ns == stamps[out / "calib.txt"]
    assert plan_mod.read_list(out / "fields" / "F0001.txt") == plan.science["F0001"]
    assert plan_mod.load_plan(out).science == plan.science


def test_inspect_says_what_the_plan_does(tmp_path):
    """One ingestion path: inspect's usable / unusable + reason is the plan's, file by file."""
    raw = tmp_path / "raw"
    paths = write_archive(raw, n_fields=2, epochs=1, n_calib=1)
    no_wcs = paths[-1].read_bytes().replace(b"RA---TAN", b"PIXEL   ")
    paths[-1].write_bytes(no_wcs.replace(b"DEC--TAN", b"PIXEL   "))
    (raw / "junk.bin").write_bytes(b"\0" * 100)
    # a header that lies about its data's size: the next header is not where it should be
    wrong = paths[-2].read_bytes().replace(b"NAXIS1  =                   64",
                                           b"NAXIS1  =                   32", 1)
    paths[-2].write_bytes(wrong)
    cfg = _cfg(raw)
    report = inspect_archive(raw, cfg)
    plan = plan_mod.plan_archive(scan_archive(raw, load_profile("afcam")), cfg["instrument"])
    said = {f.path: f.problem for f in report.files}
    assert {e["path"]: e["reason"] for e in plan.unusable} == {
        p: r for p, r in said.items() if r}
    used = set(plan.calib) | {p for ps in plan.science.values() for p in ps}
    assert used == {p for p, r in said.items() if not r}
    assert len(plan.unusable) == 3


@pytest.mark.slow
def test_planning_2000_files_then_no_command_line_grows(tmp_path):
    """A 2,000-file archive is planned with every file used; a 10^4-exposure DAG's commands
    stay short (lists travel in files)."""
    raw = tmp_path / "data" / "raw"
    paths = write_archive(raw, n_fields=100, epochs=34, n_calib=10)
    assert len(paths) >= 10_000
    (tmp_path / "data" / "labels.ecsv").write_text("# %ECSV 1.0\n# ---\nra dec class\n1 2 star\n")
    cfg = {"instrument": INSTRUMENT, "simulate": {"enabled": False},
           "data": {"raw_dir": "data/raw", "labels": "data/labels.ecsv", "truth": None}}
    (tmp_path / "own.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "-n", "-p", "--configfile", str(tmp_path / "own.json")],
        capture_output=True, text=True, env=env, timeout=900, check=True,
    )
    plan = plan_mod.load_plan(tmp_path / "results/reduce/plan")
    assert sum(len(p) for p in plan.science.values()) + len(plan.calib) == len(paths)
    assert not plan.unusable and len(plan.fields) == 100
    marker = "Shell command: "
    commands = [line.split(marker, 1)[1] for line in (proc.stdout + proc.stderr).splitlines()
                if marker in line]
    assert sum("astroflow reduce field" in c for c in commands) == 100
    assert any("astroflow evaluate" in c for c in commands)
    # the longest is a job's stage config (JSON) and its paths: fixed, whatever the survey
    assert max(len(c) for c in commands) < 16_000, max(commands, key=len)[:300]


def test_real_filter_names_units_and_dates(tmp_path):
    """band_map turns a camera's filter values into band names; an unmapped or broken value
    is named, never used as a path; minutes and old-form dates are read."""
    raw = tmp_path / "raw"
    paths = {p.name: p for p in write_archive(raw, n_fields=1, epochs=1, n_calib=1)}

    def edit(name, old, new):
        blob = paths[name].read_bytes()
        card = fits.Card(*new).image.encode()
        start = blob.index(f"{old:<8}=".encode())
        paths[name].write_bytes(blob[:start] + card + blob[start + 80:])

    edit("F0000_g_000.fits", "FILTER", ("FILTER", "g'_SDSS 480_145"))
    edit("F0000_r_000.fits", "FILTER", ("FILTER", "  =   1 / Stroem_u_711"))
    edit("F0000_i_000.fits", "DATE-OBS", ("DATE-OBS", "01/03/98"))
    edit("flat_i_000.fits", "FILTER", ("FILTER", "NB_2.25"))
    profile_yaml = tmp_path / "cam.yaml"
    profile_yaml.write_text(yaml.safe_dump({
        "name": "cam", "band_map": {"g*SDSS*": "g", "NB_2.25": "i"}, "exptime_unit": "min"}))
    profile = load_profile(str(profile_yaml))
    rows = {Path(r.path).name: r for r in scan_archive(raw, profile)}
    assert rows["F0000_g_000.fits"].band == "g" and rows["flat_i_000.fits"].band == "i"
    assert rows["F0000_g_000.fits"].exptime == 3600.0  # 60 min
    assert rows["F0000_i_000.fits"].problem is None  # 1 March 1998
    plan = plan_mod.plan_archive(rows.values(), _cfg(raw)["instrument"])
    (entry,) = plan.unusable
    assert entry["path"].endswith("F0000_r_000.fits")
    assert "'=   1 / Stroem_u_711' is not one of instrument.bands" in entry["reason"]
    edit("F0000_i_000.fits", "DATE-OBS", ("DATE-OBS", "yesterday"))
    row = {Path(r.path).name: r for r in scan_archive(raw, profile)}["F0000_i_000.fits"]
    assert "DATE-OBS 'yesterday' is not a date" in row.problem
