"""DataModule, chunk-wise Zarr batches, normalisation and augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from astroflow.split import assign_splits
from astroflow.train.augment import N_DIHEDRAL, center_crop, dihedral, random_crop, random_dihedral
from astroflow.train.data import ChunkBlockBatches, CutoutDataModule, read_index
from astroflow.train.normalize import fit_band_scale_njy

from .conftest import BANDS, CHUNK, CUTOUT, SKY_SIGMA_NJY


@pytest.fixture(scope="module")
def index_and_split(reduce_index):
    index = read_index(reduce_index)
    split = assign_splits(
        index.objects,
        {"cell_arcsec": 30.0, "buffer_arcsec": 2.0, "val_fraction": 0.15, "test_fraction": 0.25},
        seed=3,
    )
    return index, split


def _expected(index, split, name):
    merged = index.objects.merge(split[["object_id", "split"]], on="object_id")
    return merged[(merged["split"] == name) & (merged["label"] >= 0)]


def _epoch(loader):
    xs, ys = zip(*list(loader), strict=True)
    return xs, ys


@pytest.mark.parametrize("cache_max_mb", [1024.0, 0.0], ids=["memory", "zarr-chunks"])
def test_batches_shapes_dtypes_and_coverage(index_and_split, cache_max_mb):
    index, split = index_and_split
    dm = CutoutDataModule(index, split, batch_size=32, seed=3, cache_max_mb=cache_max_mb)
    xs, ys = _epoch(dm.train_dataloader())
    expected = _expected(index, split, "train")
    assert all(x.dtype == torch.float32 and x.shape[1:] == (len(BANDS), CUTOUT, CUTOUT) for x in xs)
    assert all(y.dtype == torch.float32 and y.ndim == 1 for y in ys)
    assert [len(y) for y in ys[:-1]] == [32] * (len(ys) - 1) and 0 < len(ys[-1]) <= 32
    x, y = torch.cat(xs).numpy(), torch.cat(ys).numpy()
    assert len(y) == len(expected) == dm.n_labelled("train")
    assert set(np.unique(y)) <= {0.0, 1.0}
    # every labelled training cutout exactly once, with its own label
    stores = {f: zarr.open_group(p, mode="r")["images"][:] for f, p in index.stores.items()}
    want = np.stack([stores[f][r] for f, r in zip(expected["field"], expected["row"], strict=True)])
    key = lambda a: np.round(a.reshape(len(a), -1).sum(axis=1).astype(np.float64), 2)  # noqa: E731
    order_got, order_want = np.argsort(key(x)), np.argsort(key(want))
    np.testing.assert_array_equal(x[order_got], want[order_want])
    np.testing.assert_array_equal(y[order_got], expected["label"].to_numpy(np.float32)[order_want])


def test_chunk_stream_and_memory_cache_agree_on_val(index_and_split):
    index, split = index_and_split
    mem = CutoutDataModule(index, split, batch_size=16, seed=3, cache_max_mb=1024.0)
    stream = CutoutDataModule(index, split, batch_size=16, seed=3, cache_max_mb=0.0)
    a = torch.cat(_epoch(mem.val_dataloader())[0])
    b = torch.cat(_epoch(stream.val_dataloader())[0])
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # unshuffled: same store order


def test_shuffle_is_seeded_per_epoch(index_and_split):
    index, split = index_and_split

    def cutout_sums(epoch: int, cache_max_mb: float) -> torch.Tensor:
        dm = CutoutDataModule(index, split, batch_size=32, seed=3, cache_max_mb=cache_max_mb)
        loader = dm.train_dataloader()
        dm.set_epoch(epoch)
        return torch.cat(_epoch(loader)[0]).sum(dim=(1, 2, 3))

    for cache_max_mb in (0.0, 1024.0):
        e0, e0_again, e1 = (cutout_sums(e, cache_max_mb) for e in (0, 0, 1))
        torch.testing.assert_close(e0, e0_again, rtol=0, atol=0)
        assert not torch.equal(e0, e1), "epochs 0 and 1 gave the same order"
        torch.testing.assert_close(e0.sort().values, e1.sort().values, rtol=0, atol=0)


def test_chunk_units_are_whole_chunks(index_and_split):
    index, split = index_and_split
    dm = CutoutDataModule(index, split, batch_size=8, seed=0, cache_max_mb=0.0)
    ds = ChunkBlockBatches(dm.rows["train"], batch_size=8, shuffle=True, seed=0)
    for _field, start, stop, rows, _labels in ds.units:
        assert start % CHUNK == 0 and stop - start <= CHUNK
        assert rows.min() >= start and rows.max() < stop
    n_chunks = sum(len(np.unique(fr.rows // CHUNK)) for fr in dm.rows["train"])
    assert len(ds.units) == n_chunks


def test_worker_processes_deal_chunks_without_duplicates(index_and_split):
    index, split = index_and_split
    dm = CutoutDataModule(index, split, batch_size=16, seed=3, cache_max_mb=0.0, num_workers=2)
    xs, ys = _epoch(dm.train_dataloader())
    assert sum(len(y) for y in ys) == dm.n_labelled("train")
    assert len(ys) <= len(dm.train_dataloader())


def test_fit_band_scale_recovers_sky_noise(index_and_split):
    index, split = index_and_split
    dm = CutoutDataModule(index, split, batch_size=32, seed=3)
    scale = fit_band_scale_njy(dm.train_sample())
    assert scale.shape == (len(BANDS),) and scale.dtype == np.float32
    np.testing.assert_allclose(scale, SKY_SIGMA_NJY, rtol=0.05)
    with pytest.raises(ValueError, match=r"band index\(es\) \[1\]"):
        bad = dm.train_sample()
        bad[:, 1] = 3.0
        fit_band_scale_njy(bad)


def test_missing_store_error_names_the_file(tmp_path, reduce_index):
    index = json.loads(reduce_index.read_text())
    index["fields"]["F00"]["store"] = "fields/nowhere.zarr"
    path = tmp_path / "index.json"
    path.write_text(json.dumps(index))
    with pytest.raises(
        FileNotFoundError, match=r"index.json: field F00: Zarr store .*nowhere.zarr"
    ):
        read_index(path)


def test_augmentations_are_dihedral_and_crops():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    images = {tuple(dihedral(x, k).flatten().tolist()) for k in range(N_DIHEDRAL)}
    assert len(images) == N_DIHEDRAL
    for k in range(N_DIHEDRAL):  # the group is closed: a transform's inverse is in it
        y = dihedral(x, k)
        assert any(torch.equal(dihedral(y, j), x) for j in range(N_DIHEDRAL))
    assert torch.equal(center_crop(x, 4), x[..., 1:5, 1:5])
    torch.manual_seed(0)
    crops = random_crop(x, 4)
    assert crops.shape == (2, 3, 4, 4)
    for n in range(2):
        windows = [x[n, :, i : i + 4, j : j + 4] for i in range(3) for j in range(3)]
        assert any(torch.equal(crops[n], w) for w in windows)
    torch.manual_seed(5)
    r = random_dihedral(x)
    torch.manual_seed(5)
    drawn = torch.randint(0, N_DIHEDRAL, (2,))  # one draw per image, as random_dihedral makes
    for n in range(2):
        assert torch.equal(r[n], dihedral(x[n : n + 1], int(drawn[n]))[0])
    many = torch.randn(64, 3, 5, 5)
    torch.manual_seed(6)
    r = random_dihedral(many)
    torch.manual_seed(6)
    drawn = torch.randint(0, N_DIHEDRAL, (64,))
    assert len(set(drawn.tolist())) == N_DIHEDRAL  # every transform is exercised
    for n in range(64):
        assert torch.equal(r[n], dihedral(many[n : n + 1], int(drawn[n]))[0])


def test_one_class_split_is_rejected(index_and_split):
    index, split = index_and_split
    objects = index.objects.copy()
    val_ids = set(split.loc[split["split"] == "val", "object_id"])
    objects.loc[objects["object_id"].isin(val_ids) & (objects["label"] == 0), "label"] = 1
    one_class = type(index)(index.root, index.digest, index.bands, index.stores, objects)
    CutoutDataModule(index, split, 32, 3).check_classes()
    with pytest.raises(ValueError, match=r"the 'val' split has labelled classes \[1\]"):
        CutoutDataModule(one_class, split, 32, 3).check_classes()
