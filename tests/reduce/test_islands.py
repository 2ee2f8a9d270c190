"""Sparse islands equal scipy's 8-connected labelling of the thresholded image."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from astroflow.reduce.islands import find_islands


def test_islands_match_ndimage_label():
    rng = np.random.default_rng(2)
    image = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (300, 200)), 2.0) * 10
    masked = np.zeros(image.shape, bool)
    masked[50:60, :] = True
    threshold = 1.5
    found = find_islands(image, threshold, masked, min_area=5)

    labels, n = ndimage.label((image > threshold) & ~masked, structure=np.ones((3, 3)))
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones(image.shape), labels, index)
    big = index[sizes >= 5]
    assert len(found) == big.size > 10
    weights = np.where(labels > 0, image, 0.0)
    centres = np.array(ndimage.center_of_mass(weights, labels, big))  # (y, x)
    peaks = ndimage.maximum(image, labels, big)
    order = np.lexsort((found.x, found.y))
    ref = np.lexsort((centres[:, 1], centres[:, 0]))
    np.testing.assert_allclose(found.y[order], centres[ref, 0], atol=1e-9)
    np.testing.assert_allclose(found.x[order], centres[ref, 1], atol=1e-9)
    np.testing.assert_allclose(found.peak[order], np.asarray(peaks)[ref])
    np.testing.assert_array_equal(found.npix[order], sizes[sizes >= 5][ref].astype(int))


def test_diagonal_pixels_join_and_rows_do_not_wrap():
    image = np.zeros((6, 6))
    image[0, 1] = image[1, 2] = image[2, 3] = 5.0  # a diagonal chain: one island
    image[3, 5] = image[4, 0] = 5.0  # last column and the next row's first: two islands
    found = find_islands(image, 1.0, np.zeros(image.shape, bool), min_area=1)
    assert sorted(found.npix.tolist()) == [1, 1, 3]
    chain = np.flatnonzero(found.npix == 3)[0]
    assert (found.x[chain], found.y[chain]) == (2.0, 1.0)
    assert found.a[chain] > 1.0  # elongated along the diagonal
