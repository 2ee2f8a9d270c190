"""Preemption: a fit cut short resumes from ``last.ckpt``; DDP shards and Trainer settings.

SLURM itself is not needed: Lightning's requeue handler only adds ``hpc_ckpt_*.ckpt`` next to
``last.ckpt``, and both are found the same way. Multi-GPU DDP cannot run here (no GPU); what is
tested is the part that decides correctness on any machine: each rank gets its own, equally
long share of the training batches.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch.utils.data import DataLoader

from astroflow.split import assign_splits
from astroflow.train.data import CutoutDataModule, read_index
from astroflow.train.fit import (
    LAST_CKPT,
    build_trainer,
    find_resume_checkpoint,
    fit_fingerprint,
    train_model,
)

QUICK = {"limit_train_batches": 1, "limit_val_batches": 1, "enable_progress_bar": False}


class Preempted(RuntimeError):
    """Stands in for the job being killed."""


class KillAtEpoch(L.Callback):
    """Raise at the start of ``epoch``, after the previous epoch's checkpoints were written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise Preempted(f"killed at the start of epoch {self.epoch}")


class EpochRecorder(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append(trainer.current_epoch)


@pytest.fixture()
def datamodule(reduce_index, train_cfg):
    index = read_index(reduce_index)
    split = assign_splits(index.objects, train_cfg["train"]["split"], seed=train_cfg["seed"])
    return CutoutDataModule(index, split, batch_size=16, seed=train_cfg["seed"])


@pytest.mark.slow
def test_second_invocation_resumes_a_preempted_fit(tmp_path, train_cfg, datamodule):
    cfg = {**train_cfg, "train": {**train_cfg["train"], "max_epochs": 3}}
    out = tmp_path / "resnet"
    with pytest.raises(Preempted):
        train_model(cfg, "resnet", datamodule, out, extra_callbacks=[KillAtEpoch(2)], **QUICK)
    last = out / LAST_CKPT
    assert last.exists() and (out / "checkpoints" / "best.ckpt").exists()
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1

    fingerprint = fit_fingerprint(cfg, "resnet", datamodule.index.digest)
    assert find_resume_checkpoint(out, fingerprint) == last
    other = fit_fingerprint({**cfg, "seed": cfg["seed"] + 1}, "resnet", datamodule.index.digest)
    assert find_resume_checkpoint(out, other) is None  # another config: start afresh

    recorder = EpochRecorder()
    trainer, _ = train_model(cfg, "resnet", datamodule, out, extra_callbacks=[recorder], **QUICK)
    assert recorder.epochs == [2]  # epochs 0 and 1 were not trained again
    assert trainer.current_epoch == 3 and trainer.global_step == 3
    assert (out / "best.ckpt").exists()
    assert not last.exists() and not (out / "checkpoints").exists()  # a finished fit: no resume


@pytest.mark.parametrize("cache_max_mb", [1024.0, 0.0], ids=["memory", "zarr-chunks"])
@pytest.mark.parametrize("num_workers", [1, 2])
def test_ddp_ranks_get_disjoint_equal_shares(datamodule, cache_max_mb, num_workers):
    datamodule.cache_max_mb = cache_max_mb
    datamodule.batch_size = 8
    ds = datamodule._dataset("train", shuffle=True)
    ds.num_workers = num_workers
    n_train = datamodule.n_labelled("train")
    per_rank = []
    for rank in range(2):
        ds.set_rank(rank, 2)
        per_rank.append(_rank_batches(ds, num_workers))
    counts = [len(batches) for batches in per_rank]
    assert counts[0] == counts[1] > 0  # equal steps: no rank waits in the all-reduce
    keys = [{float(v) for x, _ in batches for v in x.sum(dim=(1, 2, 3))} for batches in per_rank]
    assert not keys[0] & keys[1]  # no cutout on both ranks
    seen = sum(len(y) for batches in per_rank for _, y in batches)
    assert n_train - 2 * num_workers * 8 * (1 + 2) < seen <= n_train
    ds.set_rank(0, 1)


def _rank_batches(ds, num_workers):
    """Batches one rank's DataLoader gives (real worker processes when num_workers > 1)."""
    workers = num_workers if num_workers > 1 else 0
    return list(DataLoader(ds, batch_size=None, num_workers=workers))


def test_trainer_devices_strategy_and_precision(tmp_path, train_cfg):
    cpu = {**train_cfg["train"], "accelerator": "cpu"}
    single = build_trainer(cpu, tmp_path / "a", enable_progress_bar=False)
    assert isinstance(single.strategy, SingleDeviceStrategy)
    assert single.precision == "32-true"  # precision auto on CPU
    ddp = build_trainer({**cpu, "devices": 2}, tmp_path / "b", enable_progress_bar=False)
    assert isinstance(ddp.strategy, DDPStrategy) and ddp.num_devices == 2
