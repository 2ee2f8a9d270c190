"""Save, log and register the trained classifier (or morphology regressor) as an MLflow model.

The served object is :class:`~astroflow.train.nets.GalaxyProbability`: raw nJy cutouts in,
``p_galaxy`` out, with crop and normalisation inside, so ``mlflow.pyfunc.load_model(dir)
.predict(cutouts)`` needs nothing else. For the morphology task it is
:class:`~astroflow.train.morphology.MorphologyPrediction`: raw cutouts in, ``(N, 2)``
``(sersic_n, ellipticity)`` out in physical units, the target standardisation undone inside.
The same model goes to ``results/train/<model>/model/`` (what Snakemake tracks and evaluation
loads) and into the run's artifacts (registered).

The model is stored as a ``torch.export`` program (MLflow's ``pt2`` format), not a pickle:
loading it runs no arbitrary code and does not need astroflow installed; batch and spatial
sizes stay dynamic, so any ``S >= crop`` works.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from astroflow import __version__
from astroflow.train.morphology import TARGETS, MorphologyPrediction, MorphologyRegressor
from astroflow.train.nets import GalaxyProbability, StarGalaxyClassifier

#: A trained network of either task.
Trained = StarGalaxyClassifier | MorphologyRegressor

ARTIFACT_NAME = "model"


def import_mlflow_flavors() -> None:
    """Import ``mlflow.pyfunc`` and ``mlflow.pytorch``, ignoring one import-time warning.

    MLflow 3.17 builds a schema for its chat-agent types when ``mlflow.pyfunc`` is first
    imported and warns (UserWarning, "Any type hint is inferred as AnyType") about its own
    type hints; nothing we can act on, and an error under the tests' warning filter.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*Any type hint is inferred as AnyType", category=UserWarning
        )
        import mlflow.pyfunc  # noqa: F401
        import mlflow.pytorch  # noqa: F401


import_mlflow_flavors()


def model_signature(n_bands: int, n_outputs: int = 1) -> ModelSignature:
    """Input ``(N, n_bands, S, S)`` float32 nJy (any S >= crop); output ``(N,)`` p_galaxy, or
    ``(N, n_outputs)`` for a regressor."""
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, n_bands, -1, -1))])
    shape = (-1,) if n_outputs == 1 else (-1, n_outputs)
    outputs = Schema([TensorSpec(np.dtype(np.float32), shape)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def model_metadata(classifier: Trained) -> dict:
    """What a loader needs besides the program: task, bands, crop, scale (MLmodel
    ``metadata``); for morphology also the output columns and the target standardisation."""
    meta = {
        "astroflow_version": __version__,
        "task": "classification",
        "output": "p_galaxy",
        "n_bands": classifier.n_bands,
        "crop_size": classifier.crop_size,
        "band_scale_njy": [float(v) for v in classifier.band_scale_njy],
    }
    if isinstance(classifier, MorphologyRegressor):
        meta.update(
            task="morphology",
            output=list(TARGETS),
            target_transform=["log10", "identity"],
            target_mean=[float(v) for v in classifier.target_mean],
            target_std=[float(v) for v in classifier.target_std],
        )
    return meta


def _signature(classifier: Trained) -> ModelSignature:
    n_outputs = len(TARGETS) if isinstance(classifier, MorphologyRegressor) else 1
    return model_signature(classifier.n_bands, n_outputs)


def pip_requirements() -> list[str]:
    """Pinned runtime requirements (the exported program needs no astroflow code)."""
    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"mlflow=={mlflow.__version__}",
    ]


def served_model(classifier: Trained) -> GalaxyProbability | MorphologyPrediction:
    """The CPU, eval-mode, contiguous-format module that gets exported."""
    if isinstance(classifier, MorphologyRegressor):
        model = MorphologyPrediction(classifier).to("cpu").eval()
    else:
        model = GalaxyProbability(classifier).to("cpu").eval()
    return model.to(memory_format=torch.contiguous_format)


def export_example(example: np.ndarray) -> np.ndarray:
    """At least two cutouts: ``torch.export`` specialises a batch dimension of 1 to a constant,
    and the exported program would then refuse any other batch size."""
    example = np.asarray(example, dtype=np.float32)
    return example if len(example) >= 2 else np.repeat(example[:1], 2, axis=0)


def save_model_dir(classifier: Trained, model_dir: Path, example: np.ndarray) -> None:
    """Write the MLflow model directory (replacing an old one: save_model refuses to overwrite)."""
    model_dir = Path(model_dir)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    mlflow.pytorch.save_model(
        served_model(classifier),
        str(model_dir),
        signature=_signature(classifier),
        input_example=export_example(example),
        pip_requirements=pip_requirements(),
        metadata=model_metadata(classifier),
        serialization_format="pt2",
    )


def log_and_register(
    classifier: Trained, example: np.ndarray, registered_name: str
) -> mlflow.models.model.ModelInfo:
    """Log the model to the active run and register it as a new version of ``registered_name``."""
    return mlflow.pytorch.log_model(
        served_model(classifier),
        name=ARTIFACT_NAME,
        signature=_signature(classifier),
        input_example=export_example(example),
        pip_requirements=pip_requirements(),
        metadata=model_metadata(classifier),
        serialization_format="pt2",
        registered_model_name=registered_name,
    )
