"""SExtractor ``CLASS_STAR`` and ``SPREAD_MODEL`` baselines, scored on the model's test objects.

For each field, the detection-band exposure is calibrated again with the reduce library
(:mod:`astroflow.evaluate.detection_frames`), SExtractor runs on it with a PSFEx PSF
(:mod:`astroflow.evaluate.sextractor`), and its sources are matched by sky position to the
objects of the reduce object table (training and test rows alike). Then:

``class_star``
    ``p_galaxy = 1 - CLASS_STAR`` (SExtractor's stellarity is 1 for a star). Nothing is fitted.
``spread_model``
    A logistic in ``SPREAD_MODEL`` and its error ``SPREADERR_MODEL`` fitted by maximum
    likelihood on the *training* split's catalog labels (as the concentration baseline is), so
    the score is a probability and ``p >= 0.5`` is a fitted DES-style cut
    ``SPREAD_MODEL + k SPREADERR_MODEL > cut``.

Objects that SExtractor did not detect within the match radius (or whose field could not be
processed) get the training galaxy fraction as their score, so both baselines are scored on
exactly the model's objects; their number is reported in metrics.json (``sextractor`` block).
When the programs, the raw exposures or the masters are missing, both baselines are skipped
with the reason.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord, match_coordinates_sky
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from astroflow.evaluate.sextractor import SExtractorError, Tools, find_tools, run_sextractor

log = logging.getLogger(__name__)

#: The two baselines this module scores, in report order.
SEXTRACTOR_BASELINES = ("class_star", "spread_model")


@dataclass
class SExtractorResult:
    """What the SExtractor step gives the stage.

    Attributes
    ----------
    scores : dict
        ``{"class_star": p, "spread_model": p}`` on the rows of the test table; empty when
        skipped.
    skipped : str or None
        Why the baselines were not scored (None when they were).
    info : dict
        The ``sextractor`` block of metrics.json: per-field notes, match counts, the fitted
        SPREAD_MODEL logistic.
    """

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: str | None = None
    info: dict = field(default_factory=dict)


def match_catalog(
    objects: pd.DataFrame, catalog: pd.DataFrame, radius_arcsec: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest catalog source of each object (-1 beyond ``radius_arcsec``).

    ``catalog`` has ``ra`` and ``dec`` [deg]. Returns ``(index, separation_arcsec)``.
    """
    n = len(objects)
    if n == 0 or len(catalog) == 0:
        return np.full(n, -1, np.int64), np.full(n, np.inf)
    obj = SkyCoord(objects["ra"].to_numpy() * u.deg, objects["dec"].to_numpy() * u.deg)
    cat = SkyCoord(catalog["ra"].to_numpy() * u.deg, catalog["dec"].to_numpy() * u.deg)
    idx, sep, _ = match_coordinates_sky(obj, cat)
    sep_arcsec = sep.to_value(u.arcsec)
    return np.where(sep_arcsec <= radius_arcsec, idx, -1).astype(np.int64), sep_arcsec


class SpreadModelBaseline:
    """``p_galaxy = sigmoid(a * (SPREAD_MODEL + k * SPREADERR_MODEL - cut))``, fitted on
    labelled training objects.

    SPREAD_MODEL alone is noisy for faint objects (faint galaxies scatter to negative values and
    would look like the surest stars); adding ``k`` times its error, as the DES star/galaxy cuts
    do (``SPREAD_MODEL + 3 SPREADERR_MODEL > 0.005``), makes the score honest at the faint end.
    ``k`` and ``cut`` are fitted instead of taken from DES.

    Attributes
    ----------
    cut : float
        SPREAD_MODEL where ``p = 0.5`` for an object with no error.
    err_weight : float
        ``k``, the weight of SPREADERR_MODEL.
    prior_galaxy : float
        Training galaxy fraction, the score of objects without a SPREAD_MODEL.
    """

    def __init__(self) -> None:
        # Large C: a plain maximum-likelihood fit of three numbers, not a regularised model.
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=1e6, max_iter=1000))
        self.prior_galaxy = float("nan")
        self.cut = float("nan")
        self.err_weight = float("nan")
        self.n_fit = 0

    @staticmethod
    def _features(spread: np.ndarray, spread_err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.column_stack([np.asarray(spread, np.float64), np.asarray(spread_err, np.float64)])
        return x, np.isfinite(x).all(axis=1)

    def fit(
        self, spread: np.ndarray, spread_err: np.ndarray, label: np.ndarray
    ) -> SpreadModelBaseline:
        """Fit on objects with ``label >= 0``; objects without finite values are left out."""
        x, finite = self._features(spread, spread_err)
        label = np.asarray(label)
        labelled = label >= 0
        if not labelled.any():
            raise ValueError("spread_model baseline: no labelled training object")
        self.prior_galaxy = float(label[labelled].mean())
        ok = labelled & finite
        y = label[ok].astype(np.int64)
        if ok.sum() < 3 or np.unique(y).size < 2:
            raise ValueError(f"spread_model baseline: {int(ok.sum())} matched labelled training "
                             "objects, need both classes")
        self.model.fit(x[ok], y)
        scaler, logistic = self.model[0], self.model[-1]
        w = logistic.coef_[0] / scaler.scale_
        w0 = float(logistic.intercept_[0] - np.sum(logistic.coef_[0] * scaler.mean_
                                                   / scaler.scale_))
        self.cut = -w0 / w[0] if w[0] != 0 else float("nan")
        self.err_weight = float(w[1] / w[0]) if w[0] != 0 else float("nan")
        self.n_fit = int(ok.sum())
        log.info("spread_model baseline: p = 0.5 at SPREAD_MODEL + %.2f SPREADERR_MODEL = %.5f "
                 "(%d training objects)", self.err_weight, self.cut, self.n_fit)
        return self

    def predict_proba(self, spread: np.ndarray, spread_err: np.ndarray) -> np.ndarray:
        """``p_galaxy``; the training prior where SPREAD_MODEL or its error is missing."""
        x, finite = self._features(spread, spread_err)
        p = np.full(len(x), self.prior_galaxy)
        if finite.any():
            p[finite] = self.model.predict_proba(x[finite])[:, 1]
        return p


def class_star_p_galaxy(class_star: np.ndarray, prior_galaxy: float) -> np.ndarray:
    """``1 - CLASS_STAR``, the prior where CLASS_STAR is missing."""
    cs = np.asarray(class_star, np.float64)
    return np.where(np.isfinite(cs), 1.0 - np.clip(cs, 0.0, 1.0), prior_galaxy)


def catalog_frame(table) -> pd.DataFrame:
    """SExtractor catalog as a DataFrame with ``ra``, ``dec``, ``class_star``,
    ``spread_model``, ``spreaderr_model``, ``mag_auto``, ``flags``."""
    return pd.DataFrame({
        "ra": np.asarray(table["ALPHAWIN_J2000"], np.float64),
        "dec": np.asarray(table["DELTAWIN_J2000"], np.float64),
        "class_star": np.asarray(table["CLASS_STAR"], np.float64),
        "spread_model": np.asarray(table["SPREAD_MODEL"], np.float64),
        "spreaderr_model": np.asarray(table["SPREADERR_MODEL"], np.float64),
        "mag_auto": np.asarray(table["MAG_AUTO"], np.float64),
        "flags": np.asarray(table["FLAGS"], np.int64),
    })


def measure_fields(
    cfg: dict,
    objects: pd.DataFrame,
    exposures: Iterable[str | Path],
    calib_dir: str | Path,
    tools: Tools,
    threads: int = 1,
) -> tuple[pd.DataFrame, dict]:
    """``class_star`` and ``spread_model`` of every object (NaN where unmatched).

    Returns
    -------
    measured : DataFrame
        Indexed like ``objects``: ``class_star``, ``spread_model``, ``spreaderr_model``,
        ``sextractor_sep_arcsec``.
    fields : dict
        Per field: the exposure used, seeing, number of SExtractor sources and of matched
        objects, or ``{"skipped": reason}``.
    """
    from astroflow.evaluate.detection_frames import calibrated_detection_frames, weight_map

    radius = float(cfg["evaluate"]["sextractor_match_radius_arcsec"])
    scale = float(cfg["instrument"]["pixel_scale_arcsec"])
    measured = pd.DataFrame({"class_star": np.nan, "spread_model": np.nan,
                             "spreaderr_model": np.nan, "sextractor_sep_arcsec": np.inf},
                            index=objects.index)
    notes: dict[str, dict] = {}
    fields = sorted(objects["field"].unique())
    frames = calibrated_detection_frames(cfg, exposures, calib_dir, fields)
    for k, (fld, exposure, reason) in enumerate(frames, start=1):
        rows = objects["field"] == fld
        if exposure is None:
            notes[fld] = {"skipped": reason}
            log.warning("SExtractor baselines, field %s: %s", fld, reason)
            continue
        seeing = objects.loc[rows, "psf_fwhm_arcsec"].to_numpy(np.float64)
        seeing = float(np.nanmedian(seeing)) if np.isfinite(seeing).any() else float("nan")
        if not np.isfinite(seeing):
            seeing = float(exposure.psf_fwhm_arcsec)
        try:
            with tempfile.TemporaryDirectory(prefix=f"astroflow-sex-{fld}-") as tmp:
                table = run_sextractor(
                    exposure.image, weight_map(exposure.variance, exposure.mask),
                    exposure.wcs.to_header(relax=True), Path(tmp), tools,
                    seeing_fwhm_arcsec=seeing, pixel_scale_arcsec=scale,
                    zeropoint_mag=exposure.zeropoint_mag, gain_e_per_unit=exposure.exptime_s,
                    detect_sigma=float(cfg["reduce"]["detect_sigma"]),
                    detect_min_area=int(cfg["reduce"]["detect_min_area"]),
                    threads=threads, frame_name=exposure.path,
                )
        except SExtractorError as exc:
            notes[fld] = {"exposure": exposure.path, "skipped": str(exc)}
            log.warning("SExtractor baselines, field %s: %s", fld, exc)
            continue
        cat = catalog_frame(table)
        idx, sep = match_catalog(objects.loc[rows], cat, radius)
        hit = idx >= 0
        target = objects.index[rows.to_numpy()]
        measured.loc[target, "sextractor_sep_arcsec"] = sep
        measured.loc[target[hit], "class_star"] = cat["class_star"].to_numpy()[idx[hit]]
        for col in ("spread_model", "spreaderr_model"):
            measured.loc[target[hit], col] = cat[col].to_numpy()[idx[hit]]
        notes[fld] = {"exposure": exposure.path, "seeing_fwhm_arcsec": seeing,
                      "psf_stars": int(table.meta["psf_stars"]),
                      "psfex_fwhm_arcsec": float(table.meta["psf_fwhm_arcsec"]),
                      "n_sources": len(cat), "n_objects": int(rows.sum()),
                      "n_matched": int(hit.sum())}
        log.info("SExtractor field %d/%d (%s): %d sources, %d of %d objects matched within "
                 "%.2f arcsec", k, len(fields), fld, len(cat), int(hit.sum()), int(rows.sum()),
                 radius)
        del exposure
    return measured, notes


def score_sextractor(
    cfg: dict,
    train: pd.DataFrame,
    test: pd.DataFrame,
    exposures: list[str] | None,
    calib_dir: str | Path | None,
    threads: int = 1,
    tools: Tools | None = None,
) -> SExtractorResult:
    """Both SExtractor baselines on the rows of ``test`` (fitted on ``train``), or the reason
    they are skipped.

    Parameters
    ----------
    cfg : dict
        Resolved config (``instrument``, ``reduce``, ``evaluate``).
    train, test : DataFrame
        Object-table rows of the training split (with catalog ``label``) and the test rows.
    exposures : list of paths or None
        Raw science exposures (``--exposures``); none = skipped.
    calib_dir : path or None
        Masters of ``reduce calib`` (``--calib``); none = skipped.
    threads : int
        SExtractor threads.
    tools : Tools, optional
        Default: :func:`find_tools`.
    """
    if not exposures:
        return SExtractorResult(skipped="no raw exposures given (--exposures)")
    if not calib_dir:
        return SExtractorResult(skipped="no calibration masters given (--calib)")
    if not (Path(calib_dir) / "masters.json").is_file():
        return SExtractorResult(skipped=f"{Path(calib_dir) / 'masters.json'} not found")
    if tools is None:
        tools, reason = find_tools()
        if tools is None:
            return SExtractorResult(skipped=reason)
    both = pd.concat([train.assign(_part="train"), test.assign(_part="test")],
                     ignore_index=True)
    try:
        measured, notes = measure_fields(cfg, both, exposures, calib_dir, tools, threads)
    except (OSError, KeyError, ValueError) as exc:  # broken masters, another camera's
        return SExtractorResult(skipped=f"cannot calibrate the detection exposures: {exc}")
    if not any("n_matched" in v for v in notes.values()):
        reasons = "; ".join(f"{f}: {v.get('skipped')}" for f, v in notes.items())
        return SExtractorResult(skipped=f"SExtractor produced no catalog ({reasons})",
                                info={"fields": notes})
    is_train = (both["_part"] == "train").to_numpy()
    is_test = ~is_train
    spread = SpreadModelBaseline()
    try:
        spread.fit(measured["spread_model"].to_numpy()[is_train],
                   measured["spreaderr_model"].to_numpy()[is_train],
                   both["label"].to_numpy()[is_train])
    except ValueError as exc:
        return SExtractorResult(skipped=str(exc), info={"fields": notes})
    scores = {
        "class_star": class_star_p_galaxy(measured["class_star"].to_numpy()[is_test],
                                          spread.prior_galaxy),
        "spread_model": spread.predict_proba(measured["spread_model"].to_numpy()[is_test],
                                             measured["spreaderr_model"].to_numpy()[is_test]),
    }
    n_matched = int(np.isfinite(measured["class_star"].to_numpy()[is_test]).sum())
    info = {
        "match_radius_arcsec": float(cfg["evaluate"]["sextractor_match_radius_arcsec"]),
        "n_test_objects": int(is_test.sum()),
        "n_test_matched": n_matched,
        "unmatched_score": spread.prior_galaxy,
        "spread_model_cut": spread.cut if np.isfinite(spread.cut) else None,
        "spread_model_err_weight": (spread.err_weight if np.isfinite(spread.err_weight)
                                    else None),
        "spread_model_n_train": spread.n_fit,
        "fields": notes,
    }
    log.info("SExtractor baselines: %d of %d test objects matched; the rest get the training "
             "galaxy fraction %.3f", n_matched, int(is_test.sum()), spread.prior_galaxy)
    return SExtractorResult(scores=scores, info=info)
