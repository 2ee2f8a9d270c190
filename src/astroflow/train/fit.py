"""Build the Trainer and fit a model: checkpointing, early stopping, determinism, logging.

``train_model`` is the one callable the stage, the tests and the benchmark share; tests shrink
the Trainer through ``trainer_overrides`` (e.g. ``limit_train_batches=1``).

Preemption: every training epoch ends by writing ``<out_dir>/last.ckpt`` (atomically), and on
SLURM Lightning's ``SLURMEnvironment(auto_requeue=True)`` answers the scheduler's warning
signal (``--signal=USR1@90``) by saving ``<out_dir>/hpc_ckpt_<n>.ckpt`` and requeueing the job.
A later invocation with the same config, model and dataset resumes from the newer of the two
instead of starting again; a checkpoint written for anything else is ignored (and says so).
Both are deleted once a fit completes, so a finished run is never "resumed".
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only

from astroflow.config import config_hash
from astroflow.train.data import CutoutDataModule
from astroflow.train.module import CutoutModule, StarGalaxyModule
from astroflow.train.morphology import MorphologyModule, fit_target_scaler
from astroflow.train.normalize import fit_band_scale_njy

log = logging.getLogger(__name__)

BEST_CKPT = "best"  # ModelCheckpoint filename stem -> best.ckpt
CKPT_WORK_DIR = "checkpoints"  # ModelCheckpoint writes here, then best.ckpt moves to out_dir
LAST_CKPT = "last.ckpt"  # written to out_dir every epoch; resumed from when present
HPC_CKPT_GLOB = "hpc_ckpt_*.ckpt"  # Lightning's SLURM requeue checkpoints (default_root_dir)
FINGERPRINT_KEY = "astroflow_fingerprint"
RNG_KEY = "astroflow_rng_states"  # global RNG states at the end of the saved epoch
MONITOR = "val/auc"
#: What each task's checkpoint and early stopping follow, and in which direction.
TASK_MONITOR = {"classification": (MONITOR, "max"), "morphology": ("val/loss", "min")}


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
def known_lightning_warnings_ignored(resumed_ckpt_dir: Path | None = None) -> Iterator[None]:
    """Ignore the warnings Lightning emits on every fit of ours, and nothing else.

    - torch 2.13 deprecates constructing ``LeafSpec``, which Lightning 2.6's CombinedLoader does
      (FutureWarning from Lightning's own code, not ours).
    - Lightning warns that an IterableDataset's ``__len__`` may be wrong with several workers;
      ours deals chunks round-robin to workers and reports an upper bound on purpose, so the
      progress bar and the LR schedule know the epoch length.
    - When resuming a preempted fit, ``resumed_ckpt_dir`` still holds the best checkpoint that
      the restored ModelCheckpoint state points at, and Lightning warns that the folder is not
      empty: that one folder's warning is expected then.
    """
    with warnings.catch_warnings():
        if resumed_ckpt_dir is not None:
            warnings.filterwarnings(
                "ignore",
                message=rf"Checkpoint directory {re.escape(str(resumed_ckpt_dir))} exists and is",
                category=UserWarning,
            )
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


def select_precision(requested: str, accelerator: str) -> str:
    """``auto`` -> ``bf16-mixed`` on a GPU (tensor cores, no loss scaling), else ``32-true``."""
    if requested == "auto":
        return "bf16-mixed" if accelerator == "gpu" else "32-true"
    return requested


def select_strategy(devices: int) -> str:
    """``ddp`` (one process per device, gradients all-reduced) for several devices."""
    return "ddp" if devices > 1 else "auto"


class LastCheckpoint(L.Callback):
    """Write ``path`` (``last.ckpt``) at the end of every training epoch, atomically.

    The end of the training epoch comes after validation, so the saved ModelCheckpoint and
    EarlyStopping states already include this epoch. The checkpoint is written to a temporary
    name and renamed, so a job killed while writing leaves the previous epoch's intact. Every
    checkpoint of the fit (best, last, SLURM's) carries ``fingerprint``.
    """

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[FINGERPRINT_KEY] = self.fingerprint
        checkpoint[RNG_KEY] = collect_rng_states()

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        self._resumed_rng = checkpoint.get(RNG_KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the restore, the (RNG-isolated) sanity check and the loader setup: the next
        # draws are the resumed epoch's augmentation and dropout, as in an unbroken fit.
        if getattr(self, "_resumed_rng", None) is not None:
            set_rng_states(self._resumed_rng)
            self._resumed_rng = None


def collect_rng_states() -> dict:
    """torch (CPU and CUDA), numpy and python RNG states, as types ``weights_only`` loads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (seeded by seed_everything)
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping) -> None:
    """Restore what :func:`collect_rng_states` saved."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    legacy = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    np.random.set_state(legacy)  # noqa: NPY002
    random.setstate(states["python"])
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def fit_fingerprint(
    cfg: Mapping, model_name: str, dataset_digest: str, task: str = "classification"
) -> str:
    """What a checkpoint must have been written for to be resumed: seed, train config, model,
    dataset, task. (Anything else, e.g. a longer ``max_epochs``, changes the schedule: start
    again.) ``train.tasks`` is left out: it chooses which fits run, not what one fit does."""
    train = {k: v for k, v in cfg["train"].items() if k != "tasks"}
    spec = {"seed": cfg["seed"], "train": train, "model": model_name}
    spec["dataset_digest"] = dataset_digest
    if task != "classification":
        spec["task"] = task
    return config_hash(spec)


def _checkpoint_fingerprint(path: Path) -> str | None:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a truncated or foreign file: not resumable, say why
        log.warning("%s: cannot be read as a checkpoint (%s); not resuming from it", path, exc)
        return None
    return ckpt.get(FINGERPRINT_KEY) if isinstance(ckpt, dict) else None


def find_resume_checkpoint(out_dir: Path, fingerprint: str) -> Path | None:
    """The newest of ``out_dir/last.ckpt`` and SLURM's ``hpc_ckpt_*.ckpt`` written by a fit
    with this ``fingerprint``, or None (a fresh fit)."""
    candidates = [p for p in (out_dir / LAST_CKPT,) if p.exists()]
    candidates += list(out_dir.glob(HPC_CKPT_GLOB))
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        found = _checkpoint_fingerprint(path)
        if found == fingerprint:
            return path
        log.warning(
            "%s: written for another config, model or dataset (fingerprint %s, now %s); "
            "ignoring it and training from the start",
            path,
            found,
            fingerprint,
        )
    return None


def remove_resume_checkpoints(out_dir: Path) -> None:
    """Delete ``last.ckpt`` and SLURM's ``hpc_ckpt_*.ckpt`` once a fit has completed."""
    for path in [out_dir / LAST_CKPT, *out_dir.glob(HPC_CKPT_GLOB)]:
        path.unlink(missing_ok=True)


def env_global_rank() -> int:
    """This process's DDP rank before any Trainer exists (Lightning's launcher sets ``RANK`` /
    ``LOCAL_RANK`` for the processes it starts; ``srun`` sets ``SLURM_PROCID``)."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def build_trainer(
    train_cfg: Mapping,
    ckpt_dir: Path,
    logger: Logger | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
    task: str = "classification",
    **overrides: Any,
) -> L.Trainer:
    """A Trainer from the ``train`` config section.

    ModelCheckpoint keeps ``ckpt_dir/best.ckpt`` at the best ``val/auc`` (``val/loss`` for the
    morphology task, see :data:`TASK_MONITOR`); EarlyStopping watches the same metric;
    LearningRateMonitor runs when there is a logger. Deterministic algorithms are on, so the
    same config and data give the same metrics. ``train.devices`` > 1 trains
    with DDP; ``train.precision: auto`` is bf16-mixed on a GPU; on SLURM the job requeues itself
    on the scheduler's warning signal.
    """
    accelerator = select_accelerator(train_cfg["accelerator"])
    devices = int(train_cfg.get("devices", 1))
    if accelerator == "gpu":
        # Required by cuBLAS for deterministic matmuls; must be set before CUDA initialises.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monitor, mode = TASK_MONITOR[task]
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename=BEST_CKPT,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        EarlyStopping(monitor=monitor, mode=mode, patience=train_cfg["early_stopping_patience"]),
    ]
    if overrides.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    callbacks.extend(extra_callbacks)
    kwargs: dict[str, Any] = {
        "max_epochs": train_cfg["max_epochs"],
        "accelerator": accelerator,
        "devices": devices,
        "strategy": select_strategy(devices),
        "precision": select_precision(train_cfg["precision"], accelerator),
        "deterministic": True,
        "callbacks": callbacks,
        "logger": logger if logger is not None else False,
        "default_root_dir": str(ckpt_dir),
        "log_every_n_steps": 10,
        "enable_model_summary": False,
    }
    if SLURMEnvironment.detect():
        kwargs["plugins"] = [SLURMEnvironment(auto_requeue=True)]
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def compile_network(module: CutoutModule) -> None:
    """``train.compile``: ``torch.compile`` the module's network (its classifier or regressor,
    normalisation included) in place, so checkpoints keep the same weight names.

    Not the whole LightningModule: torch 2.13's dynamo fails on it while tracing ``self.log``
    (``'method' object has no attribute '__dict__'``), and on a GPU compiling the network
    alone ran as fast (docs/train.md, Speed). The augmentation stays eager either way.
    """
    network = module.regressor if isinstance(module, MorphologyModule) else module.classifier
    network.compile()


def build_module(cfg: Mapping, model_name: str, datamodule: CutoutDataModule) -> CutoutModule:
    """A fresh module of the datamodule's task whose normalisation (and, for morphology, target
    standardisation) is fitted on the datamodule's training split."""
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
    common = {
        "model_name": model_name,
        "n_bands": n_bands,
        "crop_size": train["crop_size"],
        "band_scale_njy": scale.tolist(),
        "optimizer": train["optimizer"],
        "learning_rate": train["learning_rate"],
        "weight_decay": train["weight_decay"],
    }
    if datamodule.task == "morphology":
        mean, std = fit_target_scaler(datamodule.train_targets())
        log.info("morphology targets (log10 sersic_n, ellipticity): mean %s, std %s",
                 np.round(mean, 4).tolist(), np.round(std, 4).tolist())  # fmt: skip
        return MorphologyModule(**common, target_mean=mean, target_std=std)
    return StarGalaxyModule(**common)


def train_model(
    cfg: Mapping,
    model_name: str,
    datamodule: CutoutDataModule,
    out_dir: str | Path,
    logger: Logger | None = None,
    ckpt_path: str | Path | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
    **trainer_overrides: Any,
) -> tuple[L.Trainer, CutoutModule]:
    """Seed everything, build module and Trainer, fit (or resume); return both.

    The task (classification or morphology) is the datamodule's.

    Checkpoints are written to ``out_dir/checkpoints/`` (Lightning warns about a non-empty
    checkpoint folder, and ``out_dir`` holds the split); afterwards the best one is moved to
    ``out_dir/best.ckpt`` and the work folder removed. ``out_dir/last.ckpt`` is written every
    epoch and, like SLURM's ``hpc_ckpt_*.ckpt``, resumed from by the next call when a fit was
    cut short (see the module docstring); a completed fit deletes them.

    Parameters
    ----------
    ckpt_path
        Resume from this checkpoint (loaded with ``weights_only=True``): the epoch count, the
        optimiser and scheduler state continue from it. None: resume from ``last.ckpt`` or a
        SLURM checkpoint in ``out_dir`` written for the same fit, else start afresh.
    extra_callbacks
        Callbacks added to the standard ones.
    trainer_overrides
        Extra ``lightning.Trainer`` arguments (tests: ``limit_train_batches=1`` ...).
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CKPT_WORK_DIR
    rank_zero = env_global_rank() == 0
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = fit_fingerprint(cfg, model_name, datamodule.index.digest, datamodule.task)
    resumed = ckpt_path is None and (ckpt_path := find_resume_checkpoint(out_dir, fingerprint))
    if resumed:
        log.info("resuming the interrupted fit from %s", ckpt_path)
    elif ckpt_dir.exists() and rank_zero:
        shutil.rmtree(ckpt_dir)  # leftovers of a run that cannot be resumed
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    module = build_module(cfg, model_name, datamodule)
    callbacks = [LastCheckpoint(out_dir / LAST_CKPT, fingerprint), *extra_callbacks]
    trainer_overrides.setdefault("default_root_dir", str(out_dir))  # SLURM's hpc_ckpt_* go here
    trainer = build_trainer(
        cfg["train"],
        ckpt_dir,
        logger=logger,
        extra_callbacks=callbacks,
        task=datamodule.task,
        **trainer_overrides,
    )
    if cfg["train"].get("compile", False):
        compile_network(module)
    with known_lightning_warnings_ignored(ckpt_dir if resumed else None):
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=str(ckpt_path) if ckpt_path else None,
            weights_only=True if ckpt_path else None,
        )
    if trainer.interrupted or not trainer.is_global_zero:
        return trainer, module
    written = ckpt_dir / f"{BEST_CKPT}.ckpt"
    if written.exists():
        os.replace(written, out_dir / f"{BEST_CKPT}.ckpt")
        if trainer.checkpoint_callback is not None:
            trainer.checkpoint_callback.best_model_path = str(out_dir / f"{BEST_CKPT}.ckpt")
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    remove_resume_checkpoints(out_dir)
    return trainer, module
