"""Pixel arithmetic with numpy and Dask twins.

Each ``*_dask`` function gives the same numbers as its numpy twin on any chunking (it
rechunks only the axis the operation reduces over), so the same code scales from a test
array to a survey-sized stack with bounded memory. Tests compare the twins on uneven chunks.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the twins take and return Dask arrays but need no import of dask.array,
    # which takes ~0.4 s alone and which a field job (numpy twins only) never uses
    import dask.array as da

#: AB zero point of 1 nJy: 31.4 mag.
NJY_AB_MAG = 31.4


def overscan_level(
    overscan_adu: np.ndarray, method: str = "rows", poly_degree: int = 3
) -> np.ndarray:
    """Bias level per row from the overscan columns.

    Parameters
    ----------
    overscan_adu : ndarray (ny, n_over)
        Overscan pixels of one amplifier.
    method : {"rows", "fit"}
        ``rows``: median of each row (follows row-to-row bias jumps, noisier);
        ``fit``: a polynomial of ``poly_degree`` fitted to the row medians along y (a
        "fitted column": smooth, adds almost no noise).

    Returns
    -------
    ndarray (ny,)
        Bias level in ADU to subtract from each row of the data section.
    """
    rows = np.median(np.asarray(overscan_adu, dtype=np.float64), axis=1)
    if method == "rows":
        return rows
    if method == "fit":
        y = np.linspace(-1.0, 1.0, rows.size)
        coeffs = np.polynomial.legendre.legfit(y, rows, poly_degree)
        return np.polynomial.legendre.legval(y, coeffs)
    raise ValueError(f"unknown overscan method {method!r} (expected 'rows' or 'fit')")


def subtract_overscan(data_adu: np.ndarray, overscan_adu: np.ndarray) -> np.ndarray:
    """Data section minus the row-wise median of the overscan (numpy twin)."""
    level = overscan_level(overscan_adu, "rows")
    return (np.asarray(data_adu, dtype=np.float64) - level[:, None]).astype(np.float32)


def subtract_overscan_dask(data_adu: da.Array, overscan_adu: da.Array) -> da.Array:
    """Dask twin of :func:`subtract_overscan`: same numbers on any chunking.

    The overscan is rechunked to whole rows (the median runs along x) and its row chunks
    aligned with the data's, so each output block needs one overscan block.
    """
    over = overscan_adu.rechunk({0: data_adu.chunks[0], 1: -1})
    level = over.map_blocks(
        lambda block: np.median(block.astype(np.float64), axis=1, keepdims=True),
        chunks=(over.chunks[0], (1,)),
        dtype=np.float64,
    )
    return (data_adu.astype(np.float64) - level).astype(np.float32)


def sigma_clipped_mean(stack: np.ndarray, sigma: float = 3.0, iters: int = 5) -> np.ndarray:
    """Per-pixel mean of a frame stack after iterative sigma clipping (numpy twin).

    Clipping is about the per-pixel median with a robust spread (1.4826 x the median absolute
    deviation of the surviving values): with the few frames of a calibration set, a single
    cosmic ray inflates the plain standard deviation so much that it is never clipped (with n
    frames no value can lie more than (n-1)/sqrt(n) standard deviations out). Pixels with fewer
    than 3 surviving values are not clipped further (two values cannot say which one is bad).

    Parameters
    ----------
    stack : ndarray (n_frames, ny, nx)
    sigma : float
        Clip threshold in robust standard deviations.
    iters : int
        Maximum clipping iterations (stops early when nothing changes).

    Returns
    -------
    ndarray (ny, nx) float32
    """
    data = np.asarray(stack, dtype=np.float64)
    keep = np.isfinite(data)
    with warnings.catch_warnings():
        # pixels with no finite value give all-NaN slices; they stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(iters):
            masked = np.where(keep, data, np.nan)
            centre = np.nanmedian(masked, axis=0)
            spread = 1.4826 * np.nanmedian(np.abs(masked - centre), axis=0)
            can_clip = keep.sum(axis=0) >= 3
            new_keep = keep & ((np.abs(data - centre) <= sigma * spread) | ~can_clip)
            if np.array_equal(new_keep, keep):
                break
            keep = new_keep
        n_kept = keep.sum(axis=0)
        total = np.where(keep, data, 0.0).sum(axis=0)
        mean = np.where(n_kept > 0, total / np.maximum(n_kept, 1), np.nanmedian(data, axis=0))
    return mean.astype(np.float32)


def sigma_clipped_mean_dask(stack: da.Array, sigma: float = 3.0, iters: int = 5) -> da.Array:
    """Dask twin of :func:`sigma_clipped_mean`: frame axis made whole, pixels stay chunked."""
    whole = stack.rechunk({0: -1})
    return whole.map_blocks(sigma_clipped_mean, sigma, iters, drop_axis=0, dtype=np.float32)


def njy_per_e_per_s(zeropoint_mag: float) -> float:
    """nJy per (electron/second) for a band whose AB zero point (1 e-/s) is ``zeropoint_mag``."""
    return float(10.0 ** (-0.4 * (zeropoint_mag - NJY_AB_MAG)))


def to_njy(image_e_per_s: np.ndarray, zeropoint_mag: float) -> np.ndarray:
    """Flux in e-/s per pixel -> nJy per pixel (numpy twin)."""
    return (np.asarray(image_e_per_s, dtype=np.float64) * njy_per_e_per_s(zeropoint_mag)).astype(
        np.float32
    )


def to_njy_dask(image_e_per_s: da.Array, zeropoint_mag: float) -> da.Array:
    """Dask twin of :func:`to_njy`."""
    return (image_e_per_s.astype(np.float64) * njy_per_e_per_s(zeropoint_mag)).astype(np.float32)
