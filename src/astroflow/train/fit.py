"""Build the Trainer and fit a model: checkpointing, early stopping, determinism, logging.

``train_model`` is the one callable the stage, the tests and the benchmark share; tests shrink
the Trainer through ``trainer_overrides`` (e.g. ``limit_train_batches=1``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from astroflow.train.data import CutoutDataModule
from astroflow.train.module import StarGalaxyModule
from astroflow.train.normalize import fit_band_scale_njy

log = logging.getLogger(__name__)

BEST_CKPT = "best"  # ModelCheckpoint filename stem -> best.ckpt
CKPT_WORK_DIR = "checkpoints"  # ModelCheckpoint writes here, then best.ckpt moves to out_dir
MONITOR = "val/auc"


class ActiveRunLogger(Logger):
    """Lightning logger writing metrics into the already active MLflow run.

    Lightning's own MLFlowLogger would log the hyperparameters again (clashing with the config
    params the stage run logs) and terminate the run at the end of ``fit``, before the model is
    logged; this one only forwards metrics, with the global step.
    """

    def __init__(self) -> None:
        super().__init__()
        run = mlflow.active_run()
        if run is None:
            raise RuntimeError(
                "ActiveRunLogger: no active MLflow run (use astroflow.tracking.stage_run)"
            )
        self._run_id = run.info.run_id

    @property
    def name(self) -> str:
        return "mlflow-active-run"

    @property
    def version(self) -> str:
        return self._run_id

    @property
    @rank_zero_experiment
    def experiment(self) -> str:
        return self._run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters are the config params that ``stage_run`` already logged."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k.replace("@", "_at_"): float(v) for k, v in metrics.items()}
        mlflow.log_metrics(clean, step=step, run_id=self._run_id)


@contextlib.contextmanager
def known_lightning_warnings_ignored() -> Iterator[None]:
    """Ignore two warnings Lightning emits on every fit of ours, and nothing else.

    - torch 2.13 deprecates constructing ``LeafSpec``, which Lightning 2.6's CombinedLoader does
      (FutureWarning from Lightning's own code, not ours).
    - Lightning warns that an IterableDataset's ``__len__`` may be wrong with several workers;
      ours deals chunks round-robin to workers and reports an upper bound on purpose, so the
      progress bar and the LR schedule know the epoch length.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
            category=FutureWarning,
        )
        warnings.filterwarnings(
            "ignore", message=r"Your `IterableDataset` has `__len__` defined", category=UserWarning
        )
        yield


def select_accelerator(requested: str) -> str:
    """``auto`` -> ``gpu`` when CUDA is available, else ``cpu``."""
    if requested == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return requested


def build_trainer(
    train_cfg: Mapping,
    ckpt_dir: Path,
    logger: Logger | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
    **overrides: Any,
) -> L.Trainer:
    """A Trainer from the ``train`` config section.

    ModelCheckpoint keeps ``ckpt_dir/best.ckpt`` at the best ``val/auc``; EarlyStopping watches
    the same metric; LearningRateMonitor runs when there is a logger. Deterministic algorithms
    are on, so the same config and data give the same metrics.
    """
    accelerator = select_accelerator(train_cfg["accelerator"])
    if accelerator == "gpu":
        # Required by cuBLAS for deterministic matmuls; must be set before CUDA initialises.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename=BEST_CKPT,
            monitor=MONITOR,
            mode="max",
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        EarlyStopping(monitor=MONITOR, mode="max", patience=train_cfg["early_stopping_patience"]),
    ]
    if overrides.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    callbacks.extend(extra_callbacks)
    kwargs: dict[str, Any] = {
        "max_epochs": train_cfg["max_epochs"],
        "accelerator": accelerator,
        "devices": 1,
        "precision": train_cfg["precision"],
        "deterministic": True,
        "callbacks": callbacks,
        "logger": logger if logger is not None else False,
        "default_root_dir": str(ckpt_dir),
        "log_every_n_steps": 10,
        "enable_model_summary": False,
    }
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def build_module(cfg: Mapping, model_name: str, datamodule: CutoutDataModule) -> StarGalaxyModule:
    """A fresh module whose normalisation is fitted on the datamodule's training split."""
    train = cfg["train"]
    n_bands, size, _ = datamodule.cutout_shape()
    if n_bands != len(cfg["instrument"]["bands"]):
        raise ValueError(
            f"cutouts have {n_bands} bands but instrument.bands is {cfg['instrument']['bands']}"
        )
    if train["crop_size"] > size:
        raise ValueError(f"train.crop_size {train['crop_size']} exceeds the {size}-pixel cutouts")
    scale = fit_band_scale_njy(datamodule.train_sample())
    log.info(
        "band scale [nJy]: %s",
        dict(zip(cfg["instrument"]["bands"], scale.round(3).tolist(), strict=True)),
    )
    return StarGalaxyModule(
        model_name=model_name,
        n_bands=n_bands,
        crop_size=train["crop_size"],
        band_scale_njy=scale.tolist(),
        optimizer=train["optimizer"],
        learning_rate=train["learning_rate"],
        weight_decay=train["weight_decay"],
    )


def train_model(
    cfg: Mapping,
    model_name: str,
    datamodule: CutoutDataModule,
    out_dir: str | Path,
    logger: Logger | None = None,
    ckpt_path: str | Path | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
    **trainer_overrides: Any,
) -> tuple[L.Trainer, StarGalaxyModule]:
    """Seed everything, build module and Trainer, fit; return both.

    Checkpoints are written to ``out_dir/checkpoints/`` (Lightning warns about a non-empty
    checkpoint folder, and ``out_dir`` holds the split); afterwards the best one is moved to
    ``out_dir/best.ckpt`` and the work folder removed.

    Parameters
    ----------
    ckpt_path
        Resume from this checkpoint (loaded with ``weights_only=True``): the epoch count, the
        optimiser and scheduler state continue from it.
    extra_callbacks
        Callbacks added to the standard ones.
    trainer_overrides
        Extra ``lightning.Trainer`` arguments (tests: ``limit_train_batches=1`` ...).
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CKPT_WORK_DIR
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # leftovers of a killed run
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    module = build_module(cfg, model_name, datamodule)
    trainer = build_trainer(
        cfg["train"], ckpt_dir, logger=logger, extra_callbacks=extra_callbacks, **trainer_overrides
    )
    with known_lightning_warnings_ignored():
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=str(ckpt_path) if ckpt_path is not None else None,
            weights_only=True if ckpt_path is not None else None,
        )
    written = ckpt_dir / f"{BEST_CKPT}.ckpt"
    if written.exists():
        os.replace(written, out_dir / f"{BEST_CKPT}.ckpt")
        if trainer.checkpoint_callback is not None:
            trainer.checkpoint_callback.best_model_path = str(out_dir / f"{BEST_CKPT}.ckpt")
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    return trainer, module
