"""Assemble metrics.json: model and baselines, overall and per magnitude bin, with intervals,
and the paired deltas ``model - baseline`` with their verdicts.

Everything here is a pure function of arrays, so the whole metrics document can be tested
without a model, a Zarr store or MLflow. The document's shape is fixed by
``metrics_schema.json`` (next to this module) and checked by :func:`validate_metrics` before the
stage writes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import numpy as np

from astroflow.evaluate.bootstrap import bootstrap_indices, bootstrap_samples, interval_blocks
from astroflow.evaluate.metrics import BY_CLASS, HEADLINE
from astroflow.evaluate.paired_delta import (
    CLASSIFICATION_COMPARISONS,
    delta_mlflow_metrics,
    deltas_vs,
)
from astroflow.reduce.flags import FLAG_BITS, flag_mask

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("metrics_schema.json")
BINNED = {**HEADLINE, **BY_CLASS}


def magnitude_bin_masks(mag: np.ndarray, edges: list[float]) -> list[np.ndarray]:
    """Boolean masks of ``edges[i] <= mag < edges[i+1]`` (the last bin includes its upper edge).

    Objects with a non-finite magnitude or outside the edges fall in no bin.
    """
    mag = np.asarray(mag, dtype=np.float64)
    masks = []
    for i, (lo, hi) in enumerate(zip(edges, edges[1:], strict=False)):
        upper = mag <= hi if i == len(edges) - 2 else mag < hi
        masks.append((mag >= lo) & upper)
    return masks


def _scorer_metrics(
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    metrics: Mapping,
    indices: np.ndarray,
) -> tuple[dict, dict, dict]:
    """Model block, baseline blocks and the paired deltas ``model - baseline``, all from
    one set of resamples (``indices``)."""
    boots = {name: bootstrap_samples(y, p, metrics, indices) for name, p in scores.items()}
    model = boots.pop("model")
    baselines = {name: interval_blocks(boot) for name, boot in boots.items()}
    deltas = deltas_vs(model, boots, CLASSIFICATION_COMPARISONS)
    return interval_blocks(model), baselines, deltas


def summarize(
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    mag: np.ndarray,
    mag_bins: list[float],
    n_bootstrap: int,
    rng: np.random.Generator,
    truth_source: str,
    skipped: Mapping[str, str] | None = None,
) -> dict:
    """The metrics.json document.

    Parameters
    ----------
    y : int array
        True class of each test object (1 galaxy, 0 star).
    scores : mapping
        ``{"model": p_galaxy, "<baseline>": p_galaxy, ...}``, all on the objects of ``y``.
    mag : float array
        Detection-band magnitude of each object [AB mag], for the bins.
    mag_bins : list of float
        Bin edges [AB mag].
    n_bootstrap : int
        Resamples per interval.
    rng : numpy Generator
        Seeded; the same resamples serve the model and the baselines.
    truth_source : {"truth", "labels"}
        Where ``y`` came from.
    skipped : mapping, optional
        ``{baseline: reason}`` of baselines that could not be scored; they appear in
        ``baselines`` as ``{"skipped": reason}`` (and not in ``by_magnitude`` or ``delta_vs``).

    Returns
    -------
    dict
        ``n_test``, ``truth_source``, ``model``, ``baselines``, ``delta_vs`` (per scored
        baseline, the paired ``model - baseline`` deltas of
        :data:`~astroflow.evaluate.paired_delta.CLASSIFICATION_COMPARISONS` with a verdict) and
        ``by_magnitude`` (the same per bin, with the bin's own shared resamples).
    """
    y = np.asarray(y, dtype=np.int64)
    if "model" not in scores:
        raise ValueError("summarize: scores must include 'model'")
    for name, p in scores.items():
        if np.shape(p) != y.shape:
            raise ValueError(f"summarize: scores[{name!r}] has shape {np.shape(p)}, "
                             f"labels have {y.shape}")
    indices = bootstrap_indices(y.size, n_bootstrap, rng)
    model, baselines, deltas = _scorer_metrics(y, scores, HEADLINE, indices)
    doc = {
        "n_test": int(y.size),
        "truth_source": truth_source,
        "model": model,
        "baselines": {**baselines,
                      **{name: {"skipped": str(why)} for name, why in (skipped or {}).items()}},
        "delta_vs": deltas,
        "by_magnitude": [],
    }
    masks = magnitude_bin_masks(mag, mag_bins)
    for i, mask in enumerate(masks):
        yb = y[mask]
        sb = {name: np.asarray(p)[mask] for name, p in scores.items()}
        b_model, b_baselines, b_deltas = _scorer_metrics(
            yb, sb, BINNED, bootstrap_indices(yb.size, n_bootstrap, rng)
        )
        doc["by_magnitude"].append({
            "mag_lo": float(mag_bins[i]),
            "mag_hi": float(mag_bins[i + 1]),
            "n": int(yb.size),
            "n_galaxy": int(yb.sum()),
            "n_star": int(yb.size - yb.sum()),
            "model": b_model,
            "baselines": b_baselines,
            "delta_vs": b_deltas,
        })
        log.info("magnitude bin %d/%d [%.1f, %.1f): %d objects", i + 1, len(masks),
                 mag_bins[i], mag_bins[i + 1], yb.size)
    return doc


def flag_blocks(
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    flags: np.ndarray,
    excluded: list[str],
    n_bootstrap: int,
    rng: np.random.Generator,
) -> dict:
    """metrics.json's ``flags`` block: how each scorer does on the objects of each flag.

    Parameters
    ----------
    y, scores
        True classes and every scorer's ``p_galaxy`` of all test objects with a true class,
        flagged or not.
    flags : int array
        Their ``flags`` bitmask (:data:`astroflow.reduce.flags.FLAG_BITS`).
    excluded : list of str
        ``evaluate.exclude_flags``: the flags left out of the headline metrics.

    Returns
    -------
    dict
        ``excluded``, ``n_excluded`` (objects left out of the headline) and ``by_flag``:
        per flag its ``bit``, whether it is ``excluded``, ``n``, ``n_galaxy``, ``n_star`` and
        ``scorers`` (``{name: {"auc": {"value", "ci95"}}}``, null where undefined), each flag
        with its own resamples shared by the scorers.
    """
    y = np.asarray(y, dtype=np.int64)
    by_flag = {}
    for name, bit in FLAG_BITS.items():
        has = flag_mask(flags, [name])
        yf = y[has]
        indices = bootstrap_indices(yf.size, n_bootstrap, rng)
        by_flag[name] = {
            "bit": bit,
            "excluded": name in excluded,
            "n": int(yf.size),
            "n_galaxy": int(yf.sum()),
            "n_star": int(yf.size - yf.sum()),
            "scorers": {
                scorer: interval_blocks(bootstrap_samples(yf, np.asarray(p)[has],
                                                          {"auc": HEADLINE["auc"]}, indices))
                for scorer, p in scores.items()
            },
        }
    return {
        "excluded": list(excluded),
        "n_excluded": int(flag_mask(flags, excluded).sum()),
        "by_flag": by_flag,
    }


def log_flag_blocks(block: Mapping) -> None:
    """One log line for the headline's exclusions and one per flag present."""
    log.info("headline metrics on clean objects: %d test object(s) with a true class left out "
             "by evaluate.exclude_flags %s", block["n_excluded"], block["excluded"])
    for name, entry in block["by_flag"].items():
        if entry["n"]:
            aucs = ", ".join(f"{scorer} {_number(m['auc']['value'])}" for scorer, m
                             in entry["scorers"].items())
            log.info("flag %s%s: %d objects (%d galaxies, %d stars); AUC %s", name,
                     " (excluded)" if entry["excluded"] else "", entry["n"], entry["n_galaxy"],
                     entry["n_star"], aucs)


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def scored_blocks(doc: Mapping) -> dict[str, Mapping]:
    """``{"model": block, "<baseline>": block, ...}`` without the skipped baselines."""
    return {"model": doc["model"], **{
        name: block for name, block in doc["baselines"].items() if "skipped" not in block
    }}


def validate_metrics(doc: Mapping) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` does not match metrics_schema.json."""
    with open(SCHEMA_PATH) as fh:
        schema = json.load(fh)
    jsonschema.Draft202012Validator(schema).validate(doc)


def headline_mlflow_metrics(doc: Mapping) -> dict[str, float]:
    """Flat MLflow metrics: ``model_auc``, ``model_auc_lo``, ``model_auc_hi``, ...,
    ``baseline_<name>_auc`` ..., and the overall deltas ``delta_vs_<name>_auc`` (``_lo``,
    ``_hi``, ``_verdict``); undefined values are left out (MLflow has no null)."""
    flat: dict[str, float] = {}

    def add(prefix: str, block: Mapping) -> None:
        for key, metric in block.items():
            for suffix, value in (("", metric["value"]), ("_lo", metric["ci95"][0]),
                                  ("_hi", metric["ci95"][1])):
                if value is not None:
                    flat[f"{prefix}_{key}{suffix}"] = float(value)

    for name, block in scored_blocks(doc).items():
        add("model" if name == "model" else f"baseline_{name}", block)
    for name, deltas in doc["delta_vs"].items():
        flat.update(delta_mlflow_metrics(f"delta_vs_{name}", deltas))
    flat["n_test"] = float(doc["n_test"])
    return flat
