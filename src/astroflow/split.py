"""Sky-region train/val/test split.

Neighbouring objects share sky background, blends and PSF, so a random per-object split leaks
information from the training set into the held-out sets. Instead each field is cut into square
cells of ``train.split.cell_arcsec`` on a tangent plane near the field centre; whole cells go to
train, val or test by a seeded hash of ``(seed, field, cell)``, and objects within
``train.split.buffer_arcsec`` of a cell edge become ``buffer`` and are never used. A final
all-sky pass turns any train object that still lies within the buffer distance of a val/test
object (possible only where two fields overlap) into ``buffer`` too.

The split depends only on positions, the field name and the seed, not on labels or on the order
of the rows, so evaluation can reuse ``split.parquet`` and a rerun gives the same split. The
grid of a field is anchored at its mean position rounded to whole arcminutes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from astroflow.sky import unit_vectors

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "buffer")
ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0


def field_centre(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[float, float]:
    """Tangent point of a field: the normalised mean unit vector (safe across RA = 0)."""
    mean = unit_vectors(ra_deg, dec_deg).mean(axis=0)
    mean /= np.linalg.norm(mean)
    ra0 = float(np.degrees(np.arctan2(mean[1], mean[0])) % 360.0)
    dec0 = float(np.degrees(np.arcsin(np.clip(mean[2], -1.0, 1.0))))
    return ra0, dec0


def grid_anchor(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[float, float]:
    """Tangent point of a field's cell grid: its centre rounded to whole arcminutes.

    Rounding keeps the grid (and so every cell's split) in place when a rerun adds or drops a
    few objects and the mean position moves by a fraction of an arcsecond.
    """
    ra0, dec0 = field_centre(ra_deg, dec_deg)
    return float(np.round(ra0 * 60.0) / 60.0 % 360.0), float(np.round(dec0 * 60.0) / 60.0)


def gnomonic_arcsec(
    ra_deg: np.ndarray, dec_deg: np.ndarray, ra0_deg: float, dec0_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (TAN) projection about ``(ra0, dec0)``: standard coordinates xi, eta [arcsec]."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    if np.any(cos_c <= 0):
        raise ValueError(
            "gnomonic projection: an object is 90 degrees or more from its field centre"
        )
    xi = np.cos(dec) * np.sin(ra - ra0) / cos_c
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cos_c
    return xi * ARCSEC_PER_RAD, eta * ARCSEC_PER_RAD


def cell_uniform(seed: int, field: str, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per cell from sha256 of ``seed:field:ix:iy``.

    A hash (rather than a random generator drawn in order) makes a cell's assignment
    independent of which other cells hold objects, so adding objects does not reshuffle cells
    (as long as the grid anchor, rounded to arcminutes, stays put).
    """
    out = np.empty(len(ix), dtype=np.float64)
    cache: dict[tuple[int, int], float] = {}
    for k, key in enumerate(zip(ix.tolist(), iy.tolist(), strict=True)):
        if key not in cache:
            digest = hashlib.sha256(f"{seed}:{field}:{key[0]}:{key[1]}".encode()).digest()
            cache[key] = int.from_bytes(digest[:8], "big") / 2.0**64
        out[k] = cache[key]
    return out


def assign_splits(objects: pd.DataFrame, split_cfg: Mapping, seed: int) -> pd.DataFrame:
    """Assign every object to ``train``, ``val``, ``test`` or ``buffer`` by sky region.

    Parameters
    ----------
    objects
        Table with ``object_id``, ``field``, ``ra``, ``dec`` [deg] (labelled or not).
    split_cfg
        ``train.split`` config: ``cell_arcsec``, ``buffer_arcsec``, ``val_fraction``,
        ``test_fraction``.
    seed
        Master seed; the same seed and positions always give the same split.

    Returns
    -------
    pandas.DataFrame
        ``object_id``, ``field``, ``split`` in the input row order, plus the cell indices
        ``cell_ix``, ``cell_iy`` (useful for checks and plots).
    """
    missing = {"object_id", "field", "ra", "dec"} - set(objects.columns)
    if missing:
        raise ValueError(f"object table: missing column(s) {sorted(missing)} needed for the split")
    cell = float(split_cfg["cell_arcsec"])
    buffer = float(split_cfg["buffer_arcsec"])
    val_frac, test_frac = float(split_cfg["val_fraction"]), float(split_cfg["test_fraction"])
    if 2 * buffer >= cell:
        raise ValueError(
            f"train.split: buffer_arcsec {buffer} leaves nothing of a {cell} arcsec cell"
        )
    n = len(objects)
    split = np.full(n, "buffer", dtype=object)
    cell_ix = np.zeros(n, dtype=np.int64)
    cell_iy = np.zeros(n, dtype=np.int64)
    fields = objects["field"].to_numpy()
    for field in pd.unique(fields):
        sel = np.flatnonzero(fields == field)
        ra = objects["ra"].to_numpy(dtype=np.float64)[sel]
        dec = objects["dec"].to_numpy(dtype=np.float64)[sel]
        xi, eta = gnomonic_arcsec(ra, dec, *grid_anchor(ra, dec))
        ix, iy = np.floor(xi / cell).astype(np.int64), np.floor(eta / cell).astype(np.int64)
        dx, dy = xi - ix * cell, eta - iy * cell
        edge_dist = np.minimum.reduce([dx, cell - dx, dy, cell - dy])
        u = cell_uniform(seed, str(field), ix, iy)
        field_split = np.where(
            u < test_frac, "test", np.where(u < test_frac + val_frac, "val", "train")
        )
        field_split = np.where(edge_dist < buffer, "buffer", field_split).astype(object)
        split[sel], cell_ix[sel], cell_iy[sel] = field_split, ix, iy
    n_moved = _buffer_cross_field_neighbours(objects, split, buffer)
    if n_moved:
        log.info(
            "split: %d train objects near val/test objects of another field -> buffer", n_moved
        )
    out = pd.DataFrame(
        {
            "object_id": objects["object_id"].to_numpy(),
            "field": fields,
            "split": pd.Categorical(split, categories=list(SPLITS)),
            "cell_ix": cell_ix,
            "cell_iy": cell_iy,
        }
    )
    counts = out["split"].value_counts().reindex(list(SPLITS), fill_value=0)
    log.info("split: %s", ", ".join(f"{k}={v}" for k, v in counts.items()))
    return out


def _buffer_cross_field_neighbours(objects: pd.DataFrame, split: np.ndarray, buffer: float) -> int:
    """Move train objects within ``buffer`` arcsec of any val/test object to ``buffer``.

    Within one field the cell buffer already guarantees the separation; this catches
    overlapping fields, whose tangent planes and cells differ. Returns how many were moved.
    """
    if buffer <= 0:
        return 0
    held_out = np.flatnonzero(np.isin(split, ["val", "test"]))
    train = np.flatnonzero(split == "train")
    if held_out.size == 0 or train.size == 0:
        return 0
    xyz = unit_vectors(objects["ra"].to_numpy(float), objects["dec"].to_numpy(float))
    chord = 2.0 * np.sin(buffer / ARCSEC_PER_RAD / 2.0)
    tree = cKDTree(xyz[held_out])
    dist, _ = tree.query(xyz[train], k=1, distance_upper_bound=chord)
    close = train[np.isfinite(dist)]
    split[close] = "buffer"
    return int(close.size)


def split_counts(split_table: pd.DataFrame, labels: pd.Series | None = None) -> dict[str, int]:
    """Objects per split (``n_<split>``), and labelled ones (``n_<split>_labelled``) if given."""
    counts = {f"n_{s}": int((split_table["split"] == s).sum()) for s in SPLITS}
    if labels is not None:
        labelled = np.asarray(labels) >= 0
        for s in SPLITS:
            counts[f"n_{s}_labelled"] = int(
                ((split_table["split"] == s).to_numpy() & labelled).sum()
            )
    return counts
