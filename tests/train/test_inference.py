"""The saved models apply the training normalisation: pyfunc == checkpoint == in-memory module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from astroflow.train.augment import dihedral
from astroflow.train.inference import load_checkpoint, load_classifier
from astroflow.train.mlflow_model import save_model_dir  # imports mlflow.pyfunc quietly

from .conftest import quick_fit


@pytest.fixture(scope="module")
def trained(reduce_index, tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    _, module, _, index = quick_fit(reduce_index, out)
    images = zarr.open_group(index.stores["F00"], mode="r")["images"][:40]
    return module, out, images


def test_pyfunc_predict_equals_checkpoint_predict(trained):
    import mlflow.pyfunc  # already imported quietly by astroflow.train.mlflow_model

    module, out, images = trained
    module.eval()
    save_model_dir(module.classifier, out / "model", images[:2])
    p_pyfunc = np.asarray(mlflow.pyfunc.load_model(str(out / "model")).predict(images))
    p_ckpt = load_checkpoint(out / "best.ckpt").predict_proba(images)
    p_dir = load_classifier(out / "model").predict_proba(images, batch_size=7)
    with torch.no_grad():
        p_module = torch.sigmoid(module.classifier(torch.from_numpy(images))).numpy()
    assert p_pyfunc.shape == (40,) and p_ckpt.dtype == np.float64
    np.testing.assert_allclose(p_pyfunc, p_ckpt, rtol=0, atol=1e-6)
    np.testing.assert_allclose(p_dir, p_ckpt, rtol=0, atol=1e-6)
    np.testing.assert_allclose(p_module, p_ckpt, rtol=0, atol=1e-6)
    assert np.ptp(p_ckpt) > 0  # not a constant output
    # the normalisation scale travels with the model: rescaling the input changes predictions,
    # and the loaded model holds the fitted per-band scale
    loaded = load_classifier(out / "model")
    np.testing.assert_array_equal(loaded.band_scale_njy, np.float32(module.hparams.band_scale_njy))
    assert not np.allclose(loaded.predict_proba(images * 10), p_ckpt, atol=1e-3)


def test_tta_is_invariant_to_rotations_and_flips(trained):
    module, out, images = trained
    clf = load_checkpoint(out / "best.ckpt")
    p = clf.predict_proba(images, tta=True)
    for k in (1, 5):
        turned = dihedral(torch.from_numpy(images), k).numpy()
        np.testing.assert_allclose(clf.predict_proba(turned, tta=True), p, rtol=0, atol=1e-5)
    assert not np.allclose(p, clf.predict_proba(images, tta=False), atol=1e-7)
    assert ((p >= 0) & (p <= 1)).all()


def test_predict_rejects_wrong_band_count(trained):
    _, out, images = trained
    with pytest.raises(ValueError, match=r"expected \(N, 3, S, S\) cutouts"):
        load_checkpoint(out / "best.ckpt").predict_proba(images[:, :2])
