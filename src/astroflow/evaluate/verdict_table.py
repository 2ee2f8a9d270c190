"""A table of paired-delta verdicts, drawn into the per-magnitude evaluation plots.

One row per (baseline, metric), one column for all objects and one per magnitude bin; each
cell shows ``model - baseline`` with its 95 % interval on the colour of its verdict
(:mod:`astroflow.evaluate.paired_delta`): green when the model is better, red when it is worse,
grey when undecided. The classification table goes under ``purity_completeness_vs_mag``, the
morphology table under ``morphology_residual_vs_mag``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from astroflow.evaluate.paired_delta import CLASSIFICATION_COMPARISONS, MORPHOLOGY_COMPARISONS

#: Cell colours by verdict.
COLOURS = {"better": "#a6dba0", "worse": "#f4a582", "undecided": "#e0e0e0"}
#: Short names of the compared metrics, for the row labels.
SHORT = {
    "auc": "AUC",
    "completeness_star_at_purity_0.97": "star compl. @ purity 0.97",
    "purity_galaxy_at_completeness_0.96": "gal. purity @ compl. 0.96",
    "abs_bias": "|bias|",
    "nmad": "NMAD",
    "outlier_frac": "outlier fraction",
    "pearson_r": "Pearson r",
    "abs_slope_minus_1": "|slope - 1|",
}
_QUANTITY = {"sersic_n": "n", "ellipticity": "|g|"}
#: Width of the label column, in cell widths.
LABEL_WIDTH = 2.2
#: Figure height of one table row [inch].
ROW_INCH = 0.32


@dataclass(frozen=True)
class VerdictTable:
    """Column titles and ``(label, cells)`` rows; a cell is a delta dict or None."""

    columns: list[str]
    rows: list[tuple[str, list[Mapping | None]]]

    @property
    def height_inch(self) -> float:
        """Figure height the table needs (rows plus the header and title)."""
        return ROW_INCH * (len(self.rows) + 2)


def _columns(bins: Sequence[Mapping], n_all: int) -> list[str]:
    return [f"all\nN={n_all}"] + [
        f"{b['mag_lo']:g}-{b['mag_hi']:g}\nN={b['n']}" for b in bins
    ]


def classification_table(doc: Mapping) -> VerdictTable:
    """Rows ``vs <baseline>: <metric>`` of metrics.json's ``delta_vs``, overall and per bin."""
    bins = doc["by_magnitude"]
    rows = []
    for name, deltas in doc["delta_vs"].items():
        for key in CLASSIFICATION_COMPARISONS:
            cells = [deltas[key], *(b["delta_vs"].get(name, {}).get(key) for b in bins)]
            rows.append((f"vs {name}: {SHORT[key]}", cells))
    return VerdictTable(_columns(bins, doc["n_test"]), rows)


def morphology_table(block: Mapping) -> VerdictTable:
    """Rows ``<quantity> vs <baseline>: <metric>`` of the morphology block's ``delta_vs``."""
    bins = block["by_magnitude"]
    rows = []
    for name, quantities in block["delta_vs"].items():
        for quantity, deltas in quantities.items():
            for key in MORPHOLOGY_COMPARISONS:
                cells = [deltas[key], *(b["delta_vs"][name][quantity][key] for b in bins)]
                rows.append((f"{_QUANTITY.get(quantity, quantity)} vs {name}: {SHORT[key]}",
                             cells))
    return VerdictTable(_columns(bins, block["n_test"]), rows)


def _cell_text(delta: Mapping | None) -> str:
    if delta is None or delta["value"] is None:
        return "n/a"
    lo, hi = delta["ci95"]
    interval = "[n/a]" if lo is None or hi is None else f"[{lo:+.3f}, {hi:+.3f}]"
    return f"{delta['value']:+.3f}\n{interval}"


def draw_verdict_table(ax: Axes, table: VerdictTable, title: str) -> None:
    """Draw ``table`` on ``ax`` (axis frame and ticks off), cells coloured by verdict."""
    n_rows, n_cols = len(table.rows), len(table.columns)
    ax.set_xlim(0, LABEL_WIDTH + n_cols)
    ax.set_ylim(n_rows, -1)
    ax.set_axis_off()
    for j, column in enumerate(table.columns):
        ax.text(LABEL_WIDTH + j + 0.5, -0.5, column, ha="center", va="center", fontsize=7)
    for i, (label, cells) in enumerate(table.rows):
        ax.text(LABEL_WIDTH - 0.05, i + 0.5, label, ha="right", va="center", fontsize=7)
        for j, delta in enumerate(cells):
            verdict = "undecided" if delta is None else delta["verdict"]
            ax.add_patch(Rectangle((LABEL_WIDTH + j, i), 1, 1, facecolor=COLOURS[verdict],
                                   edgecolor="white", lw=1.5))
            ax.text(LABEL_WIDTH + j + 0.5, i + 0.5, _cell_text(delta), ha="center",
                    va="center", fontsize=6)
    ax.set_title(title, fontsize=8)
