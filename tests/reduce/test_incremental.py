"""Incremental reduction and bounded memory.

Adding an exposure to a field recalibrates only that exposure (the others come from the
per-exposure cache), and the result is the same dataset as a reduction from scratch. Memory
stays bounded by one calibrated exposure per worker thread plus the per-object accumulators,
not by the number of exposures.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zarr
from reduce_archive import build_archive, make_cfg

from astroflow.reduce.field import reduce_field
from astroflow.reduce.masters import build_masters


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """An archive with 3 dithered epochs per band (6 exposures) and its masters."""
    root = tmp_path_factory.mktemp("incremental")
    archive = build_archive(root / "raw", n_epochs=3, seed=5)
    cfg = make_cfg(root)
    build_masters(archive.calib_paths, cfg, root / "calib")
    return archive, cfg, root / "calib"


def _reduce(archive, cfg, calib: Path, out: Path, paths: list[str], cache: Path | None, threads=2):
    return reduce_field(
        cfg,
        "F00",
        paths,
        str(calib),
        archive.labels_path,
        str(out / "F00.zarr"),
        str(out / "F00.objects.parquet"),
        str(out / "F00.quarantine.json"),
        threads=threads,
        cache_dir=str(cache) if cache is not None else None,
    )


def test_added_exposure_is_the_only_one_calibrated(three_epochs, tmp_path):
    archive, cfg, calib = three_epochs
    paths = archive.science_paths
    cache = tmp_path / "exposures"
    first = _reduce(archive, cfg, calib, tmp_path / "a", paths[:-1], cache)
    assert (first.n_calibrated, first.n_from_cache) == (5, 0)
    assert len(list(cache.glob("*.npys"))) == 0  # calibrated exposures: keep_calibrated only
    assert len(list(cache.glob("*.catalog"))) == 1
    assert len(list(cache.glob("*.products"))) == 5

    added = _reduce(archive, cfg, calib, tmp_path / "a", paths, cache)
    assert (added.n_calibrated, added.n_from_cache) == (1, 5)
    assert added.n_exposures == 6
    # the same catalog, so the five earlier products were reused and one was added
    assert len(list(cache.glob("*.catalog"))) == 1
    assert len(list(cache.glob("*.products"))) == 6

    # kept products are those a fresh reduction makes: same dataset digest and bytes as
    # reducing all six from scratch without the cache
    fresh_cfg = make_cfg(tmp_path, exposure_cache=False)
    fresh = _reduce(archive, fresh_cfg, calib, tmp_path / "b", paths, None)
    assert (fresh.n_calibrated, fresh.n_from_cache) == (6, 0)
    assert added.digest == fresh.digest
    a = zarr.open_group(str(tmp_path / "a" / "F00.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "b" / "F00.zarr"), mode="r")
    np.testing.assert_array_equal(a["variance"][...], b["variance"][...])

    # the unchanged archive again: nothing calibrated, same digest
    again = _reduce(archive, cfg, calib, tmp_path / "a", paths, cache)
    assert (again.n_calibrated, again.n_from_cache) == (0, 6)
    assert again.digest == fresh.digest


def test_products_follow_the_detection_and_cutout_settings(three_epochs, tmp_path):
    """Another cutout size or detection threshold makes new products (and catalog) from the
    kept calibrated exposures (keep_calibrated), equal to a reduction without any cache."""
    archive, _, calib = three_epochs
    cfg = make_cfg(tmp_path, keep_calibrated=True)
    cache = tmp_path / "exposures"
    paths = [archive.science_paths[i] for i in (0, 3, 4)]  # g e0, r e0 (detection), r e1
    _reduce(archive, cfg, calib, tmp_path / "a", paths, cache)
    assert len(list(cache.glob("*.npys"))) == 3
    for overrides in ({"cutout_size": 30}, {"detect_sigma": 5.0}):
        changed = make_cfg(tmp_path, keep_calibrated=True, **overrides)
        kept = _reduce(archive, changed, calib, tmp_path / "b", paths, cache)
        assert (kept.n_calibrated, kept.n_from_cache) == (0, 3)
        fresh = _reduce(
            archive,
            make_cfg(tmp_path, exposure_cache=False, **overrides),
            calib,
            tmp_path / "c",
            paths,
            None,
        )
        assert kept.digest == fresh.digest
    assert len(list(cache.glob("*.catalog"))) == 2  # the cutout size keeps the catalog
    assert len(list(cache.glob("*.products"))) == 9


def test_cache_key_follows_the_calibration_config(three_epochs, tmp_path):
    """A different overscan model must not reuse exposures calibrated with the other one."""
    archive, cfg, calib = three_epochs
    cache = tmp_path / "exposures"
    paths = archive.science_paths[:2]
    _reduce(archive, cfg, calib, tmp_path / "a", paths, cache)
    fit_cfg = make_cfg(tmp_path, overscan_method="fit")
    result = _reduce(archive, fit_cfg, calib, tmp_path / "b", paths, cache)
    assert (result.n_calibrated, result.n_from_cache) == (2, 0)


def _peak_bytes(archive, cfg, calib, out, paths) -> int:
    tracemalloc.start()
    try:
        _reduce(archive, cfg, calib, out, paths, None, threads=1)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_number_of_exposures(three_epochs, tmp_path):
    archive, _, calib = three_epochs
    cfg = make_cfg(tmp_path, exposure_cache=False)
    paths = archive.science_paths  # g e0..e2, r e0..e2
    # both runs keep both bands' sums open while g is folded (a band is combined and its sums
    # freed after its last exposure: r e0, detected on first, is not r's last in either)
    three = [paths[0], paths[3], paths[4]]
    # untraced first, so neither peak includes what a process loads once (schema, masters)
    _reduce(archive, cfg, calib, tmp_path / "warm", three, None, threads=1)
    peak_three = _peak_bytes(archive, cfg, calib, tmp_path / "three", three)
    peak_six = _peak_bytes(archive, cfg, calib, tmp_path / "six", paths)
    # one calibrated exposure is ~9 bytes/pixel x 32768 pixels ~ 0.3 MB; six exposures held at
    # once would add ~0.9 MB over three. Less than two's worth is allowed: the background
    # threads' buffers (labels table, the masters check's 256 KiB reads) come and go.
    exposure_bytes = 9 * 32768
    assert peak_six - peak_three < 2 * exposure_bytes, (peak_three, peak_six)
