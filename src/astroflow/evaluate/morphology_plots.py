"""Morphology plots: predicted versus true Sersic index and ellipticity (with the 1:1 line, the
least-squares line, its slope and the Pearson correlation, and the training mean), residuals
and correlation versus magnitude, for the regressor and the baselines.

Built on ``matplotlib.figure.Figure`` (no pyplot state), like :mod:`astroflow.evaluate.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from astroflow.evaluate.morphology_metrics import (
    OUTLIER_THRESHOLD,
    QUANTITIES,
    residuals,
    scored_values,
)
from astroflow.evaluate.plots import _nan, _save, _style
from astroflow.evaluate.verdict_table import draw_verdict_table, morphology_table

_LABEL = {"sersic_n": "Sersic index n", "ellipticity": "ellipticity |g|"}
_SPACE = {"sersic_n": "log n", "ellipticity": "|g|"}
_RESIDUAL = {"sersic_n": "log10(n_pred / n_true) [dex]", "ellipticity": "|g|_pred - |g|_true"}
#: Name of the constant baseline (as in :mod:`astroflow.evaluate.morphology`).
_TRAINING_MEAN = "training_mean"
_MEAN_STYLE = {"color": "0.35", "ls": ":"}
VERDICT_TITLE = (
    "model - baseline, paired bootstrap 95 % interval (all galaxies, then per magnitude bin)\n"
    "green = model better (|bias|, NMAD, outliers, |slope - 1|: interval below 0; Pearson r: "
    "above 0), red = model worse, grey = undecided"
)


def _fmt(metric: Mapping, fmt: str, name: str) -> str:
    value = metric["value"]
    return fmt.format(value) if value is not None else f"{name} n/a"


def _summary(block: Mapping, quantity: str) -> str:
    q = block[quantity]
    first = ", ".join(
        _fmt(q[key], fmt, key)
        for key, fmt in (
            ("bias", "bias {:+.3f}"),
            ("nmad", "NMAD {:.3f}"),
            ("outlier_frac", "outliers {:.1%}"),
        )
    )
    lo, hi = q["pearson_r"]["ci95"]
    interval = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    r = _fmt(q["pearson_r"], "{:.2f}", "n/a")
    return f"{first}\nPearson r ({_SPACE[quantity]}) {r}{interval}, " + _fmt(
        q["slope"], "slope {:.2f}", "slope")


def _fit_line(quantity: str, t: np.ndarray, p: np.ndarray, slope: float | None,
              lo: float, hi: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The least-squares line of predicted on true over ``[lo, hi]``, in physical units, drawn
    through the means in the scored space (log10 for n)."""
    if slope is None:
        return None
    ts, ps = scored_values(quantity, t, p)
    if not np.all(np.isfinite(ps)):
        return None
    if quantity == "sersic_n":
        x = np.geomspace(lo, hi, 50)
        y = 10 ** (ps.mean() + slope * (np.log10(x) - ts.mean()))
    else:
        x = np.linspace(lo, hi, 50)
        y = ps.mean() + slope * (x - ts.mean())
    return x, y


def plot_pred_vs_true(
    true: np.ndarray,
    preds: Mapping[str, np.ndarray],
    blocks: Mapping[str, Mapping],
    train_mean: Mapping[str, float],
    path: Path,
) -> Path:
    """One panel per scorer (columns) and quantity (rows): prediction against truth, with the
    1:1 line, the least-squares line of predicted on true and the training mean.

    ``true`` and each ``preds[name]`` are ``(N, 2)`` ``(sersic_n, ellipticity)``; ``blocks``
    holds each scorer's metrics (for the panel titles: bias, NMAD, outliers, Pearson r with its
    interval, slope); ``train_mean`` maps ``sersic_n`` and ``ellipticity`` to what the
    ``training_mean`` baseline predicts (a scorer that has learnt nothing lies along that
    horizontal line). Unmeasured objects are not drawn.
    """
    names = list(preds)
    fig = Figure(figsize=(4.6 * len(names), 9))
    axes = np.atleast_2d(fig.subplots(2, len(names), squeeze=False))
    for col, name in enumerate(names):
        for row, quantity in enumerate(QUANTITIES):
            ax = axes[row, col]
            colour = _style(name, col)["color"]
            t, p = true[:, row], preds[name][:, row]
            ok = np.isfinite(p) & np.isfinite(t)
            if quantity == "sersic_n":
                ok &= p > 0
            ax.scatter(t[ok], p[ok], s=6, alpha=0.5, color=colour)
            finite = np.concatenate([t[ok], p[ok]])
            lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
            if quantity == "sersic_n":
                lo, hi = max(lo, 1e-2) / 1.2, hi * 1.2
                ax.set_xscale("log")
                ax.set_yscale("log")
                for axis in (ax.xaxis, ax.yaxis):  # plain 0.5, 1, 2, 4 rather than 2x10^0
                    axis.set_major_locator(ticker.FixedLocator([0.5, 1, 2, 3, 4, 6, 8]))
                    axis.set_major_formatter(ticker.FormatStrFormatter("%g"))
                    axis.set_minor_formatter(ticker.NullFormatter())
            else:
                lo, hi = min(lo, 0.0) - 0.02, max(hi, 0.5) + 0.02
            ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, label="1:1")
            metrics = blocks[name][quantity]
            line = _fit_line(quantity, t, p, metrics["slope"]["value"], lo, hi)
            if line is not None:
                ax.plot(*line, color=colour, lw=1.4, ls="--",
                        label=f"least squares, slope {metrics['slope']['value']:.2f}")
            mean = float(train_mean[quantity])
            ax.axhline(mean, lw=1.2, label=f"training mean {mean:.2f}", **_MEAN_STYLE)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_xlabel(f"true {_LABEL[quantity]}")
            ax.set_ylabel(f"{name}: predicted {_LABEL[quantity]}")
            ax.set_title(
                f"{name} ({int((~ok).sum())} unmeasured)\n{_summary(blocks[name], quantity)}",
                fontsize=8,
            )
            ax.legend(fontsize=7, loc="upper left")
            ax.grid(alpha=0.3)
    fig.suptitle(f"Predicted versus true morphology of {len(true)} test galaxies", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_residual_vs_mag(
    true: np.ndarray,
    preds: Mapping[str, np.ndarray],
    mag: np.ndarray,
    doc: Mapping,
    band: str,
    path: Path,
) -> Path:
    """Residuals and Pearson correlation against the detection-band magnitude, per quantity,
    for every scorer.

    Top two panels: single galaxies' residuals (points; failed measurements and the constant
    ``training_mean`` left out) and per bin the bias with the NMAD as half-width from
    ``doc["by_magnitude"]`` (for ``training_mean`` too: the scatter a constant gets); dashed
    lines mark the outlier thresholds. Below them, per quantity, the Pearson correlation of
    predicted and true per bin with its 95 % interval (``training_mean`` is 0 by definition).
    Last, the verdict table of the paired deltas ``model - baseline``
    (:mod:`astroflow.evaluate.verdict_table`).
    """
    table = morphology_table(doc)
    fig = Figure(figsize=(9, 10.5 + table.height_inch), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[10.5, table.height_inch])
    top = grid[0].subgridspec(3, 2, height_ratios=[3.6, 3.6, 3.3])
    axes = [fig.add_subplot(top[0, :])]
    axes.append(fig.add_subplot(top[1, :], sharex=axes[0]))
    r_axes = [fig.add_subplot(top[2, 0], sharex=axes[0])]
    r_axes.append(fig.add_subplot(top[2, 1], sharex=axes[0], sharey=r_axes[0]))
    bins = doc["by_magnitude"]
    centres = np.array([(b["mag_lo"] + b["mag_hi"]) / 2 for b in bins])
    names = list(preds)
    for row, quantity in enumerate(QUANTITIES):
        ax, r_ax = axes[row], r_axes[row]
        for i, (name, pred) in enumerate(preds.items()):
            style = _MEAN_STYLE if name == _TRAINING_MEAN else _style(name, i)
            shift = 0.08 * (i - (len(names) - 1) / 2)  # side by side in a bin
            if name != _TRAINING_MEAN:
                r = residuals(quantity, true[:, row], pred[:, row])
                ok = np.isfinite(r)
                ax.scatter(mag[ok], r[ok], s=5, alpha=0.35, color=style["color"])
            blocks = [b["model"] if name == "model" else b["baselines"][name] for b in bins]
            med = np.array([_nan(blk[quantity]["bias"]["value"]) for blk in blocks])
            nmad = np.array([_nan(blk[quantity]["nmad"]["value"]) for blk in blocks])
            ax.errorbar(centres + shift, med, yerr=nmad, marker="o", ms=4, capsize=3,
                        label=f"{name}: bias +- NMAD per bin", **style)
            if name == _TRAINING_MEAN:
                continue
            rv = np.array([_nan(blk[quantity]["pearson_r"]["value"]) for blk in blocks])
            ci = np.array([[_nan(v) for v in blk[quantity]["pearson_r"]["ci95"]]
                           for blk in blocks]).reshape(len(blocks), 2)
            err = np.abs(np.vstack([rv - ci[:, 0], ci[:, 1] - rv]))
            r_ax.errorbar(centres + shift, rv, yerr=err, marker="o", ms=4, capsize=3,
                          label=name, **style)
        threshold = OUTLIER_THRESHOLD[quantity]
        for sign in (-1, 1):
            ax.axhline(sign * threshold, color="0.5", ls="--", lw=0.8)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_ylabel(_RESIDUAL[quantity])
        ax.set_title(f"{_LABEL[quantity]} (dashed: outlier threshold +-{threshold})", fontsize=9)
        ax.grid(alpha=0.3)
        r_ax.axhline(0.0, lw=1.2, label=f"{_TRAINING_MEAN} (0)", **_MEAN_STYLE)
        r_ax.axhline(1.0, color="0.4", lw=0.8)
        r_ax.set_title(f"Pearson r of predicted and true {_SPACE[quantity]}, 95 % interval",
                       fontsize=9)
        r_ax.set_xlabel(f"mag_{band} [AB mag]")
        r_ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    r_axes[0].set_ylabel("Pearson r")
    r_axes[0].set_ylim(-0.2, 1.05)
    r_axes[0].legend(fontsize=7, loc="lower left")
    axes[1].set_xlabel(f"mag_{band} [AB mag]")
    counts = ", ".join(str(b["n"]) for b in bins)
    fig.suptitle(f"Morphology residuals versus magnitude (galaxies per bin: {counts})", fontsize=10)
    draw_verdict_table(fig.add_subplot(grid[1]), table, VERDICT_TITLE)
    return _save(fig, path)
