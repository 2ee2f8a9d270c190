"""LightningModule: BCE training of a :class:`StarGalaxyClassifier` with augmentation.

Augmentation (random crop to ``crop_size``, random dihedral transform) runs on the batch after
it reaches the device, so a GPU does it and the loader only reads and slices.
:class:`CutoutModule` holds what every task's module shares (the per-epoch shuffle and the
optimiser with its schedule); the morphology regressor's module
(:mod:`astroflow.train.morphology`) derives from it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics.classification import BinaryAUROC

from astroflow.train.augment import random_crop, random_dihedral
from astroflow.train.nets import StarGalaxyClassifier, build_net


class CutoutModule(L.LightningModule):
    """What the modules of all tasks share: the epoch's shuffle, the augmented training step
    and the optimiser.

    Subclasses save ``crop_size``, ``optimizer``, ``learning_rate`` and ``weight_decay`` as
    hyperparameters, and define ``forward`` and :meth:`loss` (of the forward output and the
    batch's targets).
    """

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        x = random_dihedral(random_crop(x, self.hparams.crop_size))
        loss = self.loss(self(x), y)
        n = len(y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=n)
        return loss

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                self.parameters(),
                lr=hp.learning_rate,
                momentum=0.9,
                nesterov=True,
                weight_decay=hp.weight_decay,
            )
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: max(0.0, 1.0 - step / total_steps)
            )
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(
                self.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay
            )
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt,
                lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)),
            )
        else:
            raise ValueError(f"train.optimizer: unknown optimizer {hp.optimizer!r} (sgd, adamw)")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class StarGalaxyModule(CutoutModule):
    """Train/validate a star/galaxy classifier.

    Parameters
    ----------
    model_name
        ``kim_brunner`` or ``resnet``.
    n_bands, crop_size
        Input bands and crop side [pixels].
    band_scale_njy
        Per-band arcsinh scale [nJy] (see :mod:`astroflow.train.normalize`).
    optimizer
        ``sgd`` (Nesterov, momentum 0.9, linear decay to 0) or ``adamw`` (cosine decay to 0).
    learning_rate, weight_decay
        Peak learning rate and weight decay.
    """

    def __init__(
        self,
        model_name: str,
        n_bands: int,
        crop_size: int,
        band_scale_njy: Sequence[float],
        optimizer: str = "adamw",
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        band_scale_njy = [float(v) for v in band_scale_njy]
        self.save_hyperparameters(
            {
                "model_name": model_name,
                "n_bands": int(n_bands),
                "crop_size": int(crop_size),
                "band_scale_njy": band_scale_njy,
                "optimizer": optimizer,
                "learning_rate": float(learning_rate),
                "weight_decay": float(weight_decay),
            }
        )
        if len(band_scale_njy) != n_bands:
            raise ValueError(f"band_scale_njy has {len(band_scale_njy)} values for {n_bands} bands")
        net = build_net(model_name, n_bands, crop_size)
        self.classifier = StarGalaxyClassifier(net, band_scale_njy, crop_size)
        self.classifier.to(memory_format=torch.channels_last)
        self.val_auc = BinaryAUROC()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, target)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.classifier(x)
        loss = self.loss(logits, y)
        self.val_auc.update(torch.sigmoid(logits), y.long())
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("val/auc", self.val_auc, on_epoch=True, prog_bar=True, batch_size=len(y))
