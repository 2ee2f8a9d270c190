"""Evaluation plots: ROC, purity/completeness versus magnitude, reliability (and its change
under post-hoc calibration), worst cutouts.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas, no pyplot global state), so
plotting works headless on a cluster node and from threads. Every function writes one PNG and
returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from astroflow.evaluate.metrics import THRESHOLD
from astroflow.evaluate.verdict_table import classification_table, draw_verdict_table

#: Title of the verdict tables under the per-magnitude plots.
VERDICT_TITLE = ("model - baseline, paired bootstrap 95 % interval (all objects, then per "
                 "magnitude bin): green = model better, red = model worse, grey = undecided")

_STYLE = {
    "model": {"color": "C0", "ls": "-"},
    "concentration": {"color": "C1", "ls": "--"},
    "forest": {"color": "C2", "ls": ":"},
    "class_star": {"color": "C3", "ls": "-."},
    "spread_model": {"color": "C4", "ls": (0, (5, 1, 1, 1, 1, 1))},
}


def _style(name: str, i: int) -> dict:
    return _STYLE.get(name, {"color": f"C{3 + i}", "ls": "-."})


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def roc_curve_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of ``p >= t`` over all distinct ``t`` (from (0, 0))."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.r_[ps[1:] != ps[:-1], True]
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def plot_roc(
    y: np.ndarray, scores: Mapping[str, np.ndarray], aucs: Mapping[str, float | None], path: Path
) -> Path:
    """ROC curves (galaxy = positive) of the model and each baseline, AUC in the legend."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for i, (name, p) in enumerate(scores.items()):
        fpr, tpr = roc_curve_points(y, p)
        auc = aucs.get(name)
        label = f"{name} (AUC {auc:.3f})" if auc is not None else f"{name} (AUC n/a)"
        ax.plot(fpr, tpr, label=label, **_style(name, i))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, label="random")
    ax.set_xlabel("false galaxy rate (stars called galaxies / stars)")
    ax.set_ylabel("galaxy completeness (true positive rate)")
    ax.set_title(f"ROC on {len(y)} test objects")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _nan(x: float | None) -> float:
    return np.nan if x is None else float(x)


def plot_purity_completeness(doc: Mapping, detection_band: str, path: Path) -> Path:
    """Purity and completeness of galaxies and stars (at ``p = 0.5``) per magnitude bin,
    with the bootstrap 95 % band, for the model and the baselines; below them the verdict
    table of the paired deltas ``model - baseline`` (:mod:`astroflow.evaluate.verdict_table`)."""
    bins = doc["by_magnitude"]
    table = classification_table(doc)
    fig = Figure(figsize=(10, 7.5 + table.height_inch), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[7.5, table.height_inch])
    axes = grid[0].subgridspec(2, 2).subplots(sharex=True)
    panels = [
        ("purity_galaxy", "galaxy purity"),
        ("completeness_galaxy", "galaxy completeness"),
        ("purity_star", "star purity"),
        ("completeness_star", "star completeness"),
    ]
    centres = np.array([(b["mag_lo"] + b["mag_hi"]) / 2 for b in bins])
    # Skipped baselines ({"skipped": reason}) have no per-bin values.
    names = ["model", *(k for k, v in doc["baselines"].items() if "skipped" not in v)]
    names = names if bins else []
    for ax, (key, title) in zip(axes.ravel(), panels, strict=True):
        for i, name in enumerate(names):
            blocks = [b["model"] if name == "model" else b["baselines"][name] for b in bins]
            value = np.array([_nan(blk[key]["value"]) for blk in blocks])
            lo = np.array([_nan(blk[key]["ci95"][0]) for blk in blocks])
            hi = np.array([_nan(blk[key]["ci95"][1]) for blk in blocks])
            style = _style(name, i)
            ax.plot(centres, value, marker="o", ms=3, label=name, **style)
            ax.fill_between(centres, lo, hi, color=style["color"], alpha=0.2, lw=0)
        ax.set_title(title)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"{title} (fraction)")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel(f"mag_{detection_band} [AB mag]")
    counts = ", ".join(str(b["n"]) for b in bins)
    fig.suptitle(f"Purity and completeness at p_galaxy = {THRESHOLD} versus magnitude "
                 f"(95 % bootstrap bands; objects per bin: {counts})", fontsize=10)
    axes[0, 0].legend(fontsize=8)
    draw_verdict_table(fig.add_subplot(grid[1]), table, VERDICT_TITLE)
    return _save(fig, path)


def reliability_points(
    y: np.ndarray, p: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean ``p``, galaxy fraction and count per equal-width ``p`` bin (nan where empty)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / counts
        frac = np.bincount(idx, weights=y, minlength=n_bins) / counts
    return mean_p, frac, counts


def plot_reliability(
    y: np.ndarray, scores: Mapping[str, np.ndarray], cals: Mapping[str, float | None], path: Path
) -> Path:
    """Reliability diagram (observed galaxy fraction versus mean p_galaxy) and p histogram."""
    fig = Figure(figsize=(5.5, 7))
    ax, axh = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    edges = np.linspace(0, 1, 11)
    for i, (name, p) in enumerate(scores.items()):
        mean_p, frac, _ = reliability_points(y, p)
        cal = cals.get(name)
        label = f"{name} (CAL {cal:.3f})" if cal is not None else f"{name} (CAL n/a)"
        style = _style(name, i)
        ax.plot(mean_p, frac, marker="o", ms=4, label=label, **style)
        axh.hist(p, bins=edges, histtype="step", color=style["color"], ls=style["ls"])
    title = f"Reliability diagram ({len(y)} test objects, 10 bins)"
    return _finish_reliability(fig, ax, axh, title, path)


def plot_reliability_calibration(
    y: np.ndarray,
    p_before: np.ndarray,
    p_after: np.ndarray,
    cal_before: float | None,
    cal_after: float | None,
    temperature: float,
    path: Path,
) -> Path:
    """Reliability of the model before and after temperature scaling, on the test objects."""
    fig = Figure(figsize=(5.5, 7))
    ax, axh = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    edges = np.linspace(0, 1, 11)
    for p, cal, label, style in (
        (p_before, cal_before, "uncalibrated", {"color": "0.4", "ls": "--"}),
        (p_after, cal_after, f"temperature T={temperature:.2f}", {"color": "C0", "ls": "-"}),
    ):
        mean_p, frac, _ = reliability_points(y, p)
        text = f"{label} (CAL {cal:.3f})" if cal is not None else f"{label} (CAL n/a)"
        ax.plot(mean_p, frac, marker="o", ms=4, label=text, **style)
        axh.hist(p, bins=edges, histtype="step", **style)
    return _finish_reliability(
        fig, ax, axh, f"Model reliability before/after calibration ({len(y)} test objects)", path
    )


def _finish_reliability(fig, ax, axh, title: str, path: Path) -> Path:
    """Diagonal, labels and limits shared by the reliability diagrams, then save."""
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, label="perfect calibration")
    ax.set_ylabel("observed galaxy fraction")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    axh.set_xlabel("predicted p_galaxy")
    axh.set_ylabel("objects per bin")
    axh.set_yscale("log")
    return _save(fig, path)


def composite_bands(bands: Sequence[str]) -> list[int]:
    """Band indices for (red, green, blue): i, r, g when present, else reddest/middle/bluest;
    a single index for fewer than three bands."""
    bands = list(bands)
    if {"i", "r", "g"} <= set(bands):
        return [bands.index("i"), bands.index("r"), bands.index("g")]
    if len(bands) >= 3:
        return [len(bands) - 1, len(bands) // 2, 0]
    return [len(bands) - 1]


def display_image(cutout: np.ndarray, band_idx: Sequence[int]) -> np.ndarray:
    """An asinh-stretched RGB (or grey) image in [0, 1] from one ``(bands, S, S)`` cutout."""
    planes = np.nan_to_num(np.asarray(cutout, dtype=np.float64)[list(band_idx)])
    top = np.percentile(planes, 99.5)
    soft = max(top, 1e-12) / 10.0
    img = np.clip(np.arcsinh(np.clip(planes, 0, None) / soft) / np.arcsinh(10.0), 0, 1)
    return np.moveaxis(img, 0, -1) if img.shape[0] == 3 else img[0]


def worst_misclassified(y: np.ndarray, p: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` objects with the largest ``|y - p|`` among the misclassified
    (called the wrong class at ``p = 0.5``), worst first."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    error = np.abs(y - p)
    wrong = np.flatnonzero((p >= THRESHOLD) != (y == 1))
    return wrong[np.argsort(-error[wrong], kind="stable")][:n]


def plot_gallery(
    cutouts: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    object_ids: Sequence[str],
    bands: Sequence[str],
    path: Path,
    pixel_scale_arcsec: float,
) -> Path:
    """Grid of cutouts (colour composite or one band) with true class and p_galaxy."""
    n = len(cutouts)
    band_idx = composite_bands(bands)
    band_label = "".join(bands[i] for i in band_idx)
    ncol = min(4, max(n, 1))
    nrow = max(1, int(np.ceil(n / ncol)))
    fig = Figure(figsize=(2.4 * ncol, 2.6 * nrow + 0.6))
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no misclassified test objects", ha="center", va="center")
        ax.set_axis_off()
    names = {0: "star", 1: "galaxy"}
    for k in range(n):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        img = display_image(cutouts[k], band_idx)
        # Pixel S//2 holds the object: put its centre at offset 0.
        s = cutouts[k].shape[-1]
        lo, hi = -(s // 2 + 0.5) * pixel_scale_arcsec, (s - s // 2 - 0.5) * pixel_scale_arcsec
        ax.imshow(img, origin="lower", cmap="gray", extent=(lo, hi, lo, hi))
        ax.set_title(f"{object_ids[k]}\ntrue {names[int(y[k])]}, p_gal={p[k]:.2f}", fontsize=8)
        ax.tick_params(labelsize=6)
        if k % ncol == 0:
            ax.set_ylabel("dy [arcsec]", fontsize=7)
        if k >= n - ncol:
            ax.set_xlabel("dx [arcsec]", fontsize=7)
    fig.suptitle(f"Worst misclassified test objects ({band_label}, asinh stretch)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
