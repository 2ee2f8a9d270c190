"""Corrupted checkpoints and model files give a clear error naming the file; no pickle runs code.

Checkpoints are loaded with ``weights_only=True``: a checkpoint whose pickle would call an
arbitrary function (here: create a marker file) is refused before that function runs, both
where evaluation rebuilds a classifier and where training looks for a fit to resume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from astroflow.train.fit import FINGERPRINT_KEY, LAST_CKPT, find_resume_checkpoint
from astroflow.train.inference import classifier_from_checkpoint, load_classifier
from astroflow.train.module import StarGalaxyModule

N_BANDS, CROP = 2, 44


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _module() -> StarGalaxyModule:
    torch.manual_seed(0)
    return StarGalaxyModule(
        model_name="kim_brunner",
        n_bands=N_BANDS,
        crop_size=CROP,
        band_scale_njy=[10.0, 12.0],
        optimizer="adamw",
        learning_rate=1e-3,
        weight_decay=1e-4,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real Lightning checkpoint of an (untrained) astroflow module."""
    import lightning as L

    root = tmp_path_factory.mktemp("ckpt")
    module = _module()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
        default_root_dir=str(root), enable_model_summary=False,
    )
    trainer.strategy.connect(module)
    path = root / "best.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_a_good_checkpoint_loads(checkpoint):
    classifier = classifier_from_checkpoint(checkpoint)
    assert classifier.n_bands == N_BANDS and classifier.crop_size == CROP


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupted_checkpoint_error_names_the_file(checkpoint, tmp_path, damage):
    bad = tmp_path / f"{damage}.ckpt"
    raw = checkpoint.read_bytes()
    bad.write_bytes(
        {"truncated": raw[: len(raw) // 2], "garbage": b"\x00junk" * 999, "empty": b""}[damage]
    )
    with pytest.raises(ValueError, match="not a readable checkpoint") as info:
        classifier_from_checkpoint(bad)
    assert str(bad) in str(info.value)


def test_malicious_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": _Payload(marker), "state_dict": {}}, evil)
    assert not marker.exists()
    with pytest.raises(ValueError, match=str(evil)):
        classifier_from_checkpoint(evil)
    assert not marker.exists()


def test_malicious_resume_checkpoint_is_ignored_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({FINGERPRINT_KEY: _Payload(marker)}, tmp_path / LAST_CKPT)
    assert find_resume_checkpoint(tmp_path, "any-fingerprint") is None
    assert not marker.exists()


@pytest.fixture(scope="module")
def model_dir(checkpoint, tmp_path_factory) -> Path:
    """A real MLflow model directory (torch.export program) saved from the checkpoint."""
    from astroflow.train.mlflow_model import save_model_dir

    out = tmp_path_factory.mktemp("model") / "model"
    example = np.random.default_rng(0).normal(size=(2, N_BANDS, 48, 48)).astype(np.float32)
    save_model_dir(classifier_from_checkpoint(checkpoint), out, example)
    return out


def _program_file(model_dir: Path) -> Path:
    (path,) = [p for p in model_dir.rglob("*.pt2")]
    return path


def test_corrupted_model_file_error_names_the_file(model_dir, tmp_path):
    import shutil

    bad_dir = tmp_path / "model"
    shutil.copytree(model_dir, bad_dir)
    program = _program_file(bad_dir)
    raw = program.read_bytes()
    program.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="cannot load the model") as info:
        load_classifier(bad_dir, device="cpu")
    assert str(bad_dir) in str(info.value)


def test_model_dir_without_mlmodel_is_named(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_classifier(tmp_path, device="cpu")
