"""The morphology task: Sersic index and ellipticity of galaxies regressed from raw cutouts.

The network (the same architectures as the classifier, with a 2-unit head) predicts the
*standardised* targets ``z = (t - mean) / std`` with ``t = (log10 sersic_n, ellipticity)``.
Why: the Sersic index spans a factor of ten and matters in ratio (0.1 dex is as wrong at n = 1
as at n = 4), hence its logarithm; the standardisation gives both outputs unit scale, so neither
dominates the loss. ``mean`` and ``std`` are fitted once on the training galaxies and stored as
buffers; :meth:`MorphologyRegressor.physical` undoes them, so the served model
(:class:`MorphologyPrediction`, what the MLflow model exports) maps raw nJy cutouts to
``(sersic_n, ellipticity)`` in physical units, ellipticity ``|g| = (1 - q) / (1 + q)`` clamped
to [0, 1].

Loss: Huber (smooth L1) with ``HUBER_DELTA = 1`` in standardised units, i.e. MSE for residuals
within one training-set standard deviation and linear beyond: a labels catalog matched by
position has a few wild entries (blends, wrong matches) whose pull on the fit it limits.
The checkpoint and early stopping follow ``val/loss``; ``val/nmad_sersic_dex``,
``val/nmad_ellipticity`` and the matching biases are logged every epoch (under DDP, of the
rank-0 share of the validation set).

Known limitation (issue 25): trained on ``|g|``, an invariant of orientation, the network learns
the galaxy type's mean ellipticity (from colours and concentration) instead of the galaxy's
shape; the same network trained on components ``(e1, e2)`` that turn with the augmented image
(:func:`astroflow.train.augment.dihedral_spin2`) measures shape as well as adaptive moments.
That needs position-angle labels; docs/train.md has the diagnosis and the measurement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from astroflow.train.module import CutoutModule
from astroflow.train.nets import build_net, normalise_cutouts

#: What the regressor predicts, in output order.
TARGETS = ("sersic_n", "ellipticity")
#: Object-table columns holding the catalog's morphology (see astroflow.reduce.labels).
TARGET_COLUMNS = ("label_sersic_n", "label_ellipticity")
#: Huber threshold in standardised target units.
HUBER_DELTA = 1.0
#: Normal-consistent median absolute deviation factor.
NMAD_FACTOR = 1.4826


def to_target_space(targets: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """``(N, 2)`` physical ``(sersic_n, ellipticity)`` -> ``(log10 sersic_n, ellipticity)``."""
    if isinstance(targets, torch.Tensor):
        return torch.stack([torch.log10(targets[:, 0]), targets[:, 1]], dim=1)
    targets = np.asarray(targets, dtype=np.float64)
    return np.column_stack([np.log10(targets[:, 0]), targets[:, 1]])


def fit_target_scaler(targets: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of the training galaxies' ``(log10 n, e)``.

    Raises
    ------
    ValueError
        With fewer than two galaxies, a non-finite or non-positive target, or a target that
        does not vary (nothing to learn).
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or targets.shape[1] != len(TARGETS) or len(targets) < 2:
        raise ValueError(
            f"morphology targets: need (N >= 2, {len(TARGETS)}) training values, got "
            f"{targets.shape}"
        )
    if not np.all(np.isfinite(targets)) or np.any(targets[:, 0] <= 0):
        raise ValueError("morphology targets: non-finite values or a Sersic index <= 0")
    t = to_target_space(targets)
    mean, std = t.mean(axis=0), t.std(axis=0)
    if np.any(std <= 0):
        flat = [name for name, s in zip(TARGETS, std, strict=True) if s <= 0]
        raise ValueError(f"morphology targets: {flat} take a single value in training")
    return mean.tolist(), std.tolist()


class MorphologyRegressor(nn.Module):
    """Raw nJy cutouts ``(N, n_bands, S, S)`` -> standardised ``(log10 n, e)`` ``(N, 2)``.

    Parameters
    ----------
    net
        Maps normalised ``(N, n_bands, crop, crop)`` to ``(N, 2)``.
    band_scale_njy
        Per-band arcsinh scale [nJy] (as the classifier's).
    crop_size
        Side of the centre crop applied before the network.
    target_mean, target_std
        Standardisation of ``(log10 sersic_n, ellipticity)`` fitted on the training galaxies.
    """

    def __init__(
        self,
        net: nn.Module,
        band_scale_njy: Sequence[float],
        crop_size: int,
        target_mean: Sequence[float],
        target_std: Sequence[float],
    ) -> None:
        super().__init__()
        self.net = net
        self.crop_size = int(crop_size)
        for name, values in (
            ("band_scale_njy", band_scale_njy),
            ("target_mean", target_mean),
            ("target_std", target_std),
        ):
            self.register_buffer(name, torch.as_tensor(list(values), dtype=torch.float32))
        if self.target_mean.numel() != len(TARGETS) or self.target_std.numel() != len(TARGETS):
            raise ValueError(f"target_mean and target_std need {len(TARGETS)} values each")

    @property
    def n_bands(self) -> int:
        return int(self.band_scale_njy.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = normalise_cutouts(x, self.crop_size, self.band_scale_njy)
        return self.net(z.contiguous(memory_format=torch.channels_last))

    def standardise(self, targets: torch.Tensor) -> torch.Tensor:
        """Physical ``(sersic_n, ellipticity)`` -> the standardised training targets."""
        return (to_target_space(targets) - self.target_mean) / self.target_std

    def physical(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised outputs -> ``(sersic_n, ellipticity)``, ellipticity within [0, 1]."""
        t = z * self.target_std + self.target_mean
        return torch.stack([torch.pow(10.0, t[:, 0]), t[:, 1].clamp(0.0, 1.0)], dim=1)


class MorphologyPrediction(nn.Module):
    """``(sersic_n, ellipticity)`` from raw cutouts: the served form (MLflow pyfunc)."""

    def __init__(self, regressor: MorphologyRegressor) -> None:
        super().__init__()
        self.regressor = regressor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regressor.physical(self.regressor(x))


def build_regressor(
    model_name: str,
    n_bands: int,
    crop_size: int,
    band_scale_njy: Sequence[float],
    target_mean: Sequence[float],
    target_std: Sequence[float],
) -> MorphologyRegressor:
    """A :class:`MorphologyRegressor` on architecture ``model_name`` with a 2-unit head."""
    net = build_net(model_name, n_bands, crop_size, n_outputs=len(TARGETS))
    return MorphologyRegressor(net, band_scale_njy, crop_size, target_mean, target_std)


def _nmad(r: torch.Tensor) -> torch.Tensor:
    return NMAD_FACTOR * torch.median(torch.abs(r - torch.median(r)))


class MorphologyModule(CutoutModule):
    """Train/validate a :class:`MorphologyRegressor` (Huber loss on standardised targets).

    Parameters are those of :class:`~astroflow.train.module.StarGalaxyModule` plus
    ``target_mean`` and ``target_std`` (:func:`fit_target_scaler`). Batches are
    ``(cutouts, targets)`` with physical targets ``(N, 2)``.
    """

    def __init__(
        self,
        model_name: str,
        n_bands: int,
        crop_size: int,
        band_scale_njy: Sequence[float],
        target_mean: Sequence[float],
        target_std: Sequence[float],
        optimizer: str = "adamw",
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        band_scale_njy = [float(v) for v in band_scale_njy]
        if len(band_scale_njy) != n_bands:
            raise ValueError(f"band_scale_njy has {len(band_scale_njy)} values for {n_bands} bands")
        self.save_hyperparameters(
            {
                "task": "morphology",
                "model_name": model_name,
                "n_bands": int(n_bands),
                "crop_size": int(crop_size),
                "band_scale_njy": band_scale_njy,
                "target_mean": [float(v) for v in target_mean],
                "target_std": [float(v) for v in target_std],
                "optimizer": optimizer,
                "learning_rate": float(learning_rate),
                "weight_decay": float(weight_decay),
            }
        )
        self.regressor = build_regressor(
            model_name, n_bands, crop_size, band_scale_njy, target_mean, target_std
        )
        self.regressor.to(memory_format=torch.channels_last)
        self._val_residuals: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regressor(x)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Huber loss of the standardised outputs against the standardised targets."""
        return F.huber_loss(output, self.regressor.standardise(target), delta=HUBER_DELTA)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        z = self.regressor(x)
        self.log("val/loss", self.loss(z, y), on_epoch=True, prog_bar=True, batch_size=len(y))
        pred = self.regressor.physical(z.float())
        # Residuals as evaluation reports them: dex for n, plain difference for e.
        self._val_residuals.append(
            torch.stack(
                [torch.log10(pred[:, 0]) - torch.log10(y[:, 0]), pred[:, 1] - y[:, 1]], dim=1
            ).detach()
        )

    def on_validation_epoch_end(self) -> None:
        if not self._val_residuals:
            return
        r = torch.cat(self._val_residuals)
        self._val_residuals.clear()
        for k, name in enumerate(("sersic_dex", "ellipticity")):
            self.log(f"val/bias_{name}", torch.median(r[:, k]), batch_size=len(r))
            self.log(f"val/nmad_{name}", _nmad(r[:, k]), batch_size=len(r))
