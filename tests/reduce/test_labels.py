"""Label matching against a catalog much larger than the field (a survey-wide labels file)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from astroflow.reduce.labels import _nearest, _rows_near, match_catalog

RADIUS_ARCSEC = 1.0


def _catalog(rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray) -> Table:
    n = ra.size
    return Table(
        {
            "ra": ra % 360.0,
            "dec": dec,
            "class": rng.choice(["star", "galaxy", "qso"], n),
            "sersic_n": rng.uniform(0.5, 6.0, n),
            "ellipticity": rng.uniform(0.0, 0.8, n),
        }
    )


def _match_everything(ra, dec, labels):
    """What matching gave before the catalog was cut: every row in the sky tree."""
    index, close = _nearest(ra, dec, labels, RADIUS_ARCSEC)
    label = np.full(ra.size, -1, np.int8)
    codes = np.array([{"star": 0, "galaxy": 1}.get(c, -1) for c in labels["class"]], np.int8)
    label[close] = codes[index[close]]
    sersic = np.full(ra.size, np.nan)
    sersic[close] = np.asarray(labels["sersic_n"])[index[close]]
    return label, sersic


@pytest.mark.parametrize(
    ("ra0", "dec0"),
    [(150.0, 2.0), (0.0, -30.0), (359.99, 10.0), (45.0, 89.9)],
    ids=["plain", "ra-zero", "ra-wrap", "pole"],
)
def test_cut_catalog_matches_like_the_whole_one(ra0, dec0):
    rng = np.random.default_rng(7)
    # detections over ~0.1 deg; a catalog over 40 deg around them, a third of its rows placed
    # within 0-2 radii of a detection (some inside the radius, some just outside)
    n_det = 300
    dec = np.clip(dec0 + rng.uniform(-0.05, 0.05, n_det), -90, 90)
    ra = ra0 + rng.uniform(-0.05, 0.05, n_det) / np.cos(np.radians(dec))
    near = rng.integers(0, n_det, 4000)
    offset = rng.uniform(0, 2 * RADIUS_ARCSEC / 3600, near.size)
    angle = rng.uniform(0, 2 * np.pi, near.size)
    cat_dec = np.clip(dec[near] + offset * np.sin(angle), -90, 90)
    cat_ra = ra[near] + offset * np.cos(angle) / np.cos(np.radians(cat_dec))
    far_dec = rng.uniform(max(dec0 - 20, -90), min(dec0 + 20, 90), 8000)
    far_ra = ra0 + rng.uniform(-20, 20, far_dec.size)
    labels = _catalog(rng, np.concatenate([cat_ra, far_ra]), np.concatenate([cat_dec, far_dec]))

    rows = _rows_near(ra % 360.0, dec, labels, RADIUS_ARCSEC)
    assert rows.size < len(labels) / 2  # the cut drops most of the far rows
    got = match_catalog(ra % 360.0, dec, labels, RADIUS_ARCSEC)
    label, sersic = _match_everything(ra % 360.0, dec, labels)
    assert (label >= 0).sum() > n_det / 2  # plenty of matches to compare
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_array_equal(got["label_sersic_n"], sersic)


def test_no_rows_near_leaves_every_detection_unlabelled():
    labels = _catalog(np.random.default_rng(1), np.array([10.0, 11.0]), np.array([0.0, 0.0]))
    got = match_catalog(np.array([200.0]), np.array([-45.0]), labels, RADIUS_ARCSEC)
    assert got["label"].tolist() == [-1]
    assert np.isnan(got["label_ellipticity"]).all()
