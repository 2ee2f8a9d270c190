"""Read what evaluate needs from reduce and train, and find each test object's true class.

Inputs (docs/data_contracts.md): ``index.json`` with ``objects.parquet`` next to it, the per-field
Zarr cutout stores it names, the train stage's ``split.parquet`` and ``run.json``, and optionally
the simulator's truth table (evaluation only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from astropy import units as u
from astropy.coordinates import SkyCoord, match_coordinates_sky
from astropy.table import Table

log = logging.getLogger(__name__)

CLASS_CODES = {"galaxy": 1, "star": 0}


def read_json(path: Path, what: str) -> dict:
    """A JSON file as a dict, with an error naming the file when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: {what} is not valid JSON: {exc}") from exc


def load_objects(index_path: Path) -> tuple[dict, pd.DataFrame]:
    """The dataset index and the object table (``objects.parquet`` next to ``index.json``)."""
    index_path = Path(index_path)
    index = read_json(index_path, "reduce index")
    for key in ("fields", "digest"):
        if key not in index:
            raise KeyError(f"{index_path}: reduce index lacks {key!r}")
    objects_path = index_path.with_name("objects.parquet")
    if not objects_path.is_file():
        raise FileNotFoundError(f"{objects_path}: object table not found next to {index_path}")
    objects = pd.read_parquet(objects_path)
    needed = {"object_id", "field", "row", "ra", "dec", "label"}
    missing = sorted(needed - set(objects.columns))
    if missing:
        raise KeyError(f"{objects_path}: object table lacks column(s) {missing}")
    return index, objects


def attach_split(objects: pd.DataFrame, split_path: Path) -> pd.DataFrame:
    """``objects`` with the train stage's ``split`` column (objects absent from it: NaN)."""
    split_path = Path(split_path)
    if not split_path.is_file():
        raise FileNotFoundError(f"{split_path}: split table of the train stage not found")
    split = pd.read_parquet(split_path, columns=["object_id", "split"])
    if split["object_id"].duplicated().any():
        raise ValueError(f"{split_path}: object_id values are not unique")
    return objects.merge(split, on="object_id", how="left", validate="one_to_one")


def truth_is_given(truth: str | Path | None) -> bool:
    """``--truth`` names a file (as opposed to '', 'none' or 'null')."""
    return truth is not None and str(truth).strip().lower() not in {"", "none", "null"}


def match_truth(
    objects: pd.DataFrame, truth_path: Path, radius_arcsec: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True class of each object from the nearest truth source within ``radius_arcsec``.

    Returns
    -------
    label : int8 array
        1 galaxy, 0 star, -1 unmatched.
    truth_id : object array
        ``id`` of the matched truth source as a string (None when unmatched).
    sep_arcsec : float array
        Distance to the nearest truth source [arcsec].
    """
    truth_path = Path(truth_path)
    if not truth_path.is_file():
        raise FileNotFoundError(f"{truth_path}: truth catalog not found")
    truth = Table.read(truth_path, format="ascii.ecsv")
    missing = [c for c in ("id", "ra", "dec", "class") if c not in truth.colnames]
    if missing:
        raise KeyError(f"{truth_path}: truth catalog lacks column(s) {missing}")
    classes = np.array([str(c).strip().lower() for c in truth["class"]])
    unknown = sorted(set(classes) - set(CLASS_CODES))
    if unknown:
        raise ValueError(f"{truth_path}: column 'class' has unknown value(s) {unknown}")
    n = len(objects)
    label = np.full(n, -1, dtype=np.int8)
    truth_id = np.full(n, None, dtype=object)
    sep_arcsec = np.full(n, np.inf)
    if n == 0 or len(truth) == 0:
        return label, truth_id, sep_arcsec
    obj_coords = SkyCoord(objects["ra"].to_numpy() * u.deg, objects["dec"].to_numpy() * u.deg)
    truth_coords = SkyCoord(np.asarray(truth["ra"], float) * u.deg,
                            np.asarray(truth["dec"], float) * u.deg)
    idx, sep, _ = match_coordinates_sky(obj_coords, truth_coords)
    sep_arcsec = sep.to_value(u.arcsec)
    ok = sep_arcsec <= radius_arcsec
    codes = np.array([CLASS_CODES[c] for c in classes], dtype=np.int8)
    label[ok] = codes[idx[ok]]
    ids = np.asarray(truth["id"]).astype(str).astype(object)  # str: ids may be ints or names
    truth_id[ok] = ids[idx[ok]]
    return label, truth_id, sep_arcsec


class CutoutReader:
    """Reads cutouts of given objects from the per-field Zarr stores named by the index.

    Store paths in ``index.json`` are relative to the index's folder (falling back to the
    working directory, where Snakemake runs).
    """

    def __init__(self, index: dict, index_path: Path):
        self.index = index
        self.index_dir = Path(index_path).parent
        self._arrays: dict[str, zarr.Array] = {}

    def _images(self, field: str) -> zarr.Array:
        if field not in self._arrays:
            if field not in self.index["fields"]:
                raise KeyError(f"{self.index_dir / 'index.json'}: no field {field!r} in the index")
            rel = Path(self.index["fields"][field]["store"])
            path = rel if rel.is_absolute() else self.index_dir / rel
            if not path.exists() and rel.exists():
                path = rel
            try:
                group = zarr.open_group(str(path), mode="r")
                self._arrays[field] = group["images"]
            except (FileNotFoundError, KeyError) as exc:
                raise FileNotFoundError(f"{path}: cannot open Zarr array 'images' ({exc})") from exc
        return self._arrays[field]

    def read(self, objects: pd.DataFrame) -> np.ndarray:
        """Cutouts ``(len(objects), bands, S, S)`` float32, in the order of ``objects``."""
        if objects.empty:
            return np.zeros((0, 0, 0, 0), dtype=np.float32)
        objects = objects.reset_index(drop=True)
        out: np.ndarray | None = None
        for field, grp in objects.groupby("field", sort=True):
            arr = self._images(str(field))
            rows = grp["row"].to_numpy(dtype=np.int64)
            if rows.min() < 0 or rows.max() >= arr.shape[0]:
                raise IndexError(f"{field}: rows outside 0..{arr.shape[0] - 1} of its 'images'")
            order = np.argsort(rows, kind="stable")
            uniq, inverse = np.unique(rows[order], return_inverse=True)
            block = np.asarray(arr.oindex[uniq])[inverse]
            if out is None:
                out = np.empty((len(objects), *arr.shape[1:]), dtype=np.float32)
            out[grp.index.to_numpy()[order]] = block
        return out

    def batches(self, objects: pd.DataFrame, batch_size: int) -> Iterator[np.ndarray]:
        """Cutouts of ``objects`` in consecutive batches (bounded memory), in table order."""
        for start in range(0, len(objects), batch_size):
            yield self.read(objects.iloc[start:start + batch_size])
