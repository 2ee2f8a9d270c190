"""Two runs of the tiny pipeline with the same seed give identical metrics.json (CPU).

One of the two is the session's shared `tiny_run`; the other runs the same Snakefile and
config in a fresh directory, so everything from the simulated pixels to the bootstrap
intervals is recomputed.
"""

from __future__ import annotations

import json

import pytest
from pipeline_run import TINY, snakemake

METRICS = "results/evaluate/kim_brunner/metrics.json"


@pytest.mark.slow
def test_same_seed_gives_byte_identical_metrics(tiny_run, tmp_path):
    snakemake(tmp_path, "-c2", "--configfile", str(TINY))
    first = (tiny_run / METRICS).read_bytes()
    second = (tmp_path / METRICS).read_bytes()
    assert first == second, _differences(json.loads(first), json.loads(second))
    first_index = (tiny_run / "results/reduce/index.json").read_bytes()
    assert (tmp_path / "results/reduce/index.json").read_bytes() == first_index


def _differences(a, b, path: str = "") -> list[str]:
    """Dotted keys whose values differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
