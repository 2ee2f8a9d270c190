"""Plots are written, non-empty, and built from the right numbers."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from astroflow.evaluate import plots
from astroflow.evaluate.summary import summarize
from astroflow.evaluate.verdict_table import COLOURS, classification_table, draw_verdict_table


@pytest.fixture
def scored():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    scores = {
        "model": np.clip(0.2 + 0.6 * y + rng.normal(0, 0.25, y.size), 0, 1),
        "concentration": rng.random(y.size),
        "forest": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, y.size), 0, 1),
    }
    return y, scores, rng.uniform(18, 24, y.size)


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 5000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_roc_points_match_sklearn(scored):
    y, scores, _ = scored
    p = np.round(scores["model"], 1)  # with ties
    fpr, tpr = plots.roc_curve_points(y, p)
    fpr_s, tpr_s, _ = roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, fpr_s)
    np.testing.assert_allclose(tpr, tpr_s)


def test_all_plots_written(scored, tmp_path):
    y, scores, mag = scored
    doc = summarize(y, scores, mag, [18, 20, 22, 23, 24], 30, np.random.default_rng(0), "truth")
    paths = [
        plots.plot_roc(y, scores, {"model": 0.9, "forest": None}, tmp_path / "roc.png"),
        plots.plot_purity_completeness(doc, "r", tmp_path / "pc.png"),
        plots.plot_reliability(y, scores, {"model": 0.05}, tmp_path / "rel.png"),
    ]
    cutouts = np.random.default_rng(0).normal(0, 1, (5, 3, 24, 24)).astype(np.float32)
    paths.append(plots.plot_gallery(cutouts, y[:5], scores["model"][:5],
                                    [f"F00-{i:06d}" for i in range(5)], ["g", "r", "i"],
                                    tmp_path / "gallery.png", 0.2))
    paths.append(plots.plot_gallery(np.zeros((0, 1, 1, 1)), y[:0], scores["model"][:0], [],
                                    ["r"], tmp_path / "empty_gallery.png", 0.2))
    for path in paths:
        assert _is_png(path), path


def test_worst_misclassified_order():
    y = np.array([1, 1, 0, 0, 1])
    p = np.array([0.1, 0.9, 0.6, 0.95, 0.45])
    # Misclassified: 0 (error 0.9), 2 (0.6), 3 (0.95), 4 (0.55).
    np.testing.assert_array_equal(plots.worst_misclassified(y, p, 3), [3, 0, 2])


def test_reliability_points():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.05, 0.05, 0.95, 0.95])
    mean_p, frac, counts = plots.reliability_points(y, p)
    assert mean_p[0] == pytest.approx(0.05) and frac[0] == pytest.approx(0.5)
    assert frac[9] == pytest.approx(1.0) and counts.sum() == 4
    assert np.isnan(mean_p[5])


def test_composite_and_display():
    assert plots.composite_bands(["u", "g", "r", "i", "z"]) == [3, 2, 1]
    assert plots.composite_bands(["a", "b", "c", "d"]) == [3, 2, 0]
    assert plots.composite_bands(["r"]) == [0]
    img = plots.display_image(np.random.default_rng(0).normal(5, 1, (3, 8, 8)), [2, 1, 0])
    assert img.shape == (8, 8, 3) and 0 <= img.min() and img.max() <= 1


def test_verdict_table_cells_carry_the_verdicts(scored):
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    y, scores, mag = scored
    doc = summarize(y, scores, mag, [18, 21, 24], 30, np.random.default_rng(0), "truth")
    table = classification_table(doc)
    assert [label for label, _ in table.rows][:3] == [
        "vs concentration: AUC", "vs concentration: star compl. @ purity 0.97",
        "vs concentration: gal. purity @ compl. 0.96"]
    ax = Figure().add_subplot()
    draw_verdict_table(ax, table, "title")
    cells = [p for p in ax.patches if isinstance(p, Rectangle)]
    expected = [c["verdict"] for _, row in table.rows for c in row]
    assert len(cells) == len(expected) == 2 * 3 * 3  # baselines x deltas x (all + 2 bins)
    assert [p.get_facecolor() for p in cells] == [to_rgba(COLOURS[v]) for v in expected]
    # The model (0.6 y + noise) beats the random concentration score everywhere.
    assert set(expected[:9]) == {"better"}
