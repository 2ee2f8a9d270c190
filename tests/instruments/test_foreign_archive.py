"""A foreign camera's archive runs through inspect, reduce, train and evaluate by its profile.

The archive (``foreign_archive.py``) is written the way another camera writes it; the user
supplies only an instrument profile and a labels mapping. The same archive under the demo
camera's profile gives file-named messages, not a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from foreign_archive import (
    BANDS,
    LABELS_COLUMNS,
    PIXEL_SCALE_ARCSEC,
    SHAPE,
    ZEROPOINT_MAG,
    write_foreign_archive,
)

from astroflow.config import ConfigError, deep_merge, validate
from astroflow.io import scan_archive
from astroflow.io.inspect import inspect_archive
from astroflow.io.inspect import main as inspect_main
from astroflow.io.profile import InstrumentProfile
from astroflow.reduce.stage import main as reduce_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_foreign_archive(tmp_path_factory.mktemp("foreign"))


def foreign_cfg(archive, profile: str | None = None, **reduce) -> dict:
    """What the user writes: the profile and the labels mapping (plus paths and run settings).

    Bands, pixel scale, zero points and geometry come from the profile (``PROFILE_YAML``).
    """
    root = archive.root
    return validate(
        {
            "seed": 5,
            "instrument": {
                "profile": profile or str(archive.profile),
            },
            "data": {
                "raw_dir": str(archive.raw_dir),
                "labels": str(archive.labels),
                "truth": None,
                "labels_columns": LABELS_COLUMNS,
            },
            "simulate": {"enabled": False},
            "reduce": {"detection_band": "r", "chunk_objects": 16, **reduce},
            "train": {
                "models": ["kim_brunner"],
                "max_epochs": 1,
                "batch_size": 16,
                "split": {"cell_arcsec": 15.0, "buffer_arcsec": 1.0},
            },
            "evaluate": {"n_bootstrap": 20, "mag_bins": [14.0, 18.0, 20.0, 24.0]},
            "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "foreign-test"},
        },
        source="tests/instruments",
    )


def test_profile_gives_bands_pixel_scale_and_zero_points(archive):
    """User config > profile > schema default, decided on the config as written."""
    inst = foreign_cfg(archive)["instrument"]
    assert inst["bands"] == BANDS and inst["pixel_scale_arcsec"] == PIXEL_SCALE_ARCSEC
    assert inst["zeropoint_mag"] == ZEROPOINT_MAG
    user = {"profile": str(archive.profile), "pixel_scale_arcsec": 0.25,
            "zeropoint_mag": {"g": 24.0, "r": 24.5}}  # fmt: skip
    inst = validate({"instrument": user, "reduce": {"detection_band": "r"}})["instrument"]
    assert (inst["bands"], inst["pixel_scale_arcsec"]) == (BANDS, 0.25)
    assert inst["zeropoint_mag"] == {"g": 24.0, "r": 24.5}
    # afcam carries none of them: the schema defaults stand, as before profiles had them.
    demo = validate({"instrument": {"profile": "afcam"}})["instrument"]
    assert demo["bands"] == ["u", "g", "r", "i", "z"] and demo["pixel_scale_arcsec"] == 0.2
    with pytest.raises(ConfigError, match=r"instrument.profile: .*'nocam' not found"):
        validate({"instrument": {"profile": "nocam"}})


def test_profile_beats_the_base_config_file_but_not_the_users_file(archive):
    """Snakemake merges config/config.yaml (demo bands) under the user's --configfile."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    written = {"instrument": {"profile": str(archive.profile), "pixel_scale_arcsec": 0.25}}
    merged = deep_merge(base, written)
    inst = validate(merged, written=written)["instrument"]
    assert (inst["bands"], inst["zeropoint_mag"]) == (BANDS, ZEROPOINT_MAG)
    assert inst["pixel_scale_arcsec"] == 0.25
    # the geometry too comes from the profile, not from the demo camera's config file
    assert (inst["n_amps"], inst["amp_shape"], inst["overscan_cols"]) == (1, list(SHAPE), 0)
    # Without ``written`` the merged file counts as written: its demo bands stay.
    assert validate(merged)["instrument"]["bands"] == base["instrument"]["bands"]


def test_profile_zero_points_must_cover_its_bands(tmp_path):
    spec = {"name": "halfzp", "bands": ["g", "r"], "zeropoint_mag": {"g": 25.0}}
    path = tmp_path / "halfzp.yaml"
    path.write_text(yaml.safe_dump(spec))
    cfg = {"instrument": {"profile": str(path)}, "reduce": {"detection_band": "g"}}
    with pytest.raises(ConfigError, match=r"no zero point for band\(s\) \['r'\]"):
        validate(cfg)
    bad = tmp_path / "badscale.yaml"  # a new file: profiles are cached by path and mtime
    bad.write_text(yaml.safe_dump({**spec, "pixel_scale_arcsec": -1}))
    cfg["instrument"]["profile"] = str(bad)
    with pytest.raises(ConfigError, match=r"badscale.yaml: invalid instrument profile at pixel"):
        validate(cfg)


def test_profile_classifies_by_keyword_and_file_name(archive):
    infos = {p.split("/")[-1]: i for i in scan_archive(archive.raw_dir, str(archive.profile))
             for p in [i.path]}  # fmt: skip
    assert infos["bias_0.fits"].imagetyp == "bias"
    assert infos["skyflat_r_1.fits"].imagetyp == "flat"  # OBSTYPE 'CALIB': by name only
    assert infos["skyflat_r_1.fits"].band == "r"
    assert (infos["sci_F2_g.fits"].imagetyp, infos["sci_F2_g.fits"].field) == ("object", "F2")
    assert not any(i.problem for i in infos.values())
    # The demo camera's profile recognises none of it, and says why for each file.
    demo = scan_archive(archive.raw_dir)
    assert all(i.imagetyp is None and "IMAGETYP" in i.problem for i in demo)


def test_inspect_reports_classification_and_what_is_missing(archive, capsys):
    cfg = foreign_cfg(archive)
    report = inspect_archive(archive.raw_dir, cfg)
    assert len(report.usable("object")) == 4 and not report.unusable
    assert len(report.usable("bias")) == 2 and len(report.usable("flat")) == 4
    assert report.missing == [
        "no usable dark frame: dark correction will be skipped (reduce.allow_uncorrected: false)"
    ]

    assert inspect_main([str(archive.raw_dir), "--config-json", json.dumps(cfg)]) == 0
    out = capsys.readouterr().out
    assert "field F1: g: 1, r: 1" in out and "flat: 4 (g: 2, r: 2)" in out
    assert "skyflat_g_0.fits: flat (file name) band=g" in out

    # Drop the r flats from the view: inspect says the r exposures will be quarantined.
    no_r = foreign_cfg(archive)
    spec = yaml.safe_load(archive.profile.read_text())
    spec["filename_patterns"] = {"flat": ["skyflat_g_*"]}
    profile = InstrumentProfile(spec, source="no-r-flats")
    report = inspect_archive(archive.raw_dir, no_r, profile)
    assert any(m.startswith("band r: 2 science exposure(s) but no usable flat") for m in
               report.missing)  # fmt: skip
    assert all("skyflat_r" in f.path for f in report.unusable)


def test_demo_profile_gives_file_named_messages(archive, tmp_path, capsys):
    cfg = foreign_cfg(archive, profile="afcam")
    assert inspect_main([str(archive.raw_dir), "--config-json", json.dumps(cfg)]) == 1
    out = capsys.readouterr().out
    for path in archive.calib + archive.science["F1"]:
        assert f"{path}: unknown or missing IMAGETYP None" in out
    rc = reduce_main(["calib", "--config-json", json.dumps(cfg), "--frames",
                      *archive.calib, "--out", str(tmp_path / "calib")])  # fmt: skip
    assert rc == 1  # an error message, not a traceback
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "no usable bias frame among 6 calibration frames (instrument profile 'afcam'" in err
    for path in archive.calib:
        assert (
            f"quarantined {path}[PRIMARY]: not a calibration frame: unknown or missing "
            f"IMAGETYP None" in err
        )
    assert not (tmp_path / "calib" / "masters.json").exists()


@pytest.mark.slow
def test_foreign_archive_runs_the_whole_pipeline(archive, tmp_path, monkeypatch, capsys):
    from astroflow.cli import main as cli_main

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = foreign_cfg(archive)
    cfg_json = json.dumps(cfg)
    out = tmp_path / "results"
    calib = out / "reduce" / "calib"
    assert reduce_main(["calib", "--config-json", cfg_json, "--frames", *archive.calib,
                        "--out", str(calib)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "no usable dark frames: dark correction will be skipped" in err
    assert "bias level from bias frames only" in err
    record = json.loads((calib / "masters.json").read_text())
    assert record["dark"] is None and sorted(record["flat"]) == BANDS
    assert record["quarantine"] == []

    fields = sorted(archive.science)
    field_dir = out / "reduce" / "fields"
    for name in fields:
        argv = [
            "field", "--config-json", cfg_json, "--field", name,
            "--exposures", *archive.science[name], "--calib", str(calib),
            "--labels", str(archive.labels), "--out-store", str(field_dir / f"{name}.zarr"),
            "--out-objects", str(field_dir / f"{name}.objects.parquet"),
            "--out-quarantine", str(field_dir / f"{name}.quarantine.json"),
        ]  # fmt: skip
        assert reduce_main(argv) == 0
        assert json.loads((field_dir / f"{name}.quarantine.json").read_text()) == []
        objects = pd.read_parquet(field_dir / f"{name}.objects.parquet")
        assert len(objects) >= 30  # 36 injected, all well above the noise
        assert (objects["label"] >= 0).mean() > 0.8  # matched through the CSV mapping
        assert set(objects["label"]) >= {0, 1}
    assert reduce_main(["index", "--config-json", cfg_json, "--field-dir", str(field_dir),
                        "--fields", *fields, "--out-dir", str(out / "reduce")]) == 0  # fmt: skip
    index = out / "reduce" / "index.json"

    train_dir = out / "train" / "kim_brunner"
    assert cli_main(["train", "--config-json", cfg_json, "--model", "kim_brunner",
                     "--index", str(index), "--out-dir", str(train_dir)]) == 0  # fmt: skip
    eval_dir = out / "evaluate" / "kim_brunner"
    assert cli_main(["evaluate", "--config-json", cfg_json, "--model", "kim_brunner",
                     "--index", str(index), "--train-dir", str(train_dir),
                     "--out-dir", str(eval_dir)]) == 0  # fmt: skip
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    # No truth table for a real archive: scored on the held-out objects' catalog labels.
    assert metrics["truth_source"] == "labels" and metrics["n_test"] > 0
    assert 0.0 <= metrics["model"]["auc"]["value"] <= 1.0
    pred = pd.read_parquet(eval_dir / "predictions.parquet")
    assert pred["p_galaxy"].between(0, 1).all()


@pytest.mark.parametrize("allow", [False, True])
def test_band_without_flats_is_quarantined_unless_allowed(archive, tmp_path, allow):
    """No r flats: r exposures are set aside with the reason, or reduced uncorrected."""
    cfg_json = json.dumps(foreign_cfg(archive, allow_uncorrected=allow, exposure_cache=False))
    frames = [p for p in archive.calib if "skyflat_r" not in p]
    calib = tmp_path / "calib"
    assert reduce_main(["calib", "--config-json", cfg_json, "--frames", *frames,
                        "--out", str(calib)]) == 0  # fmt: skip
    out = tmp_path / "F1"
    argv = [
        "field", "--config-json", cfg_json, "--field", "F1",
        "--exposures", *archive.science["F1"], "--calib", str(calib),
        "--labels", str(archive.labels), "--out-store", str(out / "F1.zarr"),
        "--out-objects", str(out / "F1.objects.parquet"),
        "--out-quarantine", str(out / "F1.quarantine.json"),
    ]  # fmt: skip
    assert reduce_main(argv) == 0
    quarantine = json.loads((out / "F1.quarantine.json").read_text())
    objects = pd.read_parquet(out / "F1.objects.parquet")
    if allow:
        assert quarantine == [] and len(objects) >= 30
    else:
        assert [q["path"] for q in quarantine] == [archive.science["F1"][1]]  # the r exposure
        assert "no calibration for band 'r' (no master flat" in quarantine[0]["reason"]
