"""Truth and labels catalogs (ECSV).

The truth table lists every simulated object (evaluation only). The labels catalog is what a
user of a real survey would have: a spectroscopic-like subset of ``simulate.label_fraction`` of
the objects, biased to bright ones (selection probability falls off as a logistic in the
reference magnitude), with ``simulate.label_noise`` of the classes flipped and 0.05 arcsec of
astrometric scatter, sorted by RA so its row order says nothing about the truth table.

The labels also carry galaxy morphology, as a catalog of Sersic fits on deeper imaging would:
``sersic_n`` and ``ellipticity`` (``|g|``) of every labelled object that truly is a galaxy,
with a measurement noise of 0.05 dex in n and 0.02 in |g| (so the labels are not the truth a
model is graded against); NaN for true stars, whatever their (possibly flipped) class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from astropy import units as u
from astropy.table import Table, vstack

from astroflow.simulate.seeding import LABELS, rng_for

TRUTH_NOTES = (
    "Stars have r_half_arcsec = 0, ellipticity = 0, sersic_n = NaN, redshift = NaN. "
    "ellipticity is |g| = (1 - q) / (1 + q); position_angle_deg is east of north. "
    "mag_<band> are true AB magnitudes. meta['exposures'] lists each exposure's conditions."
)
LABEL_POSITION_SCATTER_ARCSEC = 0.05
LABEL_MAG_SOFTNESS = 0.6
#: Measurement noise of the labels' morphology: log10 Sersic index [dex] and |g|.
LABEL_LOG_SERSIC_SCATTER_DEX = 0.05
LABEL_ELLIPTICITY_SCATTER = 0.02
#: The labels' |g| stays within [0, LABEL_ELLIPTICITY_MAX] after the noise.
LABEL_ELLIPTICITY_MAX = 0.95


def truth_table(cfg: Mapping, field: str, field_idx: int, pop: Mapping, plans: list) -> Table:
    """The truth table of one field from its population and exposure plans."""
    bands = cfg["instrument"]["bands"]
    n = len(pop["ra"])
    t = Table()
    t["id"] = np.arange(n, dtype=np.int64) + 1_000_000 * field_idx
    t["field"] = np.array([field] * n, dtype=f"U{max(len(field), 1)}")
    t["ra"] = pop["ra"] * u.deg
    t["dec"] = pop["dec"] * u.deg
    t["class"] = np.where(pop["is_star"], "star", "galaxy").astype("U6")
    for b, band in enumerate(bands):
        t[f"mag_{band}"] = pop["mag"][:, b] * u.mag
    t["r_half_arcsec"] = pop["r_half_arcsec"] * u.arcsec
    t["sersic_n"] = pop["sersic_n"]
    t["ellipticity"] = pop["ellipticity"]
    t["redshift"] = pop["redshift"]
    t["position_angle_deg"] = pop["position_angle_deg"] * u.deg
    t["temperature_k"] = pop["temperature_k"] * u.K
    t["galaxy_type_index"] = pop["type_index"]
    t.meta = {
        "field": field,
        "seed": int(cfg["seed"]),
        "notes": TRUTH_NOTES,
        "exposures": [dict(p) for p in plans],
    }
    return t


def write_ecsv(table: Table, path: str | os.PathLike) -> None:
    """Write an ECSV atomically (a crashed job leaves no half-written catalog)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.part"
    table.write(tmp, format="ascii.ecsv", overwrite=True)
    os.replace(tmp, path)


def read_truth(path: str | os.PathLike) -> Table:
    """Read a truth ECSV, with an error naming the file if it is not one."""
    table = Table.read(path, format="ascii.ecsv")
    missing = {"id", "field", "ra", "dec", "class"} - set(table.colnames)
    if missing:
        raise ValueError(f"{path}: not a simulator truth table (missing columns {sorted(missing)})")
    return table


def merge_truth(paths: Sequence[str | os.PathLike]) -> Table:
    """Stack per-field truth tables; their exposure lists are concatenated in the metadata."""
    tables = [read_truth(p) for p in paths]
    merged = vstack(tables, metadata_conflicts="silent")
    merged.meta = {
        "fields": [t.meta.get("field") for t in tables],
        "seed": tables[0].meta.get("seed"),
        "notes": TRUTH_NOTES,
        "exposures": [e for t in tables for e in t.meta.get("exposures", [])],
    }
    return merged


def _selection_probability(mag: np.ndarray, fraction: float) -> np.ndarray:
    """Logistic selection in magnitude whose mean equals ``fraction``."""
    lo, hi = float(mag.min()) - 20.0, float(mag.max()) + 20.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        p = 1.0 / (1.0 + np.exp((mag - mid) / LABEL_MAG_SOFTNESS))
        lo, hi = (mid, hi) if p.mean() < fraction else (lo, mid)
    return 1.0 / (1.0 + np.exp((mag - 0.5 * (lo + hi)) / LABEL_MAG_SOFTNESS))


def make_labels(cfg: Mapping, truth: Table) -> Table:
    """The labels catalog (``ra``, ``dec``, ``class``, ``sersic_n``, ``ellipticity``) drawn
    from ``truth``."""
    sim = cfg["simulate"]
    rng = rng_for(cfg, LABELS)
    bands = cfg["instrument"]["bands"]
    mag_cols = [f"mag_{b}" for b in bands if f"mag_{b}" in truth.colnames]
    if "mag_r" in truth.colnames:
        mag = np.asarray(truth["mag_r"], dtype=float)
    else:
        mag = np.mean([np.asarray(truth[c], dtype=float) for c in mag_cols], axis=0)
    n = len(truth)
    n_label = min(n, max(1, int(round(sim["label_fraction"] * n))))
    p = _selection_probability(mag, n_label / n)
    chosen = np.sort(rng.choice(n, size=n_label, replace=False, p=p / p.sum()))
    classes = np.asarray(truth["class"])[chosen].astype("U6")
    n_flip = int(round(sim["label_noise"] * n_label))
    flip = rng.choice(n_label, size=n_flip, replace=False)
    classes[flip] = np.where(classes[flip] == "star", "galaxy", "star")
    dec = np.asarray(truth["dec"], dtype=float)[chosen]
    ra = np.asarray(truth["ra"], dtype=float)[chosen]
    jitter = rng.normal(0.0, LABEL_POSITION_SCATTER_ARCSEC / 3600.0, (2, n_label))
    ra = ra + jitter[0] / np.cos(np.radians(dec))
    dec = dec + jitter[1]
    sersic_n, ellipticity = _labelled_morphology(rng, truth, chosen)
    order = np.argsort(ra, kind="stable")
    labels = Table()
    labels["ra"] = ra[order] * u.deg
    labels["dec"] = dec[order] * u.deg
    labels["class"] = classes[order]
    labels["sersic_n"] = sersic_n[order]
    labels["ellipticity"] = ellipticity[order]
    labels.meta = {
        "description": "spectroscopic-like labels: brighter-biased, incomplete, with label noise",
        "label_fraction": float(sim["label_fraction"]),
        "label_noise": float(sim["label_noise"]),
        "n_flipped": n_flip,
        "morphology": (
            "sersic_n and ellipticity (|g| = (1 - q) / (1 + q)) of true galaxies, with "
            f"{LABEL_LOG_SERSIC_SCATTER_DEX} dex and {LABEL_ELLIPTICITY_SCATTER} noise; NaN else"
        ),
    }
    return labels


def _labelled_morphology(
    rng: np.random.Generator, truth: Table, chosen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy Sersic index and |g| of the ``chosen`` truth rows; NaN for true stars.

    Drawn after every other label quantity, so adding them left positions and classes as
    they were for a given seed.
    """
    is_galaxy = np.asarray(truth["class"])[chosen] == "galaxy"
    n_true = np.asarray(truth["sersic_n"], dtype=float)[chosen]
    e_true = np.asarray(truth["ellipticity"], dtype=float)[chosen]
    noise = rng.normal(0.0, 1.0, (2, len(chosen)))
    with np.errstate(invalid="ignore"):  # stars: log10(NaN)
        sersic_n = 10 ** (np.log10(n_true) + LABEL_LOG_SERSIC_SCATTER_DEX * noise[0])
    ellipticity = np.clip(e_true + LABEL_ELLIPTICITY_SCATTER * noise[1], 0.0,
                          LABEL_ELLIPTICITY_MAX)  # fmt: skip
    return np.where(is_galaxy, sersic_n, np.nan), np.where(is_galaxy, ellipticity, np.nan)
