"""Shared fixtures of the reliability suite: one simulated archive and its masters (read only).

Simulating and building masters once per session keeps the bad-input and fault tests fast;
every test corrupts copies under its own directory and never writes into these.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliability_archive import Archive, simulate_archive

from astroflow.reduce.stage import main as reduce_main


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Archive:
    """The shrunken simulated survey (one field, g and r)."""
    return simulate_archive(tmp_path_factory.mktemp("reliability_archive"))


@pytest.fixture(scope="session")
def masters(archive, tmp_path_factory) -> Path:
    """Master calibrations of the whole archive, made by `astroflow reduce calib`."""
    out = tmp_path_factory.mktemp("reliability_masters")
    argv = ["calib", "--config-json", json.dumps(archive.cfg), "--frames", *archive.calib]
    assert reduce_main([*argv, "--out", str(out)]) == 0
    return out
