"""Morphology plots: predicted versus true Sersic index and ellipticity, residuals versus
magnitude, for the regressor and the moments baseline.

Built on ``matplotlib.figure.Figure`` (no pyplot state), like :mod:`astroflow.evaluate.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from astroflow.evaluate.morphology_metrics import OUTLIER_THRESHOLD, QUANTITIES, residuals
from astroflow.evaluate.plots import _nan, _save, _style
from astroflow.evaluate.verdict_table import draw_verdict_table, morphology_table

_LABEL = {"sersic_n": "Sersic index n", "ellipticity": "ellipticity |g|"}
_RESIDUAL = {"sersic_n": "log10(n_pred / n_true) [dex]", "ellipticity": "|g|_pred - |g|_true"}


def _summary(block: Mapping, quantity: str) -> str:
    parts = []
    for key, fmt in (
        ("bias", "bias {:+.3f}"),
        ("nmad", "NMAD {:.3f}"),
        ("outlier_frac", "outliers {:.1%}"),
    ):
        value = block[quantity][key]["value"]
        parts.append(fmt.format(value) if value is not None else f"{key} n/a")
    return ", ".join(parts)


def plot_pred_vs_true(
    true: np.ndarray, preds: Mapping[str, np.ndarray], blocks: Mapping[str, Mapping], path: Path
) -> Path:
    """One panel per scorer (columns) and quantity (rows): prediction against truth, 1:1 line.

    ``true`` and each ``preds[name]`` are ``(N, 2)`` ``(sersic_n, ellipticity)``; ``blocks``
    holds each scorer's metrics (for the panel titles). Unmeasured objects are not drawn.
    """
    names = list(preds)
    fig = Figure(figsize=(4.2 * len(names), 8))
    axes = np.atleast_2d(fig.subplots(2, len(names), squeeze=False))
    for col, name in enumerate(names):
        for row, quantity in enumerate(QUANTITIES):
            ax = axes[row, col]
            t, p = true[:, row], preds[name][:, row]
            ok = np.isfinite(p) & np.isfinite(t)
            ax.scatter(t[ok], p[ok], s=6, alpha=0.5, color=_style(name, col)["color"])
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
            ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_xlabel(f"true {_LABEL[quantity]}")
            ax.set_ylabel(f"{name}: predicted {_LABEL[quantity]}")
            ax.set_title(
                f"{name} ({int((~ok).sum())} unmeasured)\n{_summary(blocks[name], quantity)}",
                fontsize=8,
            )
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
    """Residuals against the detection-band magnitude, per quantity, for every scorer.

    Points are single galaxies (failed measurements left out); lines with error bars are the
    per-bin bias with the NMAD as half-width from ``doc["by_magnitude"]``; dashed lines mark
    the outlier thresholds. Below, the verdict table of the paired deltas ``model - baseline``
    of ``|bias|``, NMAD and outlier fraction (:mod:`astroflow.evaluate.verdict_table`).
    """
    table = morphology_table(doc)
    fig = Figure(figsize=(9, 7.5 + table.height_inch), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[7.5, table.height_inch])
    axes = grid[0].subgridspec(2, 1).subplots(sharex=True)
    bins = doc["by_magnitude"]
    centres = np.array([(b["mag_lo"] + b["mag_hi"]) / 2 for b in bins])
    for ax, (row, quantity) in zip(axes, enumerate(QUANTITIES), strict=True):
        for i, (name, pred) in enumerate(preds.items()):
            style = _style(name, i)
            r = residuals(quantity, true[:, row], pred[:, row])
            ok = np.isfinite(r)
            ax.scatter(mag[ok], r[ok], s=5, alpha=0.35, color=style["color"])
            blocks = [b["model"] if name == "model" else b["baselines"][name] for b in bins]
            med = np.array([_nan(blk[quantity]["bias"]["value"]) for blk in blocks])
            width = np.array([_nan(blk[quantity]["nmad"]["value"]) for blk in blocks])
            ax.errorbar(
                centres + 0.08 * (i - 0.5),
                med,
                yerr=width,
                marker="o",
                ms=4,
                capsize=3,
                label=f"{name}: bias +- NMAD per bin",
                **style,
            )
        threshold = OUTLIER_THRESHOLD[quantity]
        for sign in (-1, 1):
            ax.axhline(sign * threshold, color="0.5", ls="--", lw=0.8)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_ylabel(_RESIDUAL[quantity])
        ax.set_title(f"{_LABEL[quantity]} (dashed: outlier threshold +-{threshold})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel(f"mag_{band} [AB mag]")
    counts = ", ".join(str(b["n"]) for b in bins)
    fig.suptitle(f"Morphology residuals versus magnitude (galaxies per bin: {counts})", fontsize=10)
    draw_verdict_table(
        fig.add_subplot(grid[1]),
        table,
        "model - baseline, paired bootstrap 95 % interval; lower is better: green = model better"
        " (interval below 0), red = model worse, grey = undecided",
    )
    return _save(fig, path)
