"""train.exclude_flags: flagged objects are left out of every split, and the count logged."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from astroflow.reduce.flags import FLAG_BITS
from astroflow.split import assign_splits
from astroflow.train.data import CutoutDataModule, read_index, select_rows


def _flagged_index(reduce_index):
    """The fixture dataset with every 4th object at the edge and every 5th with a neighbour."""
    index = read_index(reduce_index)
    k = np.arange(len(index.objects))
    flags = np.where(k % 4 == 0, FLAG_BITS["edge"], 0) | np.where(
        k % 5 == 0, FLAG_BITS["neighbour"], 0
    )
    return dataclasses.replace(index, objects=index.objects.assign(flags=flags.astype(np.int32)))


def _selected_ids(index, rows):
    """object_id of every selected row."""
    field_of = {store: field for field, store in index.stores.items()}
    object_id = index.objects.set_index(["field", "row"])["object_id"]
    return {object_id[(field_of[fr.store], r)] for fr in rows for r in fr.rows.tolist()}


def test_excluded_flags_leave_the_split_and_are_logged(reduce_index, train_cfg, caplog):
    index = _flagged_index(reduce_index)
    split = assign_splits(index.objects, train_cfg["train"]["split"], seed=train_cfg["seed"])
    every = _selected_ids(index, select_rows(index, split, "train"))
    with caplog.at_level(logging.INFO, logger="astroflow.train.data"):
        kept = _selected_ids(index, select_rows(index, split, "train", exclude_flags=["edge"]))
    flags = index.objects.set_index("object_id")["flags"]
    edge = {i for i in every if flags[i] & FLAG_BITS["edge"]}
    assert edge and kept == every - edge
    assert any(flags[i] & FLAG_BITS["neighbour"] for i in kept)  # not excluded: kept
    assert f"{len(edge)} of {len(every)} objects left out by train.exclude_flags" in caplog.text


def test_datamodule_takes_exclude_flags_from_the_config(reduce_index, train_cfg):
    index = _flagged_index(reduce_index)
    split = assign_splits(index.objects, train_cfg["train"]["split"], seed=train_cfg["seed"])
    cfg = {**train_cfg, "train": {**train_cfg["train"], "exclude_flags": ["edge", "neighbour"]}}
    dm = CutoutDataModule.from_config(cfg, index, split)
    flags = index.objects.set_index("object_id")["flags"]
    for name in ("train", "val", "test"):
        ids = _selected_ids(index, dm.rows[name])
        assert ids and not any(flags[i] for i in ids)
    plain = CutoutDataModule.from_config(
        {**cfg, "train": {**cfg["train"], "exclude_flags": []}}, index, split
    )
    assert plain.n_labelled("train") > dm.n_labelled("train")
