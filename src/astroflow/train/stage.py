"""``astroflow train``: train one model on the reduce stage's cutout stores, tracked in MLflow.

Writes ``<out-dir>/split.parquet`` (sky-region split of every object), ``best.ckpt`` (best
``val/auc``), ``model/`` (MLflow model: raw nJy cutouts -> p_galaxy) and ``run.json``; logs
per-epoch metrics, split counts, the checkpoint and the registered model to one MLflow run.

``--task morphology`` trains the Sersic-index/ellipticity regressor of the same architecture
instead (:mod:`astroflow.train.morphology`): best ``val/loss``, a model mapping raw cutouts to
``(sersic_n, ellipticity)``, registered as ``<prefix>-<model>-morphology``, its run tagged
``task=morphology``. The split is computed by the same function from the same objects, config
and seed, so it is the classifier's, object for object.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import torch

from astroflow import tracking
from astroflow.cli_common import add_config_args, resolve_config, setup_logging
from astroflow.split import assign_splits, split_counts
from astroflow.train.data import (
    TASKS,
    CutoutDataModule,
    check_labelled,
    read_index,
    task_targets,
)
from astroflow.train.fit import (
    BEST_CKPT,
    TASK_MONITOR,
    ActiveRunLogger,
    env_global_rank,
    train_model,
)
from astroflow.train.inference import classifier_from_checkpoint, regressor_from_checkpoint
from astroflow.train.mlflow_model import log_and_register, save_model_dir
from astroflow.train.nets import NETS

log = logging.getLogger("astroflow.train")

N_EXAMPLE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astroflow train", description=__doc__.split("\n")[0])
    add_config_args(parser)
    parser.add_argument(
        "--model", required=True, choices=sorted(NETS), help="architecture to train"
    )
    parser.add_argument("--index", required=True, type=Path, help="results/reduce/index.json")
    parser.add_argument(
        "--task",
        default="classification",
        choices=TASKS,
        help="what to learn: star/galaxy class or galaxy morphology (Sersic n, ellipticity)",
    )
    parser.add_argument(
        "--out-dir",
        required=True,
        type=Path,
        help="results/train/<model> (classification) or results/train/<model>/morphology",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def find_reduce_run(cfg: dict, dataset_digest: str) -> str | None:
    """The latest finished reduce run that produced this dataset digest, if the store has one.

    ``index.json`` does not record the reduce run id, but the reduce run is tagged with the
    dataset digest, which is enough to link the runs.
    """
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg))
    experiment = mlflow.get_experiment_by_name(cfg["tracking"]["experiment"])
    if experiment is None:
        return None
    runs = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=(
            f"tags.stage = 'reduce' and tags.dataset_digest = '{dataset_digest}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def run(
    cfg: dict, model_name: str, index_path: Path, out_dir: Path, task: str = "classification"
) -> dict:
    """Split, train, save and log one model of ``task``; return the ``run.json`` content."""
    t0 = time.perf_counter()
    index = read_index(index_path)
    bands = cfg["instrument"]["bands"]
    if index.bands != bands:
        raise ValueError(f"{index_path}: bands {index.bands} differ from instrument.bands {bands}")
    check_labelled(index)  # before the split: without labels there is nothing to split
    out_dir.mkdir(parents=True, exist_ok=True)
    split = assign_splits(index.objects, cfg["train"]["split"], seed=cfg["seed"])
    datamodule = CutoutDataModule.from_config(cfg, index, split, task=task)
    datamodule.check_targets()
    if env_global_rank() != 0:
        # A DDP process started by Lightning's launcher (or srun) runs this same command: it
        # only trains its shard; rank 0 writes the outputs and owns the MLflow run.
        train_model(cfg, model_name, datamodule, out_dir)
        return {}
    split_path = out_dir / "split.parquet"
    split.to_parquet(split_path, index=False)
    # "labelled" = usable by this task (morphology: labelled galaxies with finite targets)
    usable = task_targets(index.objects, task, str(index_path))[0]
    counts = split_counts(split, np.where(usable, index.objects["label"].to_numpy(), -1))
    best_ckpt = out_dir / f"{BEST_CKPT}.ckpt"
    best_ckpt.unlink(missing_ok=True)  # a stale checkpoint must not survive a failed rerun

    reduce_run = index.upstream_run_id or find_reduce_run(cfg, index.digest)
    upstream = {"reduce": reduce_run} if reduce_run else {}
    suffix = "" if task == "classification" else f"-{task}"
    monitor = TASK_MONITOR[task][0]
    with tracking.stage_run(
        cfg,
        stage="train",
        run_name=f"train-{model_name}{suffix}",
        dataset_digest=index.digest,
        upstream_run_ids=upstream,
        tags={"model": model_name, "task": task},
        dataset_source=index_path,
    ) as active:
        run_id = active.info.run_id
        mlflow.log_metrics({f"split/{k}": v for k, v in counts.items()})
        mlflow.log_artifact(str(split_path))
        trainer, module = train_model(
            cfg, model_name, datamodule, out_dir, logger=ActiveRunLogger()
        )
        if not best_ckpt.exists():
            raise RuntimeError(f"{best_ckpt}: no checkpoint written (did validation run?)")
        best_score = trainer.checkpoint_callback.best_model_score
        best_key = monitor.replace("/", "_")  # val_auc, val_loss
        mlflow.log_metrics(
            {f"best/{best_key}": float(best_score), "epochs_trained": float(trainer.current_epoch)}
        )
        mlflow.log_artifact(str(best_ckpt), artifact_path="checkpoint")
        if task == "morphology":
            trained = regressor_from_checkpoint(best_ckpt)
        else:
            trained = classifier_from_checkpoint(best_ckpt)
        example = datamodule.train_sample(max_objects=N_EXAMPLE)[:N_EXAMPLE]
        save_model_dir(trained, out_dir / "model", example)
        registered = f"{cfg['train']['registered_model_prefix']}-{model_name}{suffix}"
        info = log_and_register(trained, example, registered)
        summary = {
            "run_id": run_id,
            "task": task,
            "model_uri": info.model_uri,
            "registered_model": registered,
            "registered_model_version": info.registered_model_version,
            "dataset_digest": index.digest,
            "model": model_name,
            f"best_{best_key}": float(best_score),
            "epochs_trained": int(trainer.current_epoch),
            "split_counts": counts,
        }
        if task == "morphology":
            summary["target_standardisation"] = {
                "targets": ["log10_sersic_n", "ellipticity"],
                "mean": [float(v) for v in trained.target_mean],
                "std": [float(v) for v in trained.target_std],
            }
        (out_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
        mlflow.log_artifact(str(out_dir / "run.json"))
    log.info(
        "trained %s (%s): best %s %.4f after %d epochs in %.1f s (run %s)",
        model_name,
        task,
        monitor,
        float(best_score),
        trainer.current_epoch,
        time.perf_counter() - t0,
        run_id,
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = resolve_config(args)
    if args.model not in cfg["train"]["models"]:
        log.warning(
            "model %s is not in train.models %s; training it anyway",
            args.model,
            cfg["train"]["models"],
        )
    torch.set_num_threads(max(args.threads, 1))
    run(cfg, args.model, args.index, args.out_dir, task=args.task)
    return 0
