"""Sources as 8-connected islands of pixels above a threshold, found from those pixels only.

The PSF of every exposure is measured on its bright stars; finding them with ``sep.extract``
scans and segments the whole detector while holding the GIL (about 50 ms per 4-Mpix exposure,
which other threads wait for). Above 5 sigma only ~0.5 % of a survey exposure's pixels remain,
so this works on their coordinates: one comparison over the image, then graph connectivity
(``scipy.sparse.csgraph``) and per-island sums of the few thousand pixels. Islands are not
deblended (two touching sources are one island), which the PSF-star selection tolerates: a
blend is larger than the stellar locus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: Forward neighbour offsets (dy, dx): with their mirror images, all 8 neighbours.
_FORWARD = ((0, 1), (1, -1), (1, 0), (1, 1))


@dataclass
class Islands:
    """Per island: flux-weighted centroid (0-based), peak value, semi-major axis of the
    flux-weighted second moments [pixels] and number of pixels."""

    x: np.ndarray
    y: np.ndarray
    peak: np.ndarray
    a: np.ndarray
    npix: np.ndarray

    def __len__(self) -> int:
        return int(self.x.size)


def find_islands(
    image: np.ndarray, threshold: float, masked: np.ndarray, min_area: int = 5
) -> Islands:
    """Islands of unmasked pixels above ``threshold`` with at least ``min_area`` pixels."""
    ny, nx = image.shape
    ys, xs = np.nonzero(image > threshold)
    keep = ~masked[ys, xs]
    ys, xs = ys[keep], xs[keep]
    n = ys.size
    if n == 0:
        empty = np.zeros(0)
        return Islands(empty, empty, empty, empty, np.zeros(0, np.int64))
    flat = ys.astype(np.int64) * nx + xs  # sorted: np.nonzero walks the image in C order
    rows, cols = [], []
    for dy, dx in _FORWARD:
        neighbour = flat + dy * nx + dx
        at = np.searchsorted(flat, neighbour)
        at = np.minimum(at, n - 1)
        x_ok = (xs + dx >= 0) & (xs + dx < nx)
        link = x_ok & (flat[at] == neighbour)
        rows.append(np.flatnonzero(link))
        cols.append(at[link])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n, n))
    count, label = connected_components(graph, directed=False)
    npix = np.bincount(label, minlength=count)
    values = image[ys, xs].astype(np.float64)
    weight = np.maximum(values, 0.0)
    w = np.bincount(label, weight, minlength=count)
    safe = np.where(w > 0, w, 1.0)
    x = np.bincount(label, weight * xs, minlength=count) / safe
    y = np.bincount(label, weight * ys, minlength=count) / safe
    dx, dy = xs - x[label], ys - y[label]
    xx = np.bincount(label, weight * dx * dx, minlength=count) / safe
    yy = np.bincount(label, weight * dy * dy, minlength=count) / safe
    xy = np.bincount(label, weight * dx * dy, minlength=count) / safe
    a = np.sqrt(np.maximum(0.5 * (xx + yy) + np.sqrt(0.25 * (xx - yy) ** 2 + xy**2), 0.0))
    peak = np.full(count, -np.inf)
    np.maximum.at(peak, label, values)
    big = npix >= min_area
    return Islands(x[big], y[big], peak[big], a[big], npix[big])
