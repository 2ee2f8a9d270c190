"""The morphology task: 2-output heads, target standardisation undone inside the served model,
rows of labelled galaxies only, and the stage end to end with its own MLflow run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from astroflow.split import assign_splits
from astroflow.train.augment import (
    N_DIHEDRAL,
    dihedral,
    dihedral_spin2,
    random_dihedral,
    random_dihedral_k,
)
from astroflow.train.data import read_index, select_rows
from astroflow.train.inference import (
    load_classifier,
    load_morphology,
    load_morphology_checkpoint,
)
from astroflow.train.mlflow_model import save_model_dir  # imports mlflow.pyfunc quietly
from astroflow.train.morphology import (
    TARGETS,
    build_regressor,
    fit_target_scaler,
    to_target_space,
)
from astroflow.train.nets import NETS, StarGalaxyClassifier, build_net

from .conftest import quick_fit


def add_morphology_labels(index_path, seed: int = 11) -> None:
    """Give the fixture's labelled galaxies catalog morphology (NaN for the rest), in place."""
    rng = np.random.default_rng(seed)
    index = json.loads(index_path.read_text())
    for entry in index["fields"].values():
        path = index_path.parent / entry["objects"]
        table = pd.read_parquet(path)
        galaxy = table["label"].to_numpy() == 1
        table["label_sersic_n"] = np.where(galaxy, rng.uniform(0.8, 4.0, len(table)), np.nan)
        table["label_ellipticity"] = np.where(galaxy, rng.uniform(0.0, 0.6, len(table)), np.nan)
        table.loc[table.index[:3], "label_ellipticity"] = np.nan  # unknown for a few galaxies
        table.to_parquet(path, index=False)


@pytest.fixture(scope="module")
def morph_index(reduce_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("morph_reduce")
    shutil.copytree(reduce_index.parent, root, dirs_exist_ok=True)
    add_morphology_labels(root / "index.json")
    return root / "index.json"


@pytest.mark.parametrize("name", sorted(NETS))
def test_heads_give_one_logit_or_two_morphology_outputs(name):
    x = torch.randn(5, 3, 48, 48) * 50
    classifier = StarGalaxyClassifier(build_net(name, 3, 44), [10.0, 10.0, 10.0], 44).eval()
    regressor = build_regressor(name, 3, 44, [10.0] * 3, [0.3, 0.2], [0.2, 0.1]).eval()
    with torch.no_grad():
        assert classifier(x).shape == (5,)
        z = regressor(x)
        physical = regressor.physical(z)
    assert z.shape == (5, len(TARGETS)) and physical.shape == (5, 2)
    assert (physical[:, 0] > 0).all()
    assert ((physical[:, 1] >= 0) & (physical[:, 1] <= 1)).all()


def _elliptical_gaussian(e1: float, e2: float, size: int = 33) -> np.ndarray:
    """A Gaussian whose second moments have ellipticity ``(e1, e2)`` (distortion, x = column,
    y = row), centred on the central pixel."""
    yy, xx = np.mgrid[0:size, 0:size] - size // 2
    d = np.hypot(e1, e2)
    beta = 0.5 * np.arctan2(e2, e1)
    # Moments along and across the major axis: (a2 - b2) / (a2 + b2) = d.
    a2, b2 = 9.0 * (1 + d), 9.0 * (1 - d)
    u = np.cos(beta) * xx + np.sin(beta) * yy
    v = -np.sin(beta) * xx + np.cos(beta) * yy
    return np.exp(-0.5 * (u**2 / a2 + v**2 / b2))


def _moment_ellipticity(image: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]] - image.shape[0] // 2
    w = image / image.sum()
    ixx, iyy, ixy = (w * xx * xx).sum(), (w * yy * yy).sum(), (w * xx * yy).sum()
    return np.array([ixx - iyy, 2 * ixy]) / (ixx + iyy)


@pytest.mark.parametrize("e", [(0.3, 0.0), (0.0, -0.25), (0.2, 0.15)])
def test_ellipticity_components_turn_with_the_dihedral_augmentation(e):
    """Targets (e1, e2) must turn with the image (issue 25): measured on the transformed image,
    the moments' ellipticity is dihedral_spin2 of the original's, for each of the 8 transforms,
    and |g| does not change."""
    image = _elliptical_gaussian(*e)
    e0 = _moment_ellipticity(image)
    np.testing.assert_allclose(e0, e, atol=1e-3)
    x = torch.from_numpy(image)[None, None]
    for k in range(N_DIHEDRAL):
        turned = _moment_ellipticity(dihedral(x, k)[0, 0].numpy())
        expected = dihedral_spin2(torch.from_numpy(e0[None]), k)[0].numpy()
        np.testing.assert_allclose(turned, expected, atol=1e-9, err_msg=f"k={k}")
        assert np.hypot(*turned) == pytest.approx(np.hypot(*e0))


def test_random_dihedral_k_reports_the_transform_it_drew():
    x = torch.randn(16, 2, 12, 12)
    torch.manual_seed(5)
    out, ks = random_dihedral_k(x)
    for i, k in enumerate(ks.tolist()):
        assert torch.equal(out[i], dihedral(x[i : i + 1], k)[0])
    torch.manual_seed(5)
    assert torch.equal(random_dihedral(x), out)  # same draws, same pixels
    e = torch.randn(16, 2)
    per_row = torch.stack([dihedral_spin2(e[i : i + 1], int(k))[0] for i, k in enumerate(ks)])
    assert torch.equal(dihedral_spin2(e, ks), per_row)


def test_standardisation_round_trip_in_physical_units():
    targets = np.array([[1.0, 0.1], [4.0, 0.5], [2.0, 0.3], [1.5, 0.0]])
    mean, std = fit_target_scaler(targets)
    t = to_target_space(targets)
    np.testing.assert_allclose(mean, t.mean(axis=0))
    np.testing.assert_allclose(std, t.std(axis=0))
    assert mean[0] == pytest.approx(np.mean(np.log10([1.0, 4.0, 2.0, 1.5])))
    regressor = build_regressor("resnet", 3, 44, [1.0] * 3, mean, std)
    y = torch.tensor(targets, dtype=torch.float32)
    z = regressor.standardise(y)
    np.testing.assert_allclose(z.mean(dim=0).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(dim=0, unbiased=False).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(regressor.physical(z).numpy(), targets, rtol=1e-5, atol=1e-6)
    # Outside [0, 1] the served ellipticity is clamped.
    far = regressor.physical(torch.tensor([[0.0, -50.0], [0.0, 50.0]]))
    assert far[:, 1].tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    "targets, match",
    [
        (np.array([[1.0, 0.2]]), r"need \(N >= 2, 2\)"),
        (np.array([[1.0, 0.2], [np.nan, 0.1]]), "non-finite"),
        (np.array([[1.0, 0.2], [0.0, 0.1]]), "Sersic index <= 0"),
        (np.array([[2.0, 0.2], [2.0, 0.1]]), r"\['sersic_n'\] take a single value"),
    ],
)
def test_target_scaler_refuses_what_it_cannot_standardise(targets, match):
    with pytest.raises(ValueError, match=match):
        fit_target_scaler(targets)


def test_morphology_rows_are_labelled_galaxies_with_finite_targets(morph_index):
    index = read_index(morph_index)
    split = assign_splits(
        index.objects,
        {"cell_arcsec": 30.0, "buffer_arcsec": 2.0, "val_fraction": 0.2, "test_fraction": 0.2},
        seed=3,
    )
    merged = index.objects.merge(split[["object_id", "split"]], on="object_id")
    for name in ("train", "val", "test"):
        rows = select_rows(index, split, name, task="morphology")
        got = {(fr.store.stem, int(r)) for fr in rows for r in fr.rows}
        expect = merged[
            (merged["split"] == name)
            & (merged["label"] == 1)
            & merged["label_sersic_n"].notna()
            & merged["label_ellipticity"].notna()
        ]
        assert got == set(zip(expect["field"], expect["row"].astype(int), strict=True))
        for fr in rows:
            assert fr.labels.shape == (len(fr.rows), 2) and np.isfinite(fr.labels).all()
    with pytest.raises(ValueError, match="no morphology labels"):
        select_rows(read_index_without_morphology(morph_index), split, "train", "morphology")


def read_index_without_morphology(index_path):
    index = read_index(index_path)
    objects = index.objects.drop(columns=["label_sersic_n", "label_ellipticity"])
    return type(index)(index.root, index.digest, index.bands, index.stores, objects)


@pytest.fixture(scope="module")
def trained_regressor(morph_index, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_morph")
    trainer, module, dm, index = quick_fit(morph_index, out, task="morphology")
    images = zarr.open_group(index.stores["F00"], mode="r")["images"][:30]
    return trainer, module, out, images, dm


def test_morphology_fit_follows_val_loss_and_logs_nmad(trained_regressor):
    trainer, module, out, _, dm = trained_regressor
    assert trainer.checkpoint_callback.monitor == "val/loss"
    assert trainer.checkpoint_callback.mode == "min"
    for key in ("val/loss", "val/nmad_sersic_dex", "val/nmad_ellipticity", "val/bias_sersic_dex"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    mean, std = fit_target_scaler(dm.train_targets())
    assert module.hparams.target_mean == pytest.approx(mean)
    assert module.hparams.target_std == pytest.approx(std)
    assert (out / "best.ckpt").exists()


def test_pyfunc_morphology_equals_checkpoint_in_physical_units(trained_regressor):
    import mlflow.pyfunc

    _, module, out, images, _ = trained_regressor
    module.eval()
    save_model_dir(module.regressor, out / "model", images[:2])
    y_pyfunc = np.asarray(mlflow.pyfunc.load_model(str(out / "model")).predict(images))
    y_ckpt = load_morphology_checkpoint(out / "best.ckpt").predict(images)
    y_dir = load_morphology(out / "model").predict(images, batch_size=7)
    with torch.no_grad():
        z = module.regressor(torch.from_numpy(images)).double().numpy()
    # Undo the standardisation by hand: the exported model must have done exactly this.
    mean, std = np.asarray(module.hparams.target_mean), np.asarray(module.hparams.target_std)
    t = z * std + mean
    by_hand = np.column_stack([10 ** t[:, 0], np.clip(t[:, 1], 0.0, 1.0)])
    assert y_pyfunc.shape == (30, 2) and y_ckpt.dtype == np.float64
    np.testing.assert_allclose(y_pyfunc, y_ckpt, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_dir, y_ckpt, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_hand, y_ckpt, rtol=1e-4, atol=1e-5)
    assert (y_ckpt[:, 0] > 0).all() and ((y_ckpt[:, 1] >= 0) & (y_ckpt[:, 1] <= 1)).all()
    with pytest.raises(ValueError, match="a morphology model, not a classification one"):
        load_classifier(out / "model")


@pytest.mark.slow
def test_train_stage_morphology_end_to_end(tmp_path, monkeypatch, morph_index, train_cfg):
    from mlflow.tracking import MlflowClient

    from astroflow.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = {**train_cfg, "train": {**train_cfg["train"], "max_epochs": 1}}
    out = tmp_path / "results" / "train" / "kim_brunner" / "morphology"
    argv = [
        "train",
        "--config-json",
        json.dumps(cfg),
        "--model",
        "kim_brunner",
        "--task",
        "morphology",
        "--index",
        str(morph_index),
        "--out-dir",
        str(out),
        "--threads",
        "2",
    ]
    assert cli_main(argv) == 0
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["task"] == "morphology"
    assert run_info["registered_model"] == "astroflow-kim_brunner-morphology"
    assert np.isfinite(run_info["best_val_loss"])
    assert run_info["target_standardisation"]["targets"] == ["log10_sersic_n", "ellipticity"]
    index = read_index(morph_index)
    split = pd.read_parquet(out / "split.parquet")
    usable = (
        (index.objects["label"] == 1)
        & index.objects["label_sersic_n"].notna()
        & index.objects["label_ellipticity"].notna()
    ).to_numpy()
    assert run_info["split_counts"]["n_train_labelled"] == int(
        ((split["split"] == "train").to_numpy() & usable).sum()
    )
    client = MlflowClient(tracking_uri=cfg["tracking"]["uri"])
    run = client.get_run(run_info["run_id"])
    assert run.data.tags["task"] == "morphology" and run.info.run_name.endswith("-morphology")
    assert len(client.get_metric_history(run.info.run_id, "val/nmad_sersic_dex")) == 1
    assert run.data.metrics["best/val_loss"] == pytest.approx(run_info["best_val_loss"])
    versions = client.search_model_versions("name='astroflow-kim_brunner-morphology'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    y = load_morphology(out / "model").predict(
        zarr.open_group(index.stores["F01"], mode="r")["images"][:8]
    )
    assert y.shape == (8, 2) and np.isfinite(y).all()
