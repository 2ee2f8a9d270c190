"""Integrated-gradients saliency maps: which pixels made the model call an object a galaxy.

Integrated gradients (Sundararajan, Taly & Yan 2017) attribute the difference
``F(x) - F(x0)`` between a cutout ``x`` and a baseline ``x0`` to the pixels:
``IG_i = (x_i - x0_i) * mean over a in (0, 1] of dF/dx_i (x0 + a (x - x0))``. The attributions
add up to ``F(x) - F(x0)`` (completeness), which is checked and logged. Here ``F`` is the
galaxy *logit* of the served model (``log p / (1 - p)``, which does not saturate like ``p``),
and ``x0`` is an empty cutout (zero flux after background subtraction), so a map shows where
the object's light pushed the decision: red towards galaxy, blue towards star.

The gradients come from torch autograd on the loaded model itself (the MLflow model is a
``torch.export`` program whose module is differentiable), one view, no test-time augmentation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from astroflow.evaluate.metrics import THRESHOLD

log = logging.getLogger(__name__)

#: Riemann steps along the straight path from the baseline to the cutout: a trained CNN needs
#: about 128 (on the demo model 24 steps left completeness gaps of up to 5 logit units, 128
#: steps under 0.2).
IG_STEPS = 128
#: Objects per group (stars, galaxies, failures) in the saliency figure.
SALIENCY_PER_GROUP = 4
_EPS = 1e-7


def integrated_gradients(
    forward: Callable,
    images: np.ndarray,
    baseline: np.ndarray | None = None,
    steps: int = IG_STEPS,
    batch_size: int = 128,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrated gradients of the galaxy logit with respect to every input pixel.

    Parameters
    ----------
    forward : callable
        ``torch.Tensor (n, bands, S, S) -> p_galaxy (n,)``, differentiable.
    images : array ``(n, bands, S, S)``
        Cutouts as the model takes them (nJy).
    baseline : array, optional
        Same shape as one cutout or as ``images``; default zeros (empty sky).
    steps : int
        Midpoint Riemann steps along the path.
    batch_size : int
        Interpolated cutouts per backward pass.
    device : str, optional
        Torch device of the model (default CPU).

    Returns
    -------
    attributions : array ``(n, bands, S, S)``
        Per-pixel contributions to ``logit(x) - logit(x0)``.
    gap : array ``(n,)``
        ``sum(attributions) - (logit(x) - logit(x0))``: the integration error (0 in the limit).
    """
    import torch

    x = np.asarray(images, np.float32)
    x0 = np.zeros_like(x) if baseline is None else np.broadcast_to(
        np.asarray(baseline, np.float32), x.shape)
    dev = torch.device(device or "cpu")
    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps

    def logit_of(t: torch.Tensor) -> torch.Tensor:
        p = forward(t).reshape(-1).clamp(_EPS, 1 - _EPS)
        return torch.log(p) - torch.log1p(-p)

    # All (object, step) pairs in one stream of batches: one backward pass per batch.
    pairs = [(i, a) for i in range(len(x)) for a in range(steps)]
    grads = np.zeros_like(x)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        obj = np.array([i for i, _ in chunk])
        a = torch.from_numpy(alphas[[k for _, k in chunk]]).to(dev)[:, None, None, None]
        xs = torch.from_numpy(np.ascontiguousarray(x[obj])).to(dev)
        bs = torch.from_numpy(np.ascontiguousarray(x0[obj])).to(dev)
        path = (bs + a * (xs - bs)).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(logit_of(path).sum(), path)
        np.add.at(grads, obj, g.detach().cpu().numpy())
    attributions = (x - x0) * grads / steps
    with torch.no_grad():
        ends = [logit_of(torch.from_numpy(np.ascontiguousarray(v[s:s + batch_size])).to(dev))
                .cpu().numpy() for v in (x, x0) for s in range(0, len(x), batch_size)]
    half = len(ends) // 2
    delta = np.concatenate(ends[:half]) - np.concatenate(ends[half:])
    gap = attributions.reshape(len(x), -1).sum(axis=1, dtype=np.float64) - delta
    return attributions, gap


def saliency_sample(
    y: np.ndarray, p: np.ndarray, n_per_group: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Indices of a seeded random sample of correctly called stars and galaxies, and of the
    worst failures (misclassified at ``p = 0.5``, largest ``|y - p|`` first)."""
    y = np.asarray(y)
    p = np.asarray(p, np.float64)
    called = p >= THRESHOLD
    groups = {}
    for name, pool in (("star", np.flatnonzero((y == 0) & ~called)),
                       ("galaxy", np.flatnonzero((y == 1) & called))):
        take = min(n_per_group, pool.size)
        groups[name] = np.sort(rng.choice(pool, size=take, replace=False)) if take else pool
    wrong = np.flatnonzero(called != (y == 1))
    groups["failure"] = wrong[np.argsort(-np.abs(y - p)[wrong], kind="stable")][:n_per_group]
    return groups


def plot_saliency(
    cutouts: np.ndarray,
    attributions: np.ndarray,
    groups: dict[str, np.ndarray],
    y: np.ndarray,
    p: np.ndarray,
    object_ids: Sequence[str],
    bands: Sequence[str],
    path: Path,
) -> Path:
    """One PNG: per group (row), each object's colour composite next to its attribution map
    (summed over bands, symmetric diverging scale: red = towards galaxy).

    ``cutouts`` and ``attributions`` hold the objects of all groups in the order of
    ``np.concatenate(list(groups.values()))``; ``y``, ``p`` and ``object_ids`` are indexed the
    same way.
    """
    from astroflow.evaluate.plots import _save, composite_bands, display_image

    band_idx = composite_bands(bands)
    ncol = max(1, max((len(v) for v in groups.values()), default=1))
    nrow = len(groups)
    fig = Figure(figsize=(2.3 * 2 * ncol, 2.5 * nrow + 0.7))
    names = {0: "star", 1: "galaxy"}
    k = 0
    for r, (group, members) in enumerate(groups.items()):
        if len(members) == 0:
            ax = fig.add_subplot(nrow, 2 * ncol, r * 2 * ncol + 1)
            ax.text(0.05, 0.5, f"no test object in group {group!r}", va="center", fontsize=8)
            ax.set_axis_off()
        for c in range(len(members)):
            ax_img = fig.add_subplot(nrow, 2 * ncol, r * 2 * ncol + 2 * c + 1)
            ax_img.imshow(display_image(cutouts[k], band_idx), origin="lower", cmap="gray")
            ax_img.set_title(f"{group}: {object_ids[k]}\ntrue {names[int(y[k])]}, "
                             f"p_gal={p[k]:.2f}", fontsize=7)
            ax_map = fig.add_subplot(nrow, 2 * ncol, r * 2 * ncol + 2 * c + 2)
            amap = attributions[k].sum(axis=0)
            lim = float(np.max(np.abs(amap))) or 1.0
            im = ax_map.imshow(amap, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax_map.set_title(f"IG, sum {amap.sum():+.2f}", fontsize=7)
            fig.colorbar(im, ax=ax_map, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
            for ax in (ax_img, ax_map):
                ax.set_xticks([])
                ax.set_yticks([])
            k += 1
    fig.suptitle("Integrated gradients of the galaxy logit (baseline: empty cutout); "
                 "red pixels push towards galaxy, blue towards star", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
