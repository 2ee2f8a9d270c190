"""Shared fixture: one tiny simulated archive per test session."""

from __future__ import annotations

import json

import pytest
from astropy.table import Table
from sim_helpers import tiny_config

from astroflow.simulate import stage


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory):
    """The tiny survey, simulated once through the CLI entry point."""
    root = tmp_path_factory.mktemp("tiny_survey")
    cfg = tiny_config()
    rc = stage.main(
        ["all", "--config-json", json.dumps(cfg), "--raw-dir", str(root / "raw"),
         "--catalog-dir", str(root / "catalogs")]
    )
    assert rc == 0
    return {
        "cfg": cfg,
        "raw_dir": root / "raw",
        "truth": Table.read(root / "catalogs" / "truth.ecsv"),
        "labels": Table.read(root / "catalogs" / "labels.ecsv"),
        "catalog_dir": root / "catalogs",
    }




@pytest.fixture(scope="session")
def starry_archive(tmp_path_factory):
    """One tiny field with many bright stars (flat star counts), for PSF and photometry."""
    root = tmp_path_factory.mktemp("starry_survey")
    # Exposure time and density pinned (not the config defaults) so enough bright stars stay
    # unsaturated and isolated whatever the demo's depth is tuned to.
    cfg = tiny_config(n_fields=1, n_bias=1, n_dark=1, n_flat=1, star_fraction=0.6,
                      star_count_slope_per_mag=0.0, exptime_s=120.0, density_per_arcmin2=60.0)
    rc = stage.main(
        ["all", "--config-json", json.dumps(cfg), "--raw-dir", str(root / "raw"),
         "--catalog-dir", str(root / "catalogs")]
    )
    assert rc == 0
    return {
        "cfg": cfg,
        "raw_dir": root / "raw",
        "truth": Table.read(root / "catalogs" / "truth.ecsv"),
        "labels": Table.read(root / "catalogs" / "labels.ecsv"),
        "catalog_dir": root / "catalogs",
    }
