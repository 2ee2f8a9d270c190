"""Independent, reproducible random streams for every part of the simulation.

Each stream is keyed by the master ``seed`` plus a tuple of small integers (what is drawn, and
for which field / band / epoch / frame), so that adding a band or a field never changes the
random numbers of the others, and a Snakemake job for one field is byte-identical to the same
field made by ``simulate all``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Stream identifiers (first key after the seed).
POPULATION = 1
EXPOSURE = 2
DETECTOR = 3
CALIB_FRAME = 4
LABELS = 5
FLAT_BAND = 6


def rng_for(cfg: Mapping, stream: int, *keys: int) -> np.random.Generator:
    """A numpy Generator for ``stream`` and ``keys``, derived from ``cfg['seed']``."""
    entropy = [int(cfg["seed"]), int(stream), *(int(k) for k in keys)]
    return np.random.default_rng(np.random.SeedSequence(entropy))
