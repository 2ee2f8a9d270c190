"""Cutout batches for training, read from the reduce stage's Zarr stores by whole chunks.

Indexing a compressed Zarr array one sample at a time decompresses a whole chunk per sample, so
the loader works in chunk units instead: the chunks that hold rows of the wanted split are
visited in a seeded random order, a few at a time ("blocks"), each chunk is read with one slice,
the wanted rows are shuffled within the block and cut into batches (a remainder carries over to
the next block, so every batch but the last is full). When the selected cutouts fit in
``train.cache_max_mb`` they are read once into memory instead and shuffled globally each epoch.

Both datasets yield ready ``(images, labels)`` batches (DataLoader ``batch_size=None``): there
is no per-sample ``__getitem__`` and no collate. The "labels" are the task's targets: the class
(``(N,)``, 1 galaxy, 0 star) for ``classification``; the catalog's ``(sersic_n, ellipticity)``
(``(N, 2)``) of labelled galaxies with finite values for ``morphology``.

Under DDP every rank iterates its own share ("shard" = rank x DataLoader worker): batches (in
memory) or chunks (streaming) are dealt round-robin to shards. A training epoch must give every
rank the same number of steps, or the gradient all-reduce of the rank with more batches waits
forever, so with more than one rank a shuffled dataset stops every shard after the number of
full batches the smallest shard has (the few cutouts left over differ each epoch).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import zarr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from astroflow.reduce.flags import flag_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutoutIndex:
    """The reduce outputs as the train stage sees them.

    Attributes
    ----------
    root
        Folder of ``index.json``; store paths in the index are relative to it.
    digest
        Dataset digest (sha256 over field digests).
    bands
        Band order of the cutout band axis.
    stores
        ``{field: path of <field>.zarr}``.
    objects
        All object tables concatenated (``object_id``, ``field``, ``row``, ``ra``, ``dec``,
        ``label``, magnitudes, ...).
    upstream_run_id
        The reduce stage's MLflow run id if the index records one, else None.
    """

    root: Path
    digest: str
    bands: list[str]
    stores: dict[str, Path]
    objects: pd.DataFrame
    upstream_run_id: str | None = None


def read_index(index_path: str | Path) -> CutoutIndex:
    """Read ``results/reduce/index.json`` and every field's object table.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the file and what is wrong with it.
    """
    index_path = Path(index_path)
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{index_path}: not valid JSON: {exc}") from exc
    for key in ("fields", "digest", "bands"):
        if key not in index:
            raise ValueError(f"{index_path}: missing key {key!r} (see docs/data_contracts.md)")
    if not index["fields"]:
        raise ValueError(f"{index_path}: no fields; the reduce stage produced no cutouts")
    root = index_path.parent
    stores, tables = {}, []
    for field, entry in sorted(index["fields"].items()):
        store, objects_path = root / entry["store"], root / entry["objects"]
        if not store.exists():
            raise FileNotFoundError(f"{index_path}: field {field}: Zarr store {store} not found")
        table = pd.read_parquet(objects_path)
        required = {"object_id", "field", "row", "ra", "dec", "label"}
        if missing := required - set(table.columns):
            raise ValueError(f"{objects_path}: missing column(s) {sorted(missing)}")
        if not (table["field"] == field).all():
            raise ValueError(f"{objects_path}: 'field' column does not equal {field!r}")
        stores[field] = store
        tables.append(table)
    objects = pd.concat(tables, ignore_index=True)
    if objects["object_id"].duplicated().any():
        dup = objects.loc[objects["object_id"].duplicated(), "object_id"].iloc[0]
        raise ValueError(f"{index_path}: object_id {dup!r} appears more than once")
    upstream = index.get("run_id")
    run_json = root / "run.json"
    if upstream is None and run_json.exists():
        upstream = json.loads(run_json.read_text()).get("run_id")
    return CutoutIndex(root, index["digest"], list(index["bands"]), stores, objects, upstream)


def labels_catalogs(index: CutoutIndex) -> set[str | None]:
    """The labels catalogs the fields were matched to (``provenance.labels`` of each store:
    None for a field reduced without one, ``data.labels: null``); a store written before
    stores recorded it gives ``"?"``."""
    found: set[str | None] = set()
    for store in index.stores.values():
        provenance = zarr.open_group(store, mode="r").attrs.get("provenance") or {}
        found.add(provenance.get("labels", "?"))
    return found


def check_labelled(index: CutoutIndex) -> None:
    """Fail in one line, naming the labels catalog and its config key, when no object of the
    dataset is labelled: nothing can be trained, and no split setting can change that.

    Raises
    ------
    ValueError
        Saying whether the fields were reduced without a labels catalog or matched none of
        its stars and galaxies, and what to do.
    """
    labels = index.objects["label"].to_numpy()
    if (labels >= 0).any():
        return
    where, n = index.root / "index.json", len(labels)
    catalogs = labels_catalogs(index)
    if catalogs == {None}:
        raise ValueError(
            f"{where}: no labels: its {n} objects were reduced without a labels catalog "
            "(data.labels: null), so there is nothing to train on; set data.labels to a catalog "
            "of ra, dec and class and rerun, or apply a trained model to this archive with "
            "`astroflow predict` (docs/own_data.md)"
        )
    named = sorted(c for c in catalogs if c and c != "?")
    which = ", ".join(named) if named else "given to reduce"
    raise ValueError(
        f"{where}: no labels: none of its {n} objects matched a star or galaxy of the labels "
        f"catalog {which} (data.labels) within reduce.match_radius_arcsec; check that the "
        "catalog covers these fields and data.labels_columns (ra and dec in degrees, the class "
        "values meaning star and galaxy)"
    )


def open_images(store: Path) -> zarr.Array:
    """The ``images`` array of a field's Zarr group, checked to be ``(N, bands, S, S)``."""
    try:
        group = zarr.open_group(store, mode="r")
        images = group["images"]
    except (FileNotFoundError, KeyError) as exc:
        raise ValueError(f"{store}: no 'images' array in the Zarr group") from exc
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"{store}/images: shape {images.shape} is not (N, bands, S, S)")
    return images


#: Training tasks: what a model learns from the cutouts (``train.tasks``).
TASKS = ("classification", "morphology")
#: Object-table columns of the morphology targets (the labels catalog's, see reduce.labels).
MORPHOLOGY_COLUMNS = ("label_sersic_n", "label_ellipticity")


@dataclass(frozen=True)
class FieldRows:
    """Rows of one field's ``images`` array that belong to a split, with their labels."""

    store: Path
    rows: np.ndarray  # sorted int64 row indices into images
    labels: np.ndarray  # float32 targets aligned with rows: (n,) classes or (n, 2) morphology


def task_targets(objects: pd.DataFrame, task: str, source: str = "object table") -> np.ndarray:
    """Which objects train ``task`` (bool mask) and their targets, as ``(mask, targets)``.

    classification: every labelled object (``label >= 0``), target the class. morphology:
    labelled galaxies (``label == 1``) whose ``label_sersic_n`` (> 0) and
    ``label_ellipticity`` are finite, target ``(sersic_n, ellipticity)``.
    """
    if task == "classification":
        mask = objects["label"].to_numpy() >= 0
        return mask, objects["label"].to_numpy(np.float32)
    if task != "morphology":
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    missing = [c for c in MORPHOLOGY_COLUMNS if c not in objects.columns]
    if missing:
        raise ValueError(
            f"{source}: no morphology labels (column(s) {missing}); the labels catalog needs "
            "sersic_n and ellipticity columns (data.labels_columns) for the morphology task"
        )
    targets = objects[list(MORPHOLOGY_COLUMNS)].to_numpy(np.float64)
    mask = (
        (objects["label"].to_numpy() == 1)
        & np.isfinite(targets).all(axis=1)
        & (np.nan_to_num(targets[:, 0]) > 0)
    )
    return mask, targets.astype(np.float32)


def flagged(objects: pd.DataFrame, exclude_flags: Sequence[str]) -> np.ndarray:
    """Objects carrying any of the object flags ``exclude_flags`` (``train.exclude_flags``,
    names of :data:`astroflow.reduce.flags.FLAG_BITS`); none where the table has no
    ``flags`` column (reduced before flags existed)."""
    if not exclude_flags or "flags" not in objects.columns:
        return np.zeros(len(objects), bool)
    return flag_mask(objects["flags"].to_numpy(), exclude_flags)


def select_rows(
    index: CutoutIndex,
    split_table: pd.DataFrame,
    split: str,
    task: str = "classification",
    exclude_flags: Sequence[str] = (),
) -> list[FieldRows]:
    """Objects of ``split`` that train ``task`` and carry none of ``exclude_flags``, per
    field, rows sorted so chunk reads are contiguous (see :func:`task_targets`); how many
    the flags left out is logged."""
    merged = index.objects.merge(
        split_table[["object_id", "split"]], on="object_id", how="left", validate="one_to_one"
    )
    if merged["split"].isna().any():
        missing = merged.loc[merged["split"].isna(), "object_id"].iloc[0]
        raise ValueError(f"split table: object {missing!r} has no split")
    usable, targets = task_targets(merged, task, str(index.root / "index.json"))
    usable = usable & (merged["split"] == split).to_numpy()
    dropped = usable & flagged(merged, exclude_flags)
    if dropped.any():
        log.info("%s (%s): %d of %d objects left out by train.exclude_flags %s", split, task,
                 int(dropped.sum()), int(usable.sum()), list(exclude_flags))
    keep = np.flatnonzero(usable & ~dropped)
    keep = keep[np.lexsort((merged["row"].to_numpy()[keep], merged["field"].to_numpy()[keep]))]
    fields = merged["field"].to_numpy()[keep]
    out = []
    for field in sorted(set(fields.tolist())):
        sel = keep[fields == field]
        out.append(
            FieldRows(index.stores[field], merged["row"].to_numpy(np.int64)[sel], targets[sel])
        )
    return out


def read_chunk_rows(images: zarr.Array, start: int, stop: int, rows: np.ndarray) -> np.ndarray:
    """Read ``images[start:stop]`` in one call and keep ``rows`` (absolute indices)."""
    block = images[start:stop]
    return np.ascontiguousarray(block[rows - start], dtype=np.float32)


def load_rows(fields: Sequence[FieldRows]) -> tuple[np.ndarray, np.ndarray]:
    """All selected cutouts and labels in memory, read chunk by chunk."""
    images_out, labels_out = [], []
    for fr in fields:
        images = open_images(fr.store)
        chunk = images.chunks[0]
        for c in np.unique(fr.rows // chunk):
            in_chunk = (fr.rows // chunk) == c
            start, stop = int(c * chunk), int(min((c + 1) * chunk, images.shape[0]))
            images_out.append(read_chunk_rows(images, start, stop, fr.rows[in_chunk]))
            labels_out.append(fr.labels[in_chunk])
    if not images_out:
        raise ValueError("no labelled objects in this split")
    return np.concatenate(images_out), np.concatenate(labels_out)


class _EpochSeeded(IterableDataset):
    """Shared epoch bookkeeping: the shuffle of epoch e uses ``default_rng([seed, e])``."""

    def __init__(self, batch_size: int, shuffle: bool, seed: int, num_workers: int) -> None:
        super().__init__()
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_workers = max(int(num_workers), 1)
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    def set_rank(self, rank: int, world_size: int) -> None:
        """Shard by DDP rank (the DataModule passes the trainer's global rank and world size)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"set_rank: rank {rank} outside a world of {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle of this epoch (called by the LightningModule each epoch)."""
        self.epoch = int(epoch)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def _shard(self) -> tuple[int, int]:
        """``(shard id, number of shards)`` of this process: rank-major, then worker."""
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        return self.rank * nw + wid, self.world_size * nw

    @property
    def equal_shards(self) -> bool:
        """Cut every shard to the same batch count (training under DDP, see module doc)."""
        return self.shuffle and self.world_size > 1

    def _n_batches(self, n: int) -> int:
        # Each worker may end on one short batch: an upper bound keeps DataLoader's length honest.
        return math.ceil(n / self.batch_size / self.world_size) + (self.num_workers - 1)

    def _to_torch(
        self, images: np.ndarray, labels: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(images), torch.from_numpy(labels)


class InMemoryBatches(_EpochSeeded):
    """Batches from cutouts held in memory, globally shuffled each epoch."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, shuffle, seed, num_workers)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self._n_batches(len(self.labels))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = self._rng().permutation(n) if self.shuffle else np.arange(n)
        shard, n_shards = self._shard()
        n_batches = math.ceil(n / self.batch_size)
        if self.equal_shards:  # whole rounds of full batches only
            n_batches = n // self.batch_size // n_shards * n_shards
        for k, start in enumerate(range(0, n_batches * self.batch_size, self.batch_size)):
            if k % n_shards != shard:
                continue
            idx = order[start : start + self.batch_size]
            yield self._to_torch(self.images[idx], self.labels[idx])


class ChunkBlockBatches(_EpochSeeded):
    """Batches streamed from Zarr in whole chunks, shuffled by chunk and within blocks.

    Parameters
    ----------
    fields
        Selected rows per field store.
    batch_size
        Cutouts per batch; every batch but the last (per worker) is full.
    shuffle
        Visit chunks in a seeded random order and shuffle within blocks (training);
        otherwise read in store order (validation).
    seed
        Base seed; the epoch set by :meth:`set_epoch` is mixed in.
    chunks_per_block
        Chunks read before shuffling and slicing: more mixes better, costs more memory.
    num_workers
        DataLoader workers; chunks are dealt round-robin to them.
    """

    def __init__(
        self,
        fields: Sequence[FieldRows],
        batch_size: int,
        shuffle: bool,
        seed: int,
        chunks_per_block: int = 4,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, shuffle, seed, num_workers)
        self.fields = list(fields)
        self.chunks_per_block = max(int(chunks_per_block), 1)
        self.units = self._chunk_units()
        self.n_samples = sum(len(fr.rows) for fr in self.fields)

    def _chunk_units(self) -> list[tuple[int, int, int, np.ndarray, np.ndarray]]:
        """``(field_idx, start, stop, rows, labels)`` for every chunk holding selected rows."""
        units = []
        for f, fr in enumerate(self.fields):
            images = open_images(fr.store)
            chunk, n = images.chunks[0], images.shape[0]
            if len(fr.rows) and fr.rows.max() >= n:
                raise ValueError(f"{fr.store}/images: row {fr.rows.max()} beyond {n} cutouts")
            chunk_of = fr.rows // chunk
            for c in np.unique(chunk_of):
                sel = chunk_of == c
                start, stop = int(c * chunk), int(min((c + 1) * chunk, n))
                units.append((f, start, stop, fr.rows[sel], fr.labels[sel]))
        return units

    def __len__(self) -> int:
        return self._n_batches(self.n_samples)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = self._rng()
        order = rng.permutation(len(self.units)) if self.shuffle else np.arange(len(self.units))
        shard, n_shards = self._shard()
        dealt = [order[s::n_shards] for s in range(n_shards)]
        mine = [self.units[k] for k in dealt[shard]]
        max_batches = None
        if self.equal_shards:
            max_batches = min(
                sum(len(self.units[k][3]) for k in ks) // self.batch_size for ks in dealt
            )
        for n_yielded, batch in enumerate(self._blocks(rng, mine)):
            if max_batches is not None and n_yielded >= max_batches:
                return
            yield batch

    def _blocks(
        self, rng: np.random.Generator, mine: list
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Read ``mine`` (chunk units) block by block; shuffle within blocks; cut batches."""
        arrays = {}
        carry_x = np.empty((0,), dtype=np.float32)
        carry_y = np.empty((0,), dtype=np.float32)
        for b in range(0, len(mine), self.chunks_per_block):
            xs, ys = [], []
            for f, start, stop, rows, labels in mine[b : b + self.chunks_per_block]:
                if f not in arrays:
                    arrays[f] = open_images(self.fields[f].store)
                xs.append(read_chunk_rows(arrays[f], start, stop, rows))
                ys.append(labels)
            if carry_y.size:
                xs.insert(0, carry_x)
                ys.insert(0, carry_y)
            x, y = np.concatenate(xs), np.concatenate(ys)
            if self.shuffle:
                perm = rng.permutation(len(y))
                x, y = x[perm], y[perm]
            n_full = len(y) // self.batch_size * self.batch_size
            for start in range(0, n_full, self.batch_size):
                sl = slice(start, start + self.batch_size)
                yield self._to_torch(x[sl], y[sl])
            carry_x, carry_y = x[n_full:], y[n_full:]
        if carry_y.size:
            yield self._to_torch(np.ascontiguousarray(carry_x), np.ascontiguousarray(carry_y))


class CutoutDataModule(L.LightningDataModule):
    """Train/val/test batches of labelled cutouts for one dataset and split.

    Parameters
    ----------
    index
        The reduce outputs (:func:`read_index`).
    split_table
        ``object_id`` -> ``split`` (:func:`astroflow.split.assign_splits`).
    batch_size, seed
        As in the config (``train.batch_size``, ``seed``).
    cache_max_mb
        Hold a split in memory when its cutouts take at most this many MB (0 = always stream).
    num_workers
        DataLoader worker processes.
    chunks_per_block
        Zarr chunks per shuffle block when streaming.
    task
        ``classification`` (labels: the class) or ``morphology`` (labels: the catalog's
        ``(sersic_n, ellipticity)`` of galaxies), see :func:`task_targets`.
    exclude_flags
        Object flags (``train.exclude_flags``) whose objects no split uses.
    """

    def __init__(
        self,
        index: CutoutIndex,
        split_table: pd.DataFrame,
        batch_size: int,
        seed: int,
        cache_max_mb: float = 1024.0,
        num_workers: int = 0,
        chunks_per_block: int = 4,
        task: str = "classification",
        exclude_flags: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.task = task
        self.index = index
        self.split_table = split_table
        self.batch_size = batch_size
        self.seed = seed
        self.cache_max_mb = cache_max_mb
        self.num_workers = num_workers
        self.chunks_per_block = chunks_per_block
        self.datasets: dict[str, _EpochSeeded] = {}
        if exclude_flags and "flags" not in index.objects.columns:
            log.warning("%s: the object tables have no flags column (reduced before object "
                        "flags): train.exclude_flags leaves nothing out", index.root)
        self.rows = {
            s: select_rows(index, split_table, s, task, exclude_flags)
            for s in ("train", "val", "test")
        }

    @classmethod
    def from_config(
        cls,
        cfg: dict,
        index: CutoutIndex,
        split_table: pd.DataFrame,
        task: str = "classification",
    ) -> CutoutDataModule:
        """Build from the resolved config's ``train`` section."""
        train = cfg["train"]
        return cls(
            index,
            split_table,
            batch_size=train["batch_size"],
            seed=cfg["seed"],
            cache_max_mb=train["cache_max_mb"],
            num_workers=train["num_workers"],
            task=task,
            exclude_flags=train["exclude_flags"],
        )

    def n_labelled(self, split: str) -> int:
        """Labelled objects in ``split``."""
        return sum(len(fr.rows) for fr in self.rows[split])

    def check_targets(self) -> None:
        """Fail early, naming the index, when train or val cannot train the task.

        No labelled object at all: :func:`check_labelled`. classification:
        :meth:`check_classes`. morphology: train and val each need at least two galaxies with
        catalog morphology (the standardisation and the NMAD need two).
        """
        check_labelled(self.index)
        if self.task == "classification":
            self.check_classes()
            return
        for split in ("train", "val"):
            if self.n_labelled(split) < 2:
                raise ValueError(
                    f"{self.index.root / 'index.json'}: the {split!r} split has "
                    f"{self.n_labelled(split)} labelled galaxies with a finite Sersic index and "
                    "ellipticity; the morphology task needs at least 2: add fields or reduce "
                    "train.split.cell_arcsec"
                )

    def train_targets(self) -> np.ndarray:
        """Targets of every training object, concatenated (fits the target standardisation)."""
        return np.concatenate([fr.labels for fr in self.rows["train"]])

    def check_classes(self) -> None:
        """Fail early, naming the index, when train or val lacks stars or galaxies.

        ``val/auc`` is undefined with one class (torchmetrics would return 0 and checkpointing
        would pick an arbitrary epoch), and a one-class training set learns nothing.
        """
        for split in ("train", "val"):
            labels = np.concatenate([fr.labels for fr in self.rows[split]] or [np.empty(0)])
            classes = set(np.unique(labels).astype(int).tolist())
            if classes != {0, 1}:
                raise ValueError(
                    f"{self.index.root / 'index.json'}: the {split!r} split has labelled "
                    f"classes {sorted(classes)} ({len(labels)} objects); need both stars (0) and "
                    "galaxies (1): add fields or reduce train.split.cell_arcsec"
                )

    def cutout_shape(self) -> tuple[int, int, int]:
        """``(n_bands, S, S)`` of the cutouts."""
        store = next(iter(self.index.stores.values()))
        return tuple(open_images(store).shape[1:])

    def _dataset(self, split: str, shuffle: bool) -> _EpochSeeded:
        if split in self.datasets:
            return self.datasets[split]
        fields = self.rows[split]
        n = sum(len(fr.rows) for fr in fields)
        if n == 0:
            raise ValueError(
                f"{self.index.root / 'index.json'}: no labelled objects in the {split!r} split; "
                "use more fields or smaller train.split.cell_arcsec"
            )
        mb = n * int(np.prod(self.cutout_shape())) * 4 / 2**20
        if mb <= self.cache_max_mb:
            log.info("%s: %d cutouts (%.1f MB) cached in memory", split, n, mb)
            images, labels = load_rows(fields)
            ds = InMemoryBatches(
                images, labels, self.batch_size, shuffle, self.seed, self.num_workers
            )
        else:
            log.info("%s: %d cutouts (%.1f MB) streamed from Zarr by chunk", split, n, mb)
            ds = ChunkBlockBatches(
                fields, self.batch_size, shuffle, self.seed, self.chunks_per_block, self.num_workers
            )
        self.datasets[split] = ds
        return ds

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to the training dataset so each epoch has its own shuffle."""
        if "train" in self.datasets:
            self.datasets["train"].set_epoch(epoch)

    def _loader(self, ds: _EpochSeeded) -> DataLoader:
        trainer = self.trainer  # None outside a Trainer (tests, benchmark)
        if trainer is not None:
            ds.set_rank(trainer.global_rank, trainer.world_size)
        # A loader of its own generator: creating its iterator (every epoch) must not draw from
        # torch's global RNG, which drives augmentation and dropout and is restored on resume.
        return DataLoader(
            ds,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("train", shuffle=True))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val", shuffle=False))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test", shuffle=False))

    def train_sample(self, max_objects: int = 2048) -> np.ndarray:
        """Up to ``max_objects`` training cutouts (seeded choice) for fitting normalisation."""
        fields = self.rows["train"]
        n = sum(len(fr.rows) for fr in fields)
        if n == 0:
            raise ValueError(f"{self.index.root / 'index.json'}: no labelled training objects")
        if n > max_objects:
            rng = np.random.default_rng([self.seed, 7919])
            keep = np.sort(rng.choice(n, size=max_objects, replace=False))
            offsets = np.cumsum([0] + [len(fr.rows) for fr in fields])
            fields = [
                FieldRows(fr.store, fr.rows[m], fr.labels[m])
                for k, fr in enumerate(fields)
                if (m := (keep[(keep >= offsets[k]) & (keep < offsets[k + 1])] - offsets[k])).size
            ]
        return load_rows(fields)[0]
