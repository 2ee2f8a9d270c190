"""Save, log and register the trained classifier as an MLflow model.

The served object is :class:`~astroflow.train.nets.GalaxyProbability`: raw nJy cutouts in,
``p_galaxy`` out, with crop and normalisation inside, so ``mlflow.pyfunc.load_model(dir)
.predict(cutouts)`` needs nothing else. The same model goes to ``results/train/<model>/model/``
(what Snakemake tracks and evaluation loads) and into the run's artifacts (registered).

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
from astroflow.train.nets import GalaxyProbability, StarGalaxyClassifier

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


def model_signature(n_bands: int) -> ModelSignature:
    """Input ``(N, n_bands, S, S)`` float32 nJy (any S >= crop); output ``(N,)`` p_galaxy."""
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, n_bands, -1, -1))])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1,))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def model_metadata(classifier: StarGalaxyClassifier) -> dict:
    """What a loader needs besides the program: bands, crop, scale (MLmodel ``metadata``)."""
    return {
        "astroflow_version": __version__,
        "output": "p_galaxy",
        "n_bands": classifier.n_bands,
        "crop_size": classifier.crop_size,
        "band_scale_njy": [float(v) for v in classifier.band_scale_njy],
    }


def pip_requirements() -> list[str]:
    """Pinned runtime requirements (the exported program needs no astroflow code)."""
    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"mlflow=={mlflow.__version__}",
    ]


def served_model(classifier: StarGalaxyClassifier) -> GalaxyProbability:
    """The CPU, eval-mode, contiguous-format module that gets exported."""
    model = GalaxyProbability(classifier).to("cpu").eval()
    return model.to(memory_format=torch.contiguous_format)


def export_example(example: np.ndarray) -> np.ndarray:
    """At least two cutouts: ``torch.export`` specialises a batch dimension of 1 to a constant,
    and the exported program would then refuse any other batch size."""
    example = np.asarray(example, dtype=np.float32)
    return example if len(example) >= 2 else np.repeat(example[:1], 2, axis=0)


def save_model_dir(classifier: StarGalaxyClassifier, model_dir: Path, example: np.ndarray) -> None:
    """Write the MLflow model directory (replacing an old one: save_model refuses to overwrite)."""
    model_dir = Path(model_dir)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    mlflow.pytorch.save_model(
        served_model(classifier),
        str(model_dir),
        signature=model_signature(classifier.n_bands),
        input_example=export_example(example),
        pip_requirements=pip_requirements(),
        metadata=model_metadata(classifier),
        serialization_format="pt2",
    )


def log_and_register(
    classifier: StarGalaxyClassifier, example: np.ndarray, registered_name: str
) -> mlflow.models.model.ModelInfo:
    """Log the model to the active run and register it as a new version of ``registered_name``."""
    return mlflow.pytorch.log_model(
        served_model(classifier),
        name=ARTIFACT_NAME,
        signature=model_signature(classifier.n_bands),
        input_example=export_example(example),
        pip_requirements=pip_requirements(),
        metadata=model_metadata(classifier),
        serialization_format="pt2",
        registered_model_name=registered_name,
    )
