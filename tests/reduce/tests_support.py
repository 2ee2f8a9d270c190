"""Measurement helpers shared by the reduce tests."""

from __future__ import annotations

import numpy as np


def centroid_offset(stamp: np.ndarray, centre: int, radius: int = 6) -> tuple[float, float]:
    """(dy, dx) of the flux-weighted centroid within ``radius`` of ``centre`` from ``centre``."""
    yy, xx = np.mgrid[: stamp.shape[0], : stamp.shape[1]]
    inside = np.hypot(yy - centre, xx - centre) <= radius
    w = np.where(inside, np.clip(stamp, 0, None), 0.0)
    total = w.sum()
    return float((w * yy).sum() / total - centre), float((w * xx).sum() / total - centre)
