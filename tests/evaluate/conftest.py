"""Fixtures of the evaluate tests (the data builders live in evaluate_data.py)."""

import os

import pytest
from evaluate_data import TinyDataset, make_tiny_dataset


@pytest.fixture(autouse=True)
def _fresh_mlflow_uri():
    """``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, which
    ``astroflow.tracking`` treats as a user override: without this, a test's runs would land in
    the store of whichever test ran first in the process."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture
def tiny_dataset(tmp_path) -> TinyDataset:
    """Reduce and train outputs of two small fields, written to ``tmp_path``."""
    return make_tiny_dataset(tmp_path)


@pytest.fixture(scope="session")
def raw_field(tmp_path_factory):
    """One simulated raw exposure with masters and its reduced object table (read only)."""
    from sextractor_data import build_raw_field

    return build_raw_field(tmp_path_factory.mktemp("sextractor_field"))
