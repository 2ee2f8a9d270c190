"""Evaluate the morphology task: the regressor and two baselines on the test galaxies.

Test objects are the classification test split's objects that truly are galaxies and have a
true Sersic index and ellipticity: from the simulator's truth table when evaluation has one
(``truth_source: truth``), else from the labels catalog (``label == 1`` with finite
``label_sersic_n``/``label_ellipticity``). Scorers:

model
    The regressor.
moments
    The classical baseline (:mod:`astroflow.evaluate.morphology_baseline`, on the
    detection-band cutout).
training_mean
    The same value for every galaxy: the mean of the training galaxies' catalog labels in the
    space each quantity is regressed and scored in (``10**mean(log10 n)``, ``mean |g|``), i.e.
    the regressor's own target standardisation mean. A scorer that does not beat it measures
    nothing; its Pearson correlation and slope are 0 by definition
    (:mod:`astroflow.evaluate.morphology_metrics`).

All are scored on exactly these objects, overall and per magnitude bin (``evaluate.mag_bins``),
with paired percentile-bootstrap intervals
(:func:`astroflow.evaluate.bootstrap.bootstrap_samples`) from a stream of their own, so adding
the task leaves the classification metrics as they were. The same resamples give the paired
deltas ``model - baseline`` of |bias|, NMAD, outlier fraction, Pearson r and |slope - 1|
(:mod:`astroflow.evaluate.paired_delta`) with a verdict each.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table

from astroflow.evaluate import morphology_plots
from astroflow.evaluate.bootstrap import (
    Bootstrap,
    bootstrap_indices,
    bootstrap_samples,
    interval_blocks,
)
from astroflow.evaluate.morphology_baseline import measure_morphology
from astroflow.evaluate.morphology_metrics import (
    MORPHOLOGY_METRICS,
    OUTLIER_THRESHOLD,
    QUANTITIES,
)
from astroflow.evaluate.paired_delta import MORPHOLOGY_COMPARISONS as COMPARISONS
from astroflow.evaluate.paired_delta import delta_mlflow_metrics, paired_delta
from astroflow.evaluate.summary import magnitude_bin_masks

log = logging.getLogger(__name__)

#: Mixed into the master seed: the morphology bootstrap has its own random stream.
_SEED_STREAM = zlib.crc32(b"evaluate-morphology")
#: Name of the classical baseline in metrics.json and predictions.parquet.
BASELINE = "moments"
#: Name of the constant baseline (the training galaxies' mean) in metrics.json.
TRAINING_MEAN = "training_mean"
#: Plots written to ``<out-dir>/plots/`` when the morphology task is evaluated.
PLOT_NAMES = ("morphology_pred_vs_true", "morphology_residual_vs_mag")


@dataclass(frozen=True)
class TrainingMean:
    """The training galaxies' mean Sersic index (geometric: ``10**mean(log10 n)``) and mean
    ellipticity ``|g|``, and how many galaxies it is the mean of."""

    sersic_n: float
    ellipticity: float
    n_galaxies: int

    def prediction(self, n: int) -> np.ndarray:
        """``(n, 2)`` predictions of the constant scorer, in ``QUANTITIES`` order."""
        return np.tile(np.array([self.sersic_n, self.ellipticity], dtype=np.float64), (n, 1))

    def as_dict(self) -> dict:
        return {"sersic_n": self.sersic_n, "ellipticity": self.ellipticity,
                "n_galaxies": self.n_galaxies}


def training_mean(train: pd.DataFrame, source: str = "training split") -> TrainingMean:
    """:class:`TrainingMean` of the training objects that the regressor trains on: catalog
    galaxies (``label == 1``) with a finite ``label_sersic_n > 0`` and a finite
    ``label_ellipticity``.

    Raises
    ------
    ValueError
        When the table lacks the columns or holds no such galaxy.
    """
    missing = [c for c in ("label", "label_sersic_n", "label_ellipticity")
               if c not in train.columns]
    if missing:
        raise ValueError(f"{source}: no column(s) {missing} for the training-mean baseline")
    n = train["label_sersic_n"].to_numpy(dtype=np.float64)
    e = train["label_ellipticity"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = (train["label"].to_numpy() == 1) & np.isfinite(e) & np.isfinite(n) & (n > 0)
    if not ok.any():
        raise ValueError(f"{source}: no labelled galaxy with a catalog Sersic index and "
                         "ellipticity; the training-mean baseline needs one")
    return TrainingMean(float(10 ** np.mean(np.log10(n[ok]))), float(np.mean(e[ok])),
                        int(ok.sum()))


@dataclass
class MorphologyResult:
    """The ``morphology`` block of metrics.json and per-test-row prediction columns."""

    block: dict
    columns: dict[str, np.ndarray]


def true_morphology(
    test: pd.DataFrame, truth: str | Path | None, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(sersic_n, ellipticity)`` of each test row that truly is a galaxy; NaN elsewhere.

    With ``source == "truth"`` the values come from the truth table row matched to the object
    (``truth_id``), else from the labels catalog columns of the object table.
    """
    n = np.full(len(test), np.nan)
    e = np.full(len(test), np.nan)
    if source == "truth":
        table = Table.read(truth, format="ascii.ecsv")
        missing = [c for c in ("id", "sersic_n", "ellipticity") if c not in table.colnames]
        if missing:
            raise KeyError(
                f"{truth}: truth catalog lacks column(s) {missing} for the morphology task"
            )
        ids = np.asarray(table["id"]).astype(str)
        row_of = dict(zip(ids.tolist(), range(len(ids)), strict=True))
        galaxy = test["true_label"].to_numpy() == 1
        rows = np.array(
            [
                row_of.get(str(t), -1) if g else -1
                for t, g in zip(test["truth_id"], galaxy, strict=True)
            ],
            dtype=np.int64,
        )
        ok = rows >= 0
        n[ok] = np.asarray(table["sersic_n"], dtype=float)[rows[ok]]
        e[ok] = np.asarray(table["ellipticity"], dtype=float)[rows[ok]]
    elif {"label_sersic_n", "label_ellipticity"} <= set(test.columns):
        galaxy = test["label"].to_numpy() == 1
        n[galaxy] = test["label_sersic_n"].to_numpy(dtype=float)[galaxy]
        e[galaxy] = test["label_ellipticity"].to_numpy(dtype=float)[galaxy]
    n[~(n > 0)] = np.nan
    return n, e


def _bootstrap(true: np.ndarray, pred: np.ndarray, indices: np.ndarray) -> dict[str, Bootstrap]:
    """Each quantity's metrics on all galaxies and on every resample of ``indices``."""
    return {
        q: bootstrap_samples(true[:, k], pred[:, k], MORPHOLOGY_METRICS[q], indices)
        for k, q in enumerate(QUANTITIES)
    }


def _deltas(model: Mapping[str, Bootstrap], baseline: Mapping[str, Bootstrap]) -> dict:
    """Per quantity, the paired deltas ``model - baseline`` of ``MORPHOLOGY_COMPARISONS``."""
    return {
        q: {key: paired_delta(model[q], baseline[q], c) for key, c in COMPARISONS.items()}
        for q in QUANTITIES
    }


def _scored(true: np.ndarray, preds: Mapping[str, np.ndarray], indices: np.ndarray) -> dict:
    """``{"model", "baselines", "delta_vs"}`` of one set of galaxies, from one set of
    resamples: each scorer's metrics with intervals and, per baseline and quantity, the paired
    deltas ``model - baseline`` (:func:`_deltas`) with their verdicts."""
    boots = {name: _bootstrap(true, p, indices) for name, p in preds.items()}
    model = boots.pop("model")
    return {
        "model": {q: interval_blocks(b) for q, b in model.items()},
        "baselines": {
            name: {q: interval_blocks(b) for q, b in boot.items()} for name, boot in boots.items()
        },
        "delta_vs": {name: _deltas(model, boot) for name, boot in boots.items()},
    }


def summarize_morphology(
    true: np.ndarray,
    preds: Mapping[str, np.ndarray],
    mag: np.ndarray,
    mag_bins: list[float],
    n_bootstrap: int,
    rng: np.random.Generator,
    truth_source: str,
    *,
    train_mean: TrainingMean,
) -> dict:
    """The ``morphology`` block of metrics.json.

    Parameters
    ----------
    true : ``(N, 2)`` array
        True ``(sersic_n, ellipticity)`` of the test galaxies.
    preds : mapping
        ``{"model": (N, 2), "moments": (N, 2)}``, NaN for unmeasured.
    mag : ``(N,)`` array
        Detection-band magnitude [AB mag] for the bins.
    mag_bins, n_bootstrap, rng, truth_source
        As for the classification summary; ``rng`` is seeded, and one set of resamples
        serves the model and every baseline.
    train_mean : TrainingMean
        The training galaxies' mean (:func:`training_mean`), scored as the baseline
        ``training_mean`` (the same prediction for every galaxy) and recorded in the block.

    Returns
    -------
    dict
        Also holds ``delta_vs`` (overall and in each ``by_magnitude`` bin): per baseline and
        quantity, the paired ``model - baseline`` differences of ``abs_bias`` (``|bias|``),
        ``nmad``, ``outlier_frac``, ``pearson_r`` and ``abs_slope_minus_1`` (``|slope - 1|``),
        each with ``value``, ``ci95`` and ``verdict`` (``better`` when the interval lies below
        0, except for ``pearson_r``, where higher is better: above 0).
    """
    if "model" not in preds:
        raise ValueError("summarize_morphology: preds must include 'model'")
    if TRAINING_MEAN in preds:
        raise ValueError(f"summarize_morphology: {TRAINING_MEAN!r} is made from train_mean, "
                         "not passed in preds")
    true = np.asarray(true, dtype=np.float64)
    preds = {**preds, TRAINING_MEAN: train_mean.prediction(len(true))}
    indices = bootstrap_indices(len(true), n_bootstrap, rng)
    block = {
        "n_test": len(true),
        "truth_source": truth_source,
        "outlier_thresholds": {
            "sersic_n_dex": OUTLIER_THRESHOLD["sersic_n"],
            "ellipticity": OUTLIER_THRESHOLD["ellipticity"],
        },
        "training_mean": train_mean.as_dict(),
        "n_unmeasured": {
            name: int((~np.isfinite(p)).any(axis=1).sum()) for name, p in preds.items()
        },
        **_scored(true, preds, indices),
        "by_magnitude": [],
    }
    for i, mask in enumerate(magnitude_bin_masks(mag, mag_bins)):
        sub = bootstrap_indices(int(mask.sum()), n_bootstrap, rng)
        block["by_magnitude"].append(
            {
                "mag_lo": float(mag_bins[i]),
                "mag_hi": float(mag_bins[i + 1]),
                "n": int(mask.sum()),
                **_scored(true[mask], {name: p[mask] for name, p in preds.items()}, sub),
            }
        )
    return block


def predict_batches(
    predict: Callable[..., np.ndarray],
    batches: Iterable[np.ndarray],
    band_index: int,
    tta: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Model and baseline ``(N, 2)`` predictions over cutout batches, in table order."""
    model, baseline = [], []
    for images in batches:
        y = np.asarray(predict(images, tta=tta), dtype=np.float64).reshape(len(images), 2)
        model.append(y)
        baseline.append(measure_morphology(images[:, band_index]))
    if not model:
        return np.zeros((0, 2)), np.zeros((0, 2))
    return np.concatenate(model), np.concatenate(baseline)


def evaluate_morphology(
    cfg: dict,
    train: pd.DataFrame,
    test: pd.DataFrame,
    truth: str | Path | None,
    truth_source: str,
    predict: Callable[..., np.ndarray],
    batches: Callable[[pd.DataFrame, int], Iterable[np.ndarray]],
    plot_dir: Path,
) -> MorphologyResult:
    """Score the morphology model and the baselines; write the two plots.

    ``train`` holds the training split's objects (their catalog labels give the
    ``training_mean`` baseline, :func:`training_mean`); ``predict(images, tta=bool) -> (n, 2)``
    is the loaded regressor (:meth:`astroflow.train.inference.MorphologyPredictor.predict`);
    ``batches(rows, batch_size)`` yields the cutouts of ``rows`` in order.

    Raises
    ------
    ValueError
        When no test galaxy has a true Sersic index and ellipticity, or no training galaxy
        has catalog morphology.
    """
    train_mean = training_mean(train)
    n_true, e_true = true_morphology(test, truth, truth_source)
    scored = np.isfinite(n_true) & np.isfinite(e_true)
    if not scored.any():
        raise ValueError(
            f"morphology: no test galaxy has a true Sersic index and ellipticity "
            f"({truth_source}); nothing to evaluate"
        )
    rows = test[scored]
    band = cfg["reduce"]["detection_band"]
    band_index = list(cfg["instrument"]["bands"]).index(band)
    log.info(
        "morphology: scoring %d test galaxies (%s), model and %s baseline on band %s",
        len(rows),
        truth_source,
        BASELINE,
        band,
    )
    model, baseline = predict_batches(
        predict,
        batches(rows, int(cfg["evaluate"]["batch_size"])),
        band_index,
        bool(cfg["evaluate"]["tta"]),
    )
    true = np.column_stack([n_true[scored], e_true[scored]])
    preds = {"model": model, BASELINE: baseline}
    mag = rows[f"mag_{band}"].to_numpy(dtype=np.float64)
    rng = np.random.default_rng([int(cfg["seed"]), _SEED_STREAM])
    block = summarize_morphology(
        true,
        preds,
        mag,
        list(cfg["evaluate"]["mag_bins"]),
        int(cfg["evaluate"]["n_bootstrap"]),
        rng,
        truth_source,
        train_mean=train_mean,
    )
    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    blocks = {"model": block["model"], **block["baselines"]}
    morphology_plots.plot_pred_vs_true(
        true, preds, blocks, block["training_mean"], plot_dir / "morphology_pred_vs_true.png"
    )
    morphology_plots.plot_residual_vs_mag(
        true,
        {**preds, TRAINING_MEAN: train_mean.prediction(len(true))},
        mag,
        block,
        band,
        plot_dir / "morphology_residual_vs_mag.png",
    )
    columns = {"true_sersic_n": n_true, "true_ellipticity": e_true}
    for name, pred in preds.items():
        suffix = "" if name == "model" else f"_{name}"
        for k, q in enumerate(QUANTITIES):
            col = np.full(len(test), np.nan)
            col[scored] = pred[:, k]
            columns[f"{q}{suffix}"] = col
    m = block["model"]
    log.info(
        "morphology: model NMAD %.3f dex (n), %.3f (|g|); Pearson r %.3f (log n), %.3f (|g|); "
        "slope %.3f, %.3f on %d galaxies (training mean n %.2f, |g| %.3f)",
        *(_number(m[q][k]["value"]) for k in ("nmad", "pearson_r", "slope") for q in QUANTITIES),
        block["n_test"],
        train_mean.sersic_n,
        train_mean.ellipticity,
    )
    return MorphologyResult(block, columns)


def _number(x: float | None) -> float:
    return np.nan if x is None else float(x)


def morphology_mlflow_metrics(block: Mapping) -> dict[str, float]:
    """Flat MLflow metrics ``morphology_model_sersic_n_nmad`` (``_lo``, ``_hi``),
    ``morphology_baseline_moments_...``, ``morphology_baseline_training_mean_...``, the
    overall deltas ``morphology_delta_vs_moments_sersic_n_nmad`` (``_lo``, ``_hi``,
    ``_verdict``; ``..._pearson_r``, ``..._abs_slope_minus_1``, and the same against
    ``training_mean``) and ``morphology_n_test``; undefined values left out."""
    flat: dict[str, float] = {"morphology_n_test": float(block["n_test"])}
    scorers = {
        "model": block["model"],
        **{f"baseline_{k}": v for k, v in block["baselines"].items()},
    }
    for prefix, scores in scorers.items():
        for quantity, metrics in scores.items():
            for key, metric in metrics.items():
                for suffix, value in (
                    ("", metric["value"]),
                    ("_lo", metric["ci95"][0]),
                    ("_hi", metric["ci95"][1]),
                ):
                    if value is not None:
                        flat[f"morphology_{prefix}_{quantity}_{key}{suffix}"] = float(value)
    for name, quantities in block["delta_vs"].items():
        for quantity, deltas in quantities.items():
            flat.update(delta_mlflow_metrics(f"morphology_delta_vs_{name}_{quantity}", deltas))
    return flat
