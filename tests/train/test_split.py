"""Sky-region split: whole cells per split, an edge buffer, no train object near a held-out one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from astroflow.split import (
    assign_splits,
    gnomonic_arcsec,
    grid_anchor,
    unit_vectors,
)
from astroflow.train.data import read_index

SPLIT_CFG = {"cell_arcsec": 30.0, "buffer_arcsec": 2.0, "val_fraction": 0.15, "test_fraction": 0.25}


def _random_objects(n: int, centres: dict[str, tuple[float, float]], side_arcsec: float, seed: int):
    rng = np.random.default_rng(seed)
    rows = []
    for field, (ra0, dec0) in centres.items():
        half = side_arcsec / 2 / 3600
        dec = dec0 + rng.uniform(-half, half, n)
        ra = ra0 + rng.uniform(-half, half, n) / np.cos(np.radians(dec0))
        rows.append(
            pd.DataFrame(
                {
                    "object_id": [f"{field}-{k:06d}" for k in range(n)],
                    "field": field,
                    "ra": ra,
                    "dec": dec,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _min_sep_arcsec(a: pd.DataFrame, b: pd.DataFrame) -> float:
    ua, ub = (
        unit_vectors(a["ra"].to_numpy(), a["dec"].to_numpy()),
        unit_vectors(b["ra"].to_numpy(), b["dec"].to_numpy()),
    )
    cos = np.clip(ua @ ub.T, -1, 1)
    return float(np.degrees(np.arccos(cos.max())) * 3600)


@pytest.mark.parametrize(
    "centres",
    [
        {"F00": (150.0, 2.0), "F01": (150.1, 2.0)},  # separate fields
        {"A": (10.0, -30.0), "B": (10.01, -30.005)},  # overlapping fields, different cell grids
        {"P": (359.99, 0.0)},  # across RA = 0
    ],
)
def test_no_train_object_within_buffer_of_held_out(centres):
    objects = _random_objects(1500, centres, side_arcsec=150.0, seed=1)
    split = assign_splits(objects, SPLIT_CFG, seed=5)
    merged = objects.assign(split=split["split"].astype(str).to_numpy())
    train = merged[merged["split"] == "train"]
    held_out = merged[merged["split"].isin(["val", "test"])]
    assert len(train) and len(held_out)
    assert _min_sep_arcsec(train, held_out) >= SPLIT_CFG["buffer_arcsec"]
    assert set(merged["split"]) == {"train", "val", "test", "buffer"}


def test_cells_are_whole_and_edges_buffered():
    objects = _random_objects(3000, {"F00": (150.0, 2.0)}, side_arcsec=240.0, seed=2)
    split = assign_splits(objects, SPLIT_CFG, seed=5)
    kept = split[split["split"] != "buffer"]
    per_cell = kept.groupby(["cell_ix", "cell_iy"])["split"].nunique()
    assert (per_cell == 1).all(), "a cell holds objects of two splits"
    # recompute the distance to the cell edge independently of the split code's arithmetic
    ra0, dec0 = grid_anchor(objects["ra"].to_numpy(), objects["dec"].to_numpy())
    xi, eta = gnomonic_arcsec(objects["ra"].to_numpy(), objects["dec"].to_numpy(), ra0, dec0)
    cell = SPLIT_CFG["cell_arcsec"]
    edge = np.minimum(
        np.abs(xi - cell * np.round(xi / cell)), np.abs(eta - cell * np.round(eta / cell))
    )
    assert (split["split"].to_numpy()[edge < 1.9] == "buffer").all()
    assert (split["split"].to_numpy()[edge > 2.1] != "buffer").all()
    # buffer area of a 30" cell with a 2" edge: 1 - (26/30)^2 = 25 %
    assert 0.20 < (split["split"] == "buffer").mean() < 0.30


def test_split_is_deterministic_and_order_independent():
    objects = _random_objects(800, {"F00": (150.0, 2.0), "F01": (150.1, 2.0)}, 150.0, seed=3)
    a = assign_splits(objects, SPLIT_CFG, seed=11)
    shuffled = objects.sample(frac=1.0, random_state=0)
    b = assign_splits(shuffled, SPLIT_CFG, seed=11).set_index("object_id").loc[a["object_id"]]
    np.testing.assert_array_equal(a["split"].astype(str), b["split"].astype(str))
    other = assign_splits(objects, SPLIT_CFG, seed=12)
    assert (a["split"].astype(str) != other["split"].astype(str)).any()


def test_cell_fractions_follow_config():
    objects = _random_objects(20000, {"F00": (150.0, 2.0)}, side_arcsec=1200.0, seed=4)
    split = assign_splits(objects, {**SPLIT_CFG, "buffer_arcsec": 0.0}, seed=1)
    cells = split.groupby(["cell_ix", "cell_iy"])["split"].first().astype(str)
    frac = cells.value_counts(normalize=True)
    assert len(cells) > 1500
    assert frac["test"] == pytest.approx(0.25, abs=0.04)
    assert frac["val"] == pytest.approx(0.15, abs=0.04)


def test_buffer_wider_than_cell_is_rejected():
    objects = _random_objects(10, {"F00": (150.0, 2.0)}, 60.0, seed=0)
    with pytest.raises(ValueError, match="buffer_arcsec"):
        assign_splits(objects, {**SPLIT_CFG, "buffer_arcsec": 15.0}, seed=0)


def test_fixture_dataset_split_covers_every_object(reduce_index):
    index = read_index(reduce_index)
    split = assign_splits(index.objects, SPLIT_CFG, seed=3)
    assert list(split["object_id"]) == list(index.objects["object_id"])
    assert split["split"].notna().all()
    labelled = split[index.objects["label"].to_numpy() >= 0]
    assert {"train", "val", "test"} <= set(labelled["split"].astype(str))
