"""Sky positions as Cartesian unit vectors, shared by the split and the label matching.

numpy only, so a reduce field job can use it without importing the split's scipy.spatial.
"""

from __future__ import annotations

import numpy as np


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Cartesian unit vectors ``(N, 3)`` of sky positions [deg]."""
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
