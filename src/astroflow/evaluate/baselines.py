"""Catalog baselines scored on exactly the objects the model is scored on.

Two classic alternatives to a pixel CNN, both trained only on the training split's catalog
labels (never on the truth table and never on test objects):

``concentration``
    The SDSS-style morphology cut: ``concentration = mag_psf - mag`` in the detection band is
    about 0 for point sources and positive for extended ones; SDSS calls an object a galaxy
    above 0.145 mag. To give a score that AUC, MSE and calibration can use, the cut is turned
    into ``p_galaxy = 1 / (1 + exp(-(c - 0.145 mag) / s))`` with the scale ``s`` [mag] fitted by
    maximum likelihood on the training labels; ``p >= 0.5`` is then exactly the SDSS cut.
``forest``
    A TPC-like random forest (Carrasco Kind & Brunner 2013, as used by Kim & Brunner 2016) on
    catalog features: magnitudes, colours of adjacent bands, flux radius, concentration,
    ellipticity and PSF FWHM.

Missing catalog values (non-detections give NaN or inf magnitudes) are handled: the
concentration baseline gives such objects the training galaxy fraction as score; the forest
imputes the training median and adds a missing-value indicator feature.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline

log = logging.getLogger(__name__)

#: SDSS star/galaxy separation: galaxy when mag_psf - mag_model > 0.145 [mag].
SDSS_CONCENTRATION_CUT_MAG = 0.145
#: Names of the baselines, in the order they are reported.
BASELINE_NAMES = ("concentration", "forest")
_CLIP = 1e-12


def _training_labels(train: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The labelled rows of the training table and their labels (1 galaxy, 0 star)."""
    labelled = train[train["label"] >= 0]
    if labelled.empty:
        raise ValueError("baselines: the training split has no labelled objects (label >= 0)")
    return labelled, labelled["label"].to_numpy(dtype=np.int64)


class ConcentrationBaseline:
    """Logistic score centred on the SDSS concentration cut, scale fitted on training labels.

    Attributes
    ----------
    scale_mag : float
        Fitted logistic scale [mag]; small means a sharp cut.
    prior_galaxy : float
        Training galaxy fraction, the score of objects without a concentration.
    """

    def __init__(self, cut_mag: float = SDSS_CONCENTRATION_CUT_MAG):
        self.cut_mag = cut_mag
        self.scale_mag = float("nan")
        self.prior_galaxy = float("nan")

    def _p(self, c: np.ndarray, scale_mag: float) -> np.ndarray:
        z = np.clip((c - self.cut_mag) / scale_mag, -500, 500)
        return 1.0 / (1.0 + np.exp(-z))

    def fit(self, train: pd.DataFrame) -> ConcentrationBaseline:
        """Fit the scale on the labelled training objects with a finite concentration."""
        labelled, y = _training_labels(train)
        c = labelled["concentration"].to_numpy(dtype=np.float64)
        self.prior_galaxy = float(y.mean())
        ok = np.isfinite(c)
        if not ok.any():
            raise ValueError(
                "concentration baseline: no training object has a finite concentration"
            )
        c, y = c[ok], y[ok]

        def nll(log_scale: float) -> float:
            p = np.clip(self._p(c, np.exp(log_scale)), _CLIP, 1 - _CLIP)
            return float(-np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))

        res = minimize_scalar(nll, bounds=(np.log(1e-3), np.log(10.0)), method="bounded")
        self.scale_mag = float(np.exp(res.x))
        log.info("concentration baseline: scale %.4f mag around the %.3f mag cut "
                 "(%d training objects)", self.scale_mag, self.cut_mag, c.size)
        return self

    def predict_proba(self, objects: pd.DataFrame) -> np.ndarray:
        """``p_galaxy`` of each row; rows without a finite concentration get the prior."""
        c = objects["concentration"].to_numpy(dtype=np.float64)
        p = np.full(c.shape, self.prior_galaxy)
        ok = np.isfinite(c)
        p[ok] = self._p(c[ok], self.scale_mag)
        return p


def forest_feature_names(bands: list[str]) -> list[str]:
    """Catalog features of the forest: magnitudes, adjacent colours, shape and seeing."""
    names = [f"mag_{b}" for b in bands]
    names += [f"{a}-{b}" for a, b in zip(bands, bands[1:], strict=False)]
    return names + ["flux_radius_arcsec", "concentration", "ellipticity", "psf_fwhm_arcsec"]


def forest_features(objects: pd.DataFrame, bands: list[str]) -> np.ndarray:
    """Feature matrix ``(N, n_features)`` with non-finite values as NaN.

    Raises
    ------
    KeyError
        Naming the object-table columns that are missing.
    """
    needed = [f"mag_{b}" for b in bands] + [
        "flux_radius_arcsec", "concentration", "ellipticity", "psf_fwhm_arcsec"
    ]
    missing = [c for c in needed if c not in objects.columns]
    if missing:
        raise KeyError(f"forest baseline: object table lacks column(s) {missing}")
    mags = objects[[f"mag_{b}" for b in bands]].to_numpy(dtype=np.float64)
    colours = mags[:, :-1] - mags[:, 1:]
    rest = objects[needed[len(bands):]].to_numpy(dtype=np.float64)
    x = np.hstack([mags, colours, rest])
    x[~np.isfinite(x)] = np.nan
    return x


class ForestBaseline:
    """Seeded random forest on catalog features, NaN-safe by median imputation + indicators."""

    def __init__(self, bands: list[str], seed: int, n_estimators: int = 300, n_jobs: int = 1):
        self.bands = list(bands)
        self.pipeline = make_pipeline(
            # keep_empty_features: an all-NaN column (a band never detected) stays a column of 0
            # instead of vanishing with a warning.
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            RandomForestClassifier(
                n_estimators=n_estimators,
                min_samples_leaf=2,
                random_state=seed,
                n_jobs=n_jobs,
            ),
        )
        self.classes_: np.ndarray | None = None

    def fit(self, train: pd.DataFrame) -> ForestBaseline:
        """Fit on the labelled training objects."""
        labelled, y = _training_labels(train)
        self.pipeline.fit(forest_features(labelled, self.bands), y)
        # Predict in one thread: sklearn's threads add the trees' votes in completion order,
        # which changes the last bits of p_galaxy (and metrics.json) from run to run.
        self.pipeline[-1].set_params(n_jobs=1)
        self.classes_ = self.pipeline.classes_
        log.info("forest baseline: fitted on %d training objects (%d galaxies)",
                 y.size, int(y.sum()))
        return self

    def predict_proba(self, objects: pd.DataFrame) -> np.ndarray:
        """``p_galaxy`` of each row (0 or 1 throughout if training had a single class)."""
        if self.classes_ is None:
            raise RuntimeError("forest baseline: predict_proba before fit")
        proba = self.pipeline.predict_proba(forest_features(objects, self.bands))
        if 1 in self.classes_:
            return proba[:, list(self.classes_).index(1)].astype(np.float64)
        return np.zeros(len(objects))


def score_baselines(
    train: pd.DataFrame, test: pd.DataFrame, bands: list[str], seed: int, n_jobs: int = 1
) -> dict[str, np.ndarray]:
    """Fit every baseline on ``train`` and return ``{name: p_galaxy on test}``."""
    return {
        "concentration": ConcentrationBaseline().fit(train).predict_proba(test),
        "forest": ForestBaseline(bands, seed=seed, n_jobs=n_jobs).fit(train).predict_proba(test),
    }
