"""Lightning fits on CPU: one batch, determinism, resume, both architectures."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from astroflow.split import assign_splits
from astroflow.train.data import CutoutDataModule, read_index
from astroflow.train.fit import train_model
from astroflow.train.nets import build_net

QUICK = {"limit_train_batches": 1, "limit_val_batches": 2, "enable_progress_bar": False}


@pytest.fixture()
def datamodule(reduce_index, train_cfg):
    index = read_index(reduce_index)
    split = assign_splits(index.objects, train_cfg["train"]["split"], seed=train_cfg["seed"])
    cfg = {**train_cfg, "train": {**train_cfg["train"], "batch_size": 16}}  # CPU time
    return CutoutDataModule.from_config(cfg, index, split)


class EpochRecorder(L.Callback):
    """Records which epochs actually ran."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append(trainer.current_epoch)


@pytest.mark.parametrize("model_name", ["kim_brunner", "resnet"])
def test_one_batch_cpu_fit(tmp_path, train_cfg, datamodule, model_name):
    cfg = {**train_cfg, "train": {**train_cfg["train"], "max_epochs": 1}}
    trainer, module = train_model(
        cfg,
        model_name,
        datamodule,
        tmp_path,
        limit_train_batches=1,
        limit_val_batches=1,
        enable_progress_bar=False,
    )
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    assert 0.0 <= float(metrics["val/auc"]) <= 1.0
    assert (tmp_path / "best.ckpt").exists() and not (tmp_path / "checkpoints").exists()
    assert trainer.global_step == 1
    assert module.classifier.band_scale_njy.shape == (3,)


@pytest.mark.parametrize("cache_max_mb", [1024.0, 0.0], ids=["memory", "zarr-chunks"])
def test_same_config_and_data_give_identical_metrics(tmp_path, train_cfg, datamodule, cache_max_mb):
    datamodule.cache_max_mb = cache_max_mb
    runs = []
    for k in range(2):
        trainer, module = train_model(
            train_cfg, "kim_brunner", datamodule, tmp_path / str(k), **QUICK
        )
        runs.append(
            ({n: float(v) for n, v in trainer.callback_metrics.items()}, module.state_dict())
        )
    (m0, s0), (m1, s1) = runs
    assert m0 == m1
    assert set(m0) >= {"train/loss", "val/loss", "val/auc"}
    for name in s0:
        torch.testing.assert_close(s0[name], s1[name], rtol=0, atol=0, msg=name)


def test_resume_from_checkpoint_continues_epoch_count(tmp_path, train_cfg, datamodule):
    one = {**train_cfg, "train": {**train_cfg["train"], "max_epochs": 1}}
    first, _ = train_model(one, "kim_brunner", datamodule, tmp_path / "a", **QUICK)
    assert first.current_epoch == 1
    steps_after_first = first.global_step
    recorder = EpochRecorder()
    three = {**train_cfg, "train": {**train_cfg["train"], "max_epochs": 3}}
    trainer, _ = train_model(
        three,
        "kim_brunner",
        datamodule,
        tmp_path / "a",  # same folder: ModelCheckpoint restores its best score too
        ckpt_path=tmp_path / "a" / "best.ckpt",
        extra_callbacks=[recorder],
        **QUICK,
    )
    assert recorder.epochs == [1, 2]
    assert trainer.current_epoch == 3
    assert trainer.global_step == steps_after_first + 2 * QUICK["limit_train_batches"]


def test_kim_brunner_layout():
    net = build_net("kim_brunner", n_bands=5, crop_size=44)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [
        (32, (5, 5)),
        (32, (3, 3)),
        (64, (3, 3)),
        (64, (3, 3)),
        (64, (3, 3)),
        (128, (3, 3)),
        (128, (3, 3)),
        (128, (3, 3)),
    ]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (128 * 5 * 5, 2048),
        (2048, 2048),
        (2048, 1),
    ]
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 2
    assert net(torch.zeros(2, 5, 44, 44)).shape == (2, 1)


def test_compile_fits_the_compiled_network_and_keeps_its_weight_names(
    tmp_path, train_cfg, datamodule
):
    """``train.compile``: a real fit runs the network through dynamo's graphs (compiling the
    whole LightningModule failed on torch 2.13), and the checkpoint names the weights as an
    uncompiled module does, so every reader of checkpoints loads it."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cfg = {**train_cfg, "train": {**train_cfg["train"], "max_epochs": 1, "compile": True}}
    trainer, module = train_model(cfg, "kim_brunner", datamodule, tmp_path, **QUICK)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert counters["stats"]["unique_graphs"] >= 1
    saved = torch.load(tmp_path / "best.ckpt", weights_only=True)["state_dict"]
    assert set(saved) == set(module.state_dict())
    assert not any("_orig_mod" in name for name in saved)
    torch._dynamo.reset()
