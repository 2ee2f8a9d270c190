"""The evaluate stage: score the trained model and the catalog baselines on the held-out region.

Command line (what the Snakemake rule runs)::

    astroflow evaluate --config-json J --model kim_brunner --index results/reduce/index.json \\
        --train-dir results/train/kim_brunner --truth PATH_OR_EMPTY \\
        --out-dir results/evaluate/kim_brunner --threads N \\
        [--exposures RAW.fits ... --calib results/reduce/calib]

``--exposures`` (raw science exposures, any band and field) and ``--calib`` (the masters folder
of ``reduce calib``) feed the SExtractor baselines; without them, or without the
``source-extractor``/``psfex`` programs, those baselines are skipped with the reason in
metrics.json. ``--morphology-dir results/train/<model>/morphology`` (when ``train.tasks`` has
``morphology``) also scores the morphology regressor and its moments baseline
(:mod:`astroflow.evaluate.morphology`) into metrics.json's ``morphology`` key.

The work is split so that each part can be tested on its own:

- :func:`score_model` turns a ``predict_proba`` callable and cutout batches into ``p_galaxy``;
- :func:`evaluate_scores` takes the test table, the true classes and every scorer's
  ``p_galaxy`` and writes metrics.json, predictions.parquet and the plots;
- :func:`run` wires the inputs of reduce and train, the classifier loader, the SExtractor
  baselines, the optional temperature calibration and MLflow around them.
"""

from __future__ import annotations

import argparse
import json
import logging
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from astroflow.cli_common import add_config_args, resolve_config, setup_logging
from astroflow.evaluate import plots
from astroflow.evaluate.baselines import score_baselines
from astroflow.evaluate.bootstrap import bootstrap_indices, bootstrap_metrics
from astroflow.evaluate.calibration import apply_temperature, fit_temperature
from astroflow.evaluate.inputs import (
    CutoutReader,
    attach_split,
    load_objects,
    match_truth,
    read_json,
    truth_is_given,
)
from astroflow.evaluate.metrics import HEADLINE
from astroflow.evaluate.morphology import PLOT_NAMES as MORPHOLOGY_PLOT_NAMES
from astroflow.evaluate.morphology import (
    MorphologyResult,
    evaluate_morphology,
    morphology_mlflow_metrics,
)
from astroflow.evaluate.saliency import (
    SALIENCY_PER_GROUP,
    integrated_gradients,
    plot_saliency,
    saliency_sample,
)
from astroflow.evaluate.sextractor_baselines import SEXTRACTOR_BASELINES, score_sextractor
from astroflow.evaluate.summary import (
    flag_blocks,
    headline_mlflow_metrics,
    log_flag_blocks,
    scored_blocks,
    summarize,
    validate_metrics,
)
from astroflow.io.plan import read_list
from astroflow.reduce.flags import flag_mask

log = logging.getLogger(__name__)

#: Mixed into the master seed so the bootstrap stream differs from other stages' streams.
_SEED_STREAM = zlib.crc32(b"evaluate")
#: Number of cutouts in the gallery of worst misclassified objects.
GALLERY_SIZE = 16
#: The plots always written to ``<out-dir>/plots/`` (``<name>.png``); workflow/report/plots.rst
#: has a caption for each name.
PLOT_NAMES = ("roc", "purity_completeness_vs_mag", "reliability", "worst_misclassified")
#: Plots written when they apply: ``saliency`` when the classifier exposes a differentiable
#: torch model, ``reliability_calibration`` with ``evaluate.calibration: temperature``, the
#: morphology plots when the morphology task is evaluated.
OPTIONAL_PLOT_NAMES = ("saliency", "reliability_calibration", *MORPHOLOGY_PLOT_NAMES)

PredictProba = Callable[..., np.ndarray]


def score_model(
    predict_proba: PredictProba, batches: Iterable[np.ndarray], n_objects: int, tta: bool
) -> np.ndarray:
    """``p_galaxy`` of every object, batch by batch, checked to be finite and in [0, 1].

    Parameters
    ----------
    predict_proba : callable
        ``predict_proba(images, tta=bool) -> p_galaxy`` with images ``(n, bands, S, S)`` nJy.
    batches : iterable of arrays
        Cutouts in table order.
    n_objects : int
        Expected total, for the progress counter and the final check.
    tta : bool
        Passed on (test-time augmentation).
    """
    parts = []
    done = 0
    for images in batches:
        p = np.asarray(predict_proba(images, tta=tta), dtype=np.float64).reshape(-1)
        if p.shape[0] != images.shape[0]:
            raise ValueError(f"predict_proba returned {p.shape[0]} scores for {images.shape[0]} "
                             "cutouts")
        parts.append(p)
        done += p.shape[0]
        log.info("scored %d/%d test objects", done, n_objects)
    p = np.concatenate(parts) if parts else np.zeros(0)
    if p.shape[0] != n_objects:
        raise ValueError(f"scored {p.shape[0]} objects, expected {n_objects}")
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise ValueError(f"predict_proba gave {int(bad.sum())} scores that are not "
                         "probabilities in [0, 1]")
    return p


@dataclass
class Extras:
    """What :func:`evaluate_scores` adds beyond the scores: all optional.

    Attributes
    ----------
    skipped : dict
        ``{baseline: reason}`` of baselines that could not be scored.
    sextractor : dict or None
        The ``sextractor`` block of metrics.json.
    temperature : float or None
        Fitted temperature; then ``scores["model"]`` is calibrated and ``p_uncalibrated`` holds
        the raw model scores on the rows of ``test``.
    n_val : int
        Validation objects the temperature was fitted on.
    p_uncalibrated : array or None
    forward : callable or None
        Differentiable ``torch.Tensor -> p_galaxy`` of the model, for the saliency maps.
    device : str or None
        Torch device of ``forward``.
    morphology : MorphologyResult or None
        The morphology task's metrics block and prediction columns (on the rows of ``test``).
    """

    skipped: dict[str, str] = field(default_factory=dict)
    sextractor: dict | None = None
    temperature: float | None = None
    n_val: int = 0
    p_uncalibrated: np.ndarray | None = None
    forward: Callable | None = None
    device: str | None = None
    morphology: MorphologyResult | None = None


def object_flags(objects: pd.DataFrame) -> np.ndarray:
    """The objects' ``flags`` bitmask (int32); zeros for a table reduced before object flags."""
    if "flags" not in objects.columns:
        return np.zeros(len(objects), np.int32)
    return objects["flags"].to_numpy(dtype=np.int32)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def evaluate_scores(
    cfg: dict,
    test: pd.DataFrame,
    scores: dict[str, np.ndarray],
    truth_source: str,
    read_cutouts: Callable[[pd.DataFrame], np.ndarray],
    out_dir: Path,
    extras: Extras | None = None,
) -> dict:
    """Metrics, predictions and plots for scored test objects.

    Parameters
    ----------
    cfg : dict
        Resolved config (``seed``, ``instrument``, ``reduce.detection_band``, ``evaluate``).
    test : DataFrame
        Test objects, with ``true_label`` (1 galaxy, 0 star, -1 unknown: not evaluated) and
        ``flags`` (optional): the headline metrics, plots and gallery use the objects with a
        class and none of ``evaluate.exclude_flags``; metrics.json's ``flags`` block scores
        each flag's objects on their own.
    scores : dict
        ``{"model": p, "concentration": p, "forest": p}`` on the rows of ``test``.
    truth_source : {"truth", "labels"}
    read_cutouts : callable
        ``read_cutouts(rows_of_test) -> (n, bands, S, S)`` for the gallery.
    out_dir : Path
        Receives metrics.json, predictions.parquet and plots/.
    extras : Extras, optional
        Skipped baselines, SExtractor notes, calibration and the saliency model.

    Returns
    -------
    dict
        The (validated) metrics document.
    """
    out_dir = Path(out_dir)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    bands = list(cfg["instrument"]["bands"])
    mag_col = f"mag_{cfg['reduce']['detection_band']}"
    if mag_col not in test.columns:
        raise KeyError(f"object table lacks the detection-band magnitude column {mag_col!r}")

    ecfg = cfg["evaluate"]
    flags = object_flags(test)
    with_class = test["true_label"].to_numpy() >= 0
    # the headline set: objects with a true class and none of evaluate.exclude_flags
    evaluated = with_class & ~flag_mask(flags, ecfg["exclude_flags"])
    y = test["true_label"].to_numpy(dtype=np.int64)[evaluated]
    sc = {name: np.asarray(p, dtype=np.float64)[evaluated] for name, p in scores.items()}
    mag = test[mag_col].to_numpy(dtype=np.float64)[evaluated]
    rng = np.random.default_rng([int(cfg["seed"]), _SEED_STREAM])
    extras = extras or Extras()
    doc = summarize(y, sc, mag, list(ecfg["mag_bins"]), int(ecfg["n_bootstrap"]), rng,
                    truth_source, skipped=extras.skipped)
    if extras.sextractor is not None:
        doc["sextractor"] = extras.sextractor
    if extras.morphology is not None:
        doc["morphology"] = extras.morphology.block
    p_raw = None
    if extras.temperature is None:
        doc["calibration"] = {"method": "none"}
    else:
        p_raw = np.asarray(extras.p_uncalibrated, dtype=np.float64)[evaluated]
        doc["calibration"] = {
            "method": "temperature",
            "temperature": float(extras.temperature),
            "n_val": int(extras.n_val),
            "uncalibrated": bootstrap_metrics(
                y, p_raw, HEADLINE, bootstrap_indices(y.size, int(ecfg["n_bootstrap"]), rng)
            ),
        }
    doc["flags"] = flag_blocks(
        test["true_label"].to_numpy(dtype=np.int64)[with_class],
        {name: np.asarray(p, dtype=np.float64)[with_class] for name, p in scores.items()},
        flags[with_class], list(ecfg["exclude_flags"]), int(ecfg["n_bootstrap"]), rng)
    log_flag_blocks(doc["flags"])
    validate_metrics(doc)
    with open(out_dir / "metrics.json", "w") as fh:
        json.dump(doc, fh, indent=2, default=_json_default)
        fh.write("\n")

    pred = pd.DataFrame({
        "object_id": test["object_id"].to_numpy(),
        "field": test["field"].to_numpy(),
        "row": test["row"].to_numpy(),
        "ra": test["ra"].to_numpy(),
        "dec": test["dec"].to_numpy(),
        "split": test["split"].to_numpy(),
        "p_galaxy": np.asarray(scores["model"], dtype=np.float64),
    })
    if extras.p_uncalibrated is not None:
        pred["p_galaxy_uncalibrated"] = np.asarray(extras.p_uncalibrated, dtype=np.float64)
    for name, p in scores.items():
        if name != "model":
            pred[f"p_galaxy_{name}"] = np.asarray(p, dtype=np.float64)
    pred["label"] = test["true_label"].to_numpy(dtype=np.int8)
    pred["catalog_label"] = test["label"].to_numpy(dtype=np.int8)
    pred["evaluated"] = with_class
    pred["flags"] = flags
    pred["headline"] = evaluated
    for extra in ("truth_id", "truth_sep_arcsec"):
        if extra in test.columns:
            pred[extra] = test[extra].to_numpy()
    if extras.morphology is not None:
        for name, values in extras.morphology.columns.items():
            pred[name] = np.asarray(values, dtype=np.float64)
    for b in bands:
        if f"mag_{b}" in test.columns:
            pred[f"mag_{b}"] = test[f"mag_{b}"].to_numpy(dtype=np.float64)
    pred.to_parquet(out_dir / "predictions.parquet", index=False)

    png = {name: plot_dir / f"{name}.png" for name in PLOT_NAMES + OPTIONAL_PLOT_NAMES}
    blocks = scored_blocks(doc)
    plots.plot_roc(y, sc, {k: v["auc"]["value"] for k, v in blocks.items()}, png["roc"])
    plots.plot_purity_completeness(doc, cfg["reduce"]["detection_band"],
                                   png["purity_completeness_vs_mag"])
    plots.plot_reliability(y, sc, {k: v["cal"]["value"] for k, v in blocks.items()},
                           png["reliability"])
    if p_raw is not None:
        plots.plot_reliability_calibration(
            y, p_raw, sc["model"], doc["calibration"]["uncalibrated"]["cal"]["value"],
            doc["model"]["cal"]["value"], float(extras.temperature),
            png["reliability_calibration"])
    worst = plots.worst_misclassified(y, sc["model"], GALLERY_SIZE)
    eval_rows = test[evaluated].iloc[worst]
    cutouts = read_cutouts(eval_rows) if len(worst) else np.zeros((0, len(bands), 1, 1))
    plots.plot_gallery(cutouts, y[worst], sc["model"][worst], eval_rows["object_id"].tolist(),
                       bands, png["worst_misclassified"],
                       float(cfg["instrument"]["pixel_scale_arcsec"]))
    if extras.forward is not None:
        _saliency(extras, test[evaluated], y, sc["model"], read_cutouts, bands, rng,
                  png["saliency"])
    else:
        log.info("saliency maps skipped: the classifier exposes no differentiable torch model")
    log.info("wrote %s, predictions.parquet and %d plots", out_dir / "metrics.json",
             len(list(plot_dir.glob("*.png"))))
    return doc


def _saliency(
    extras: Extras,
    rows: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    read_cutouts: Callable[[pd.DataFrame], np.ndarray],
    bands: list[str],
    rng: np.random.Generator,
    path: Path,
) -> None:
    """Integrated-gradients figure for a sample of stars, galaxies and failures."""
    groups = saliency_sample(y, p, SALIENCY_PER_GROUP, rng)
    order = np.concatenate([g for g in groups.values()]).astype(np.int64)
    if order.size == 0:
        log.info("saliency maps skipped: no test object to show")
        return
    cutouts = read_cutouts(rows.iloc[order])
    attributions, gap = integrated_gradients(extras.forward, cutouts, device=extras.device)
    log.info("saliency: integrated gradients of %d objects, largest completeness gap %.3g "
             "(logit units)", order.size, float(np.max(np.abs(gap))))
    plot_saliency(cutouts, attributions, groups, y[order], p[order],
                  rows["object_id"].to_numpy()[order].tolist(), bands, path)


def _load_classifier(model_dir: Path):
    from astroflow.train.inference import load_classifier

    return load_classifier(model_dir)


def _load_morphology(model_dir: Path):
    from astroflow.train.inference import load_morphology

    return load_morphology(model_dir)


def check_same_split(classification: Path, morphology: Path) -> None:
    """Raise when the two tasks' split tables differ: evaluation scores both on one test set."""
    a, b = (pd.read_parquet(p, columns=["object_id", "split"]).astype({"split": str})
            for p in (classification, morphology))
    if not a.equals(b):
        raise ValueError(f"{morphology}: the morphology model's split differs from {classification}"
                         "; retrain both from the same reduce outputs and config")


def _set_threads(threads: int) -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(max(1, threads))


def prepare_test_table(
    cfg: dict, objects: pd.DataFrame, truth: str | Path | None
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Split the object table into training and test rows and give the test rows a class.

    Returns
    -------
    train, test : DataFrame
        ``split == 'train'`` rows without a ``train.exclude_flags`` flag (what the catalog
        baselines learn from, as the model did) and ``split == 'test'`` rows; ``test`` has
        ``true_label`` (and ``truth_id``, ``truth_sep_arcsec`` with a truth table).
    truth_source : {"truth", "labels"}
    """
    train = objects[(objects["split"] == "train").to_numpy()
                    & ~flag_mask(object_flags(objects), cfg["train"]["exclude_flags"])]
    train = train.reset_index(drop=True)
    test = objects[objects["split"] == "test"].reset_index(drop=True)
    if truth_is_given(truth):
        radius = float(cfg["evaluate"]["truth_match_radius_arcsec"])
        label, truth_id, sep = match_truth(test, Path(truth), radius)
        test = test.assign(true_label=label, truth_id=truth_id, truth_sep_arcsec=sep)
        n_unmatched = int((label < 0).sum())
        log.info("truth %s: %d of %d test objects matched within %.2f arcsec, %d unmatched "
                 "(excluded)", truth, len(test) - n_unmatched, len(test), radius, n_unmatched)
        source = "truth"
    else:
        test = test.assign(true_label=test["label"].to_numpy(dtype=np.int8))
        log.info("no truth table: evaluating on catalog labels, %d of %d test objects labelled",
                 int((test["true_label"] >= 0).sum()), len(test))
        source = "labels"
    if not (test["true_label"] >= 0).any():
        raise ValueError(f"no test object has a true class ({source}); nothing to evaluate")
    return train, test, source


def run(
    cfg: dict,
    model: str,
    index_path: Path,
    train_dir: Path,
    truth: str | Path | None,
    out_dir: Path,
    threads: int = 1,
    load_classifier: Callable[[Path], object] = _load_classifier,
    exposures: list[str] | None = None,
    calib_dir: str | Path | None = None,
    morphology_dir: str | Path | None = None,
) -> dict:
    """Evaluate one trained model; returns the metrics document.

    ``load_classifier(model_dir)`` must return an object with
    ``predict_proba(images, tta=bool) -> p_galaxy`` (default:
    ``astroflow.train.inference.load_classifier``); when it also has ``model`` (a
    differentiable ``torch.Tensor -> p_galaxy`` module) the saliency maps are drawn.
    ``exposures`` (raw science exposures) and ``calib_dir`` (masters of ``reduce calib``) feed
    the SExtractor baselines, which are skipped with a reason without them.
    ``morphology_dir`` (``results/train/<model>/morphology``) adds the morphology task.
    """
    import mlflow

    from astroflow import tracking

    index_path, train_dir, out_dir = Path(index_path), Path(train_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _set_threads(threads)
    index, objects = load_objects(index_path)
    train_run = read_json(train_dir / "run.json", "train run record")
    if "run_id" not in train_run:
        raise KeyError(f"{train_dir / 'run.json'}: train run record lacks 'run_id'")
    train_run_id = train_run["run_id"]
    objects = attach_split(objects, train_dir / "split.parquet")
    upstream = {"train": train_run_id}
    if morphology_dir:
        morphology_dir = Path(morphology_dir)
        morph_run = read_json(morphology_dir / "run.json", "morphology train run record")
        if "run_id" not in morph_run:
            raise KeyError(f"{morphology_dir / 'run.json'}: train run record lacks 'run_id'")
        upstream["train_morphology"] = morph_run["run_id"]
        check_same_split(train_dir / "split.parquet", morphology_dir / "split.parquet")

    with tracking.stage_run(
        cfg,
        stage="evaluate",
        run_name=f"evaluate-{model}",
        dataset_digest=index["digest"],
        upstream_run_ids=upstream,
        tags={"model": model},
        dataset_source=index_path,
        input_files={"truth": truth} if truth_is_given(truth) else None,
    ):
        run_id = mlflow.active_run().info.run_id
        train, test, source = prepare_test_table(cfg, objects, truth)
        reader = CutoutReader(index, index_path)
        classifier = load_classifier(train_dir / "model")
        tta = bool(cfg["evaluate"]["tta"])
        log.info("scoring %d test objects, test-time augmentation %s", len(test),
                 "on (8 rotations/flips averaged)" if tta else "off")
        batch_size = int(cfg["evaluate"]["batch_size"])
        p_model = score_model(classifier.predict_proba, reader.batches(test, batch_size),
                              len(test), tta=tta)
        extras = Extras(forward=getattr(classifier, "model", None),
                        device=str(getattr(classifier, "device", "cpu")))
        if cfg["evaluate"]["calibration"] == "temperature":
            val = objects[(objects["split"] == "val").to_numpy() & (objects["label"] >= 0)
                          & ~flag_mask(object_flags(objects), cfg["train"]["exclude_flags"])]
            log.info("temperature scaling: scoring %d labelled validation objects", len(val))
            p_val = score_model(classifier.predict_proba, reader.batches(val, batch_size),
                                len(val), tta=tta)
            try:
                extras.temperature = fit_temperature(p_val, val["label"].to_numpy())
            except ValueError as exc:
                raise ValueError(f"{train_dir / 'split.parquet'}: evaluate.calibration is "
                                 f"'temperature' but {exc}") from exc
            extras.n_val = len(val)
            extras.p_uncalibrated = p_model
            p_model = apply_temperature(p_model, extras.temperature)
        sex = score_sextractor(cfg, train, test, exposures, calib_dir, threads=threads)
        if sex.skipped:
            log.warning("SExtractor baselines skipped: %s", sex.skipped)
            extras.skipped = {name: sex.skipped for name in SEXTRACTOR_BASELINES}
        extras.sextractor = sex.info
        scores = {"model": p_model, **sex.scores, **score_baselines(
            train, test, list(cfg["instrument"]["bands"]), int(cfg["seed"]), n_jobs=threads
        )}
        if morphology_dir:
            regressor = _load_morphology(morphology_dir / "model")
            extras.morphology = evaluate_morphology(cfg, train, test, truth, source,
                                                    regressor.predict, reader.batches,
                                                    out_dir / "plots")
        doc = evaluate_scores(cfg, test, scores, source, reader.read, out_dir, extras)
        mlflow.log_metrics(headline_mlflow_metrics(doc))
        if "morphology" in doc:
            mlflow.log_metrics(morphology_mlflow_metrics(doc["morphology"]))
        if sex.skipped:
            mlflow.set_tag("sextractor_skipped", sex.skipped[:5000])
        if extras.temperature is not None:
            mlflow.log_metric("calibration_temperature", extras.temperature)
        mlflow.log_metric("n_test_unscored", int((test["true_label"] < 0).sum()))
        mlflow.log_metric("n_test_flag_excluded", doc["flags"]["n_excluded"])
        mlflow.log_param("evaluate_truth_source", source)
        mlflow.log_artifact(str(out_dir / "metrics.json"))
        mlflow.log_artifact(str(out_dir / "predictions.parquet"))
        mlflow.log_artifacts(str(out_dir / "plots"), artifact_path="plots")

    with open(out_dir / "run.json", "w") as fh:
        json.dump({"run_id": run_id, "train_run_id": train_run_id}, fh, indent=2)
        fh.write("\n")
    log.info("evaluate-%s: model AUC %s on %d objects (MLflow run %s)", model,
             doc["model"]["auc"]["value"], doc["n_test"], run_id)
    return doc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astroflow evaluate",
        description="Score a trained model and the catalog baselines on the held-out region.",
    )
    add_config_args(parser)
    parser.add_argument("--model", required=True, help="model name (train.models entry)")
    parser.add_argument("--index", required=True, type=Path, help="reduce index.json")
    parser.add_argument("--train-dir", required=True, type=Path,
                        help="train output folder (model/, split.parquet, run.json)")
    # nargs="?": a rule that expands an empty input list leaves "--truth" without a value.
    parser.add_argument("--truth", nargs="?", const="", default="",
                        help="truth catalog (ECSV) to evaluate against; '', 'none' or no value "
                        "= the catalog labels")
    parser.add_argument("--out-dir", required=True, type=Path, help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    # Both optional: without them the SExtractor baselines are skipped with a note.
    parser.add_argument("--exposures", nargs="*", default=[], metavar="FILE",
                        help="raw science exposures (any band/field; grouped by OBJECT and "
                        "FILTER) for the SExtractor CLASS_STAR/SPREAD_MODEL baselines")
    parser.add_argument("--exposures-from", default=None, metavar="LIST",
                        help="file listing those exposures, one a line (the workflow's "
                        "results/reduce/plan/science.txt), added to --exposures")
    parser.add_argument("--calib", default=None, metavar="DIR",
                        help="masters folder of `astroflow reduce calib` (masters.json), to "
                        "calibrate those exposures")
    parser.add_argument("--morphology-dir", nargs="?", const="", default="", type=str,
                        help="train output folder of the morphology task (model/, split.parquet,"
                        " run.json); '' or no value = no morphology evaluation")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``astroflow evaluate``."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = resolve_config(args)
    run(cfg, args.model, args.index, args.train_dir, args.truth, args.out_dir, args.threads,
        exposures=args.exposures + (read_list(args.exposures_from) if args.exposures_from
                                    else []),
        calib_dir=args.calib,
        morphology_dir=args.morphology_dir or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
