"""Load a trained classifier and predict ``p_galaxy`` for raw cutouts (what evaluation uses),
or a morphology regressor and predict ``(sersic_n, ellipticity)``.

Two sources give the same predictor: the MLflow model directory (``results/train/<m>/model``,
a ``torch.export`` program, no pickle) and a Lightning checkpoint (``best.ckpt``, loaded with
``weights_only=True`` and rebuilt from its hyperparameters). Both carry crop and
normalisation (and the regressor its target standardisation), so callers pass cutouts in nJy
as stored and get physical quantities back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from astroflow.train.augment import N_DIHEDRAL, dihedral
from astroflow.train.morphology import (
    TARGETS,
    MorphologyPrediction,
    MorphologyRegressor,
    build_regressor,
)
from astroflow.train.nets import GalaxyProbability, StarGalaxyClassifier, build_net

log = logging.getLogger(__name__)


class GalaxyClassifier:
    """``p_galaxy`` predictions from a module mapping raw nJy cutouts to probabilities.

    Parameters
    ----------
    model
        ``(N, n_bands, S, S)`` nJy -> ``(N,)`` p_galaxy, crop and normalisation inside
        (:class:`GalaxyProbability` or the exported program in an MLflow model).
    n_bands, crop_size
        Input bands and the training crop side [pixels].
    band_scale_njy
        The per-band normalisation scale inside the model (for reference and checks).
    device
        Torch device; default CUDA when available.
    """

    def __init__(
        self,
        model: nn.Module,
        n_bands: int,
        crop_size: int,
        band_scale_njy: Sequence[float],
        device: str | torch.device | None = None,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(model, GalaxyProbability | MorphologyPrediction):
            model = model.to(self.device).eval()
        # else: an exported program, already placed by its loader; it refuses .eval()
        self.model = model
        self.n_bands = int(n_bands)
        self.crop_size = int(crop_size)
        self.band_scale_njy = np.asarray(band_scale_njy, dtype=np.float32)

    def _check(self, images: np.ndarray, what: str = "predict_proba") -> None:
        if (
            images.ndim != 4
            or images.shape[1] != self.n_bands
            or images.shape[2] != images.shape[3]
        ):
            raise ValueError(
                f"{what}: expected (N, {self.n_bands}, S, S) cutouts, got {images.shape}"
            )
        if images.shape[2] < self.crop_size:
            raise ValueError(
                f"{what}: {images.shape[2]}-pixel cutouts are smaller than the "
                f"{self.crop_size}-pixel crop the model was trained on"
            )

    def _run(self, images: np.ndarray, tta: bool, batch_size: int) -> np.ndarray:
        """The model's outputs on every cutout (TTA: averaged over the 8 transforms)."""
        out = []
        n_batches = -(-len(images) // batch_size)
        for k, start in enumerate(range(0, len(images), batch_size)):
            batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
            # The model crops inside (an exported program accepts only the raw size), so TTA
            # transforms the whole square cutout: the same as transforming the centre crop
            # whenever S - crop is even (48 - 44), one pixel off-centre otherwise.
            x = torch.from_numpy(batch).to(self.device)
            if tta:
                y = torch.stack(
                    [self.model(dihedral(x, t).contiguous()) for t in range(N_DIHEDRAL)]
                ).mean(dim=0)
            else:
                y = self.model(x)
            out.append(y.double().cpu().numpy())
            if n_batches > 10 and (k + 1) % 10 == 0:
                log.info("predicted %d/%d batches", k + 1, n_batches)
        return np.concatenate(out) if out else np.zeros((0,))

    @torch.inference_mode()
    def predict_proba(
        self, images: np.ndarray, tta: bool = False, batch_size: int = 512
    ) -> np.ndarray:
        """Probability that each cutout is a galaxy.

        Parameters
        ----------
        images
            ``(N, n_bands, S, S)`` calibrated cutouts in nJy, S >= the training crop.
        tta
            Average the probabilities over the 8 rotations/flips of the cutout.
        batch_size
            Cutouts per forward pass.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` float64 ``p_galaxy``.
        """
        images = np.asarray(images)
        self._check(images)
        return self._run(images, tta, batch_size).reshape(len(images))


class MorphologyPredictor(GalaxyClassifier):
    """``(sersic_n, ellipticity)`` predictions from a module mapping raw nJy cutouts to them.

    Parameters as :class:`GalaxyClassifier`; ``model`` is :class:`MorphologyPrediction` or the
    exported program in a morphology MLflow model.
    """

    @torch.inference_mode()
    def predict(self, images: np.ndarray, tta: bool = False, batch_size: int = 512) -> np.ndarray:
        """Sersic index and ellipticity ``|g|`` of each cutout.

        Parameters
        ----------
        images
            ``(N, n_bands, S, S)`` calibrated cutouts in nJy, S >= the training crop.
        tta
            Average the predictions over the 8 rotations/flips (both are invariant).
        batch_size
            Cutouts per forward pass.

        Returns
        -------
        numpy.ndarray
            ``(N, 2)`` float64: columns ``sersic_n``, ``ellipticity``.
        """
        images = np.asarray(images)
        self._check(images, "predict")
        return self._run(images, tta, batch_size).reshape(len(images), len(TARGETS))


def load_classifier(
    model_dir: str | Path, device: str | None = None, expected_task: str = "classification"
) -> GalaxyClassifier:
    """The predictor saved in an MLflow model directory (``results/train/<model>/model``).

    ``expected_task`` guards against loading one task's model for the other (MLflow models
    written before the morphology task have no ``task`` in their metadata: classification).
    """
    from mlflow.models import Model

    from astroflow.train.mlflow_model import import_mlflow_flavors

    import_mlflow_flavors()
    import mlflow.pytorch

    model_dir = Path(model_dir)
    if not (model_dir / "MLmodel").exists():
        raise FileNotFoundError(f"{model_dir}: not an MLflow model directory (no MLmodel file)")
    meta = Model.load(str(model_dir / "MLmodel")).metadata or {}
    missing = {"n_bands", "crop_size", "band_scale_njy"} - set(meta)
    if missing:
        raise ValueError(
            f"{model_dir}/MLmodel: metadata lacks {sorted(missing)}; not from astroflow"
        )
    task = meta.get("task", "classification")
    if task != expected_task:
        raise ValueError(f"{model_dir}: a {task} model, not a {expected_task} one")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = mlflow.pytorch.load_model(str(model_dir), map_location=device)
    except Exception as exc:  # torch/MLflow raise many types on a damaged program file
        raise ValueError(f"{model_dir}: cannot load the model (damaged file?): {exc}") from exc
    predictor = MorphologyPredictor if task == "morphology" else GalaxyClassifier
    return predictor(
        model, meta["n_bands"], meta["crop_size"], meta["band_scale_njy"], device=device
    )


def load_morphology(model_dir: str | Path, device: str | None = None) -> MorphologyPredictor:
    """The morphology predictor saved in ``results/train/<model>/morphology/model``."""
    return load_classifier(model_dir, device, expected_task="morphology")


def _submodule_state(state: dict, prefix: str) -> dict:
    """The entries of a Lightning module's state dict under one submodule, prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _read_checkpoint(ckpt_path: Path) -> tuple[dict, dict]:
    """Hyperparameters and state dict of a Lightning checkpoint (``weights_only=True``)."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage, or a pickle that is not plain weights
        raise ValueError(
            f"{ckpt_path}: not a readable checkpoint (damaged, or holds objects that "
            f"weights_only=True refuses to unpickle): {exc}"
        ) from exc
    try:
        hp = ckpt["hyper_parameters"]
        state = ckpt["state_dict"]
    except KeyError as exc:
        raise ValueError(f"{ckpt_path}: not an astroflow Lightning checkpoint (no {exc})") from exc
    return hp, state


def classifier_from_checkpoint(ckpt_path: str | Path) -> StarGalaxyClassifier:
    """Rebuild the classifier from a Lightning checkpoint, loaded with ``weights_only=True``."""
    ckpt_path = Path(ckpt_path)
    hp, state = _read_checkpoint(ckpt_path)
    if hp.get("task", "classification") != "classification":
        raise ValueError(f"{ckpt_path}: a {hp['task']} checkpoint, not a classifier")
    net = build_net(hp["model_name"], hp["n_bands"], hp["crop_size"])
    classifier = StarGalaxyClassifier(net, hp["band_scale_njy"], hp["crop_size"])
    classifier.load_state_dict(_submodule_state(state, "classifier."))
    return classifier


def load_checkpoint(ckpt_path: str | Path, device: str | None = None) -> GalaxyClassifier:
    """The predictor in a Lightning checkpoint (``results/train/<model>/best.ckpt``)."""
    classifier = classifier_from_checkpoint(ckpt_path)
    return GalaxyClassifier(
        GalaxyProbability(classifier),
        classifier.n_bands,
        classifier.crop_size,
        classifier.band_scale_njy.tolist(),
        device=device,
    )


def regressor_from_checkpoint(ckpt_path: str | Path) -> MorphologyRegressor:
    """Rebuild the morphology regressor from a Lightning checkpoint (``weights_only=True``)."""
    ckpt_path = Path(ckpt_path)
    hp, state = _read_checkpoint(ckpt_path)
    if hp.get("task") != "morphology":
        raise ValueError(f"{ckpt_path}: not a morphology checkpoint")
    regressor = build_regressor(
        hp["model_name"],
        hp["n_bands"],
        hp["crop_size"],
        hp["band_scale_njy"],
        hp["target_mean"],
        hp["target_std"],
    )
    regressor.load_state_dict(_submodule_state(state, "regressor."))
    return regressor


def load_morphology_checkpoint(
    ckpt_path: str | Path, device: str | None = None
) -> MorphologyPredictor:
    """The morphology predictor in a Lightning checkpoint (``.../morphology/best.ckpt``)."""
    regressor = regressor_from_checkpoint(ckpt_path)
    return MorphologyPredictor(
        MorphologyPrediction(regressor),
        regressor.n_bands,
        regressor.crop_size,
        regressor.band_scale_njy.tolist(),
        device=device,
    )
