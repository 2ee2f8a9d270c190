"""Shared fixtures of the reduce tests: one small raw archive and its masters (read only).

The archive builder lives in ``reduce_archive.py`` (a unique module name, so test files can
import it even when other test directories have their own ``conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reduce_archive import Truth, build_archive, make_cfg


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Truth:
    """One shared archive (reading only): 1 epoch per band, plain FITS."""
    return build_archive(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="session")
def calib_dir(archive, tmp_path_factory) -> Path:
    """Masters built once from the shared archive."""
    from astroflow.reduce.masters import build_masters

    out = tmp_path_factory.mktemp("calib")
    build_masters(archive.calib_paths, make_cfg(out), out)
    return out
