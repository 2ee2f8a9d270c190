"""Dask twins give the numpy twins' numbers on unevenly chunked arrays."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from astroflow.reduce.arrays import (
    njy_per_e_per_s,
    overscan_level,
    sigma_clipped_mean,
    sigma_clipped_mean_dask,
    subtract_overscan,
    subtract_overscan_dask,
    to_njy,
    to_njy_dask,
)


def test_overscan_twins_agree_on_uneven_chunks():
    rng = np.random.default_rng(0)
    data = rng.normal(1000, 5, (37, 23)).astype(np.float32)
    over = rng.normal(1000, 5, (37, 6)).astype(np.float32)
    expected = subtract_overscan(data, over)
    got = subtract_overscan_dask(
        da.from_array(data, chunks=((5, 20, 12), (7, 16))),
        da.from_array(over, chunks=((11, 26), (2, 4))),
    ).compute()
    np.testing.assert_array_equal(got, expected)


def test_sigma_clipped_mean_twins_agree_and_reject_outliers():
    rng = np.random.default_rng(1)
    stack = rng.normal(10, 1, (7, 29, 31))
    stack[3, 5, 5] = 1e4  # a cosmic ray in one frame
    expected = sigma_clipped_mean(stack)
    got = sigma_clipped_mean_dask(da.from_array(stack, chunks=((3, 4), (10, 19), (13, 5, 13))))
    np.testing.assert_array_equal(got.compute(), expected)
    assert abs(expected[5, 5] - 10) < 2
    assert expected.dtype == np.float32


def test_njy_twins_and_zero_point():
    assert njy_per_e_per_s(31.4) == pytest.approx(1.0)
    assert njy_per_e_per_s(26.4) == pytest.approx(100.0)
    img = np.random.default_rng(2).normal(0, 1, (13, 9)).astype(np.float32)
    np.testing.assert_array_equal(
        to_njy_dask(da.from_array(img, chunks=(4, 5)), 26.2).compute(), to_njy(img, 26.2)
    )


def test_overscan_fit_is_smooth_and_unbiased():
    rng = np.random.default_rng(3)
    rows = 1000 + 0.05 * np.arange(200)
    over = rows[:, None] + rng.normal(0, 4, (200, 16))
    fitted = overscan_level(over, "fit")
    assert np.std(fitted - rows) < np.std(overscan_level(over, "rows") - rows) / 2
    with pytest.raises(ValueError, match="unknown overscan method"):
        overscan_level(over, "spline")
