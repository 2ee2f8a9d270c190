"""Load a trained classifier and predict ``p_galaxy`` for raw cutouts (what evaluation uses).

Two sources give the same predictor: the MLflow model directory (``results/train/<m>/model``,
a ``torch.export`` program, no pickle) and a Lightning checkpoint (``best.ckpt``, loaded with
``weights_only=True`` and rebuilt from its hyperparameters). Both carry crop and
normalisation, so callers pass cutouts in nJy as stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from astroflow.train.augment import N_DIHEDRAL, dihedral
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
        if isinstance(model, GalaxyProbability):
            model = model.to(self.device).eval()
        # else: an exported program, already placed by its loader; it refuses .eval()
        self.model = model
        self.n_bands = int(n_bands)
        self.crop_size = int(crop_size)
        self.band_scale_njy = np.asarray(band_scale_njy, dtype=np.float32)

    def _check(self, images: np.ndarray) -> None:
        if (
            images.ndim != 4
            or images.shape[1] != self.n_bands
            or images.shape[2] != images.shape[3]
        ):
            raise ValueError(
                f"predict_proba: expected (N, {self.n_bands}, S, S) cutouts, got {images.shape}"
            )
        if images.shape[2] < self.crop_size:
            raise ValueError(
                f"predict_proba: {images.shape[2]}-pixel cutouts are smaller than the "
                f"{self.crop_size}-pixel crop the model was trained on"
            )

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
        out = np.empty(len(images), dtype=np.float64)
        n_batches = -(-len(images) // batch_size)
        for k, start in enumerate(range(0, len(images), batch_size)):
            batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
            # The model crops inside (an exported program accepts only the raw size), so TTA
            # transforms the whole square cutout: the same as transforming the centre crop
            # whenever S - crop is even (48 - 44), one pixel off-centre otherwise.
            x = torch.from_numpy(batch).to(self.device)
            if tta:
                p = torch.stack(
                    [self.model(dihedral(x, t).contiguous()) for t in range(N_DIHEDRAL)]
                ).mean(dim=0)
            else:
                p = self.model(x)
            out[start : start + len(x)] = p.double().cpu().numpy()
            if n_batches > 10 and (k + 1) % 10 == 0:
                log.info("predicted %d/%d batches", k + 1, n_batches)
        return out


def load_classifier(model_dir: str | Path, device: str | None = None) -> GalaxyClassifier:
    """The predictor saved in an MLflow model directory (``results/train/<model>/model``)."""
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
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = mlflow.pytorch.load_model(str(model_dir), map_location=device)
    except Exception as exc:  # torch/MLflow raise many types on a damaged program file
        raise ValueError(f"{model_dir}: cannot load the model (damaged file?): {exc}") from exc
    return GalaxyClassifier(
        model, meta["n_bands"], meta["crop_size"], meta["band_scale_njy"], device=device
    )


def classifier_from_checkpoint(ckpt_path: str | Path) -> StarGalaxyClassifier:
    """Rebuild the classifier from a Lightning checkpoint, loaded with ``weights_only=True``."""
    ckpt_path = Path(ckpt_path)
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
    net = build_net(hp["model_name"], hp["n_bands"], hp["crop_size"])
    classifier = StarGalaxyClassifier(net, hp["band_scale_njy"], hp["crop_size"])
    prefix = "classifier."
    classifier.load_state_dict(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    )
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
