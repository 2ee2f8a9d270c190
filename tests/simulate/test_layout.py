"""layout: the file names the Snakefile declares are the files the commands write."""

from __future__ import annotations

import subprocess
import sys

from sim_helpers import tiny_config

from astroflow.simulate import layout


def test_names_and_paths_match_the_archive(tiny_archive):
    cfg, raw = tiny_archive["cfg"], tiny_archive["raw_dir"]
    assert layout.field_names(cfg) == ["F00", "F01"]
    written = sorted(str(p) for p in raw.rglob("*.fits*"))
    declared = layout.calib_files(cfg, raw) + [
        p for f in layout.field_names(cfg) for p in layout.science_files(cfg, raw, f)
    ]
    assert sorted(declared) == written
    assert layout.science_files(cfg, raw, "F01")[0].endswith("science/F01/F01_g_e0.fits")
    assert layout.calib_files(cfg, raw)[0].endswith("calib/bias_000.fits")


def test_compressed_names_and_many_fields():
    cfg = tiny_config(compress=True, n_fields=120)
    names = layout.field_names(cfg)
    assert names[0] == "F000" and names[-1] == "F119"
    assert layout.science_files(cfg, "raw", "F007")[0] == "raw/science/F007/F007_g_e0.fits.fz"
    assert all(p.endswith(".fits.fz") for p in layout.calib_files(cfg, "raw"))


def test_expnums_unique_and_stable():
    cfg = tiny_config(n_fields=30, n_epochs=7, n_bias=20, n_dark=20, n_flat=20)
    nums = [f["expnum"] for f in layout.calib_frames(cfg)]
    for field in layout.field_names(cfg):
        nums += [e["expnum"] for e in layout.science_exposures(cfg, field)]
    assert len(nums) == len(set(nums))
    assert layout.science_exposures(cfg, "F02")[8]["expnum"] == 100000 + 20000 + 100 + 1
    times = [layout.observation_time(cfg, n) for n in nums]
    assert len(set(times)) == len(times)


def test_layout_does_not_import_galsim():
    code = (
        "import sys; from astroflow.simulate import layout; "
        "assert 'galsim' not in sys.modules, 'layout imported galsim'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
