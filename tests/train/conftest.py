"""A small but real reduce-stage output for the train tests.

Written exactly per docs/data_contracts.md "Reduce outputs": per-field Zarr v3 groups with
``images (N, n_bands, S, S) float32`` in nJy (Blosc-compressed, chunked along N), per-field
object tables in parquet, and ``index.json`` with digests. Stars are circular Gaussians at the
seeing FWHM, galaxies broader elliptical exponential profiles, with sky noise, so a CNN can
learn the difference in a few epochs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

BANDS = ["g", "r", "i"]
CUTOUT = 48
CHUNK = 64
PIXEL_SCALE_ARCSEC = 0.2
FIELD_CENTRES = {"F00": (150.00, 2.00), "F01": (150.06, 2.00)}
FIELD_SIDE_ARCSEC = 150.0
SKY_SIGMA_NJY = 15.0


def _render(
    rng: np.random.Generator, is_galaxy: bool, mag_r: float, colours: np.ndarray
) -> np.ndarray:
    """One ``(n_bands, S, S)`` cutout in nJy: a profile at a sub-pixel offset plus sky noise."""
    yy, xx = np.mgrid[0:CUTOUT, 0:CUTOUT].astype(np.float64)
    cy, cx = CUTOUT // 2 + rng.uniform(-0.5, 0.5, size=2)
    dy, dx = yy - cy, xx - cx
    if is_galaxy:
        r_half_pix = rng.uniform(2.5, 6.0)
        q = rng.uniform(0.4, 1.0)
        theta = rng.uniform(0, np.pi)
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / q
        profile = np.exp(-1.678 * np.hypot(u, v) / r_half_pix)
    else:
        sigma_pix = 0.9 / PIXEL_SCALE_ARCSEC / 2.3548 * rng.uniform(0.9, 1.1)
        profile = np.exp(-0.5 * (dx**2 + dy**2) / sigma_pix**2)
    profile /= profile.sum()
    out = np.empty((len(BANDS), CUTOUT, CUTOUT), dtype=np.float32)
    for b in range(len(BANDS)):
        flux_njy = 10 ** (-0.4 * (mag_r + colours[b] - 31.4))
        out[b] = flux_njy * profile + rng.normal(0.0, SKY_SIGMA_NJY, size=profile.shape)
    return out


def write_reduce_outputs(root: Path, n_per_field: int = 160, seed: int = 7) -> Path:
    """Write fields/<field>.zarr, fields/<field>.objects.parquet and index.json under ``root``."""
    rng = np.random.default_rng(seed)
    fields_dir = root / "fields"
    fields_dir.mkdir(parents=True, exist_ok=True)
    index_fields = {}
    all_tables = []
    for field, (ra0, dec0) in FIELD_CENTRES.items():
        half = FIELD_SIDE_ARCSEC / 2 / 3600
        dec = dec0 + rng.uniform(-half, half, n_per_field)
        ra = ra0 + rng.uniform(-half, half, n_per_field) / np.cos(np.radians(dec0))
        is_galaxy = rng.random(n_per_field) < 0.6
        mag_r = rng.uniform(18.0, 22.5, n_per_field)
        colours = rng.normal(0.0, 0.3, size=(n_per_field, len(BANDS)))
        images = np.stack(
            [_render(rng, bool(g), m, c) for g, m, c in zip(is_galaxy, mag_r, colours, strict=True)]
        )
        label = np.where(is_galaxy, 1, 0).astype(np.int8)
        label[rng.random(n_per_field) < 0.15] = -1
        table = pd.DataFrame(
            {
                "object_id": [f"{field}-{k:06d}" for k in range(n_per_field)],
                "field": field,
                "row": np.arange(n_per_field, dtype=np.int64),
                "ra": ra,
                "dec": dec,
                "psf_fwhm_arcsec": 0.9,
                "label": label,
            }
        )
        for b, band in enumerate(BANDS):
            table[f"mag_{band}"] = mag_r + colours[:, b]
        store = fields_dir / f"{field}.zarr"
        group = zarr.open_group(store, mode="w", zarr_format=3)
        arr = group.create_array(
            "images",
            shape=images.shape,
            chunks=(CHUNK, len(BANDS), CUTOUT, CUTOUT),
            dtype="float32",
            compressors=[zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")],
        )
        arr[:] = images
        group.attrs.update(
            {
                "bands": BANDS,
                "pixel_scale_arcsec": PIXEL_SCALE_ARCSEC,
                "flux_unit": "nJy",
                "field": field,
                "provenance": {"inputs": {}, "config_hash": "test", "code_version": "test"},
                "n_objects": n_per_field,
            }
        )
        objects_path = fields_dir / f"{field}.objects.parquet"
        table.to_parquet(objects_path, index=False)
        digest = hashlib.sha256(images.tobytes() + table.to_csv(index=False).encode()).hexdigest()
        index_fields[field] = {
            "digest": digest,
            "n_objects": n_per_field,
            "store": f"fields/{field}.zarr",
            "objects": f"fields/{field}.objects.parquet",
        }
        all_tables.append(table)
    pd.concat(all_tables, ignore_index=True).to_parquet(root / "objects.parquet", index=False)
    digest = hashlib.sha256(
        "".join(index_fields[f]["digest"] for f in sorted(index_fields)).encode()
    ).hexdigest()
    index = {
        "fields": index_fields,
        "digest": digest,
        "n_objects": n_per_field * len(FIELD_CENTRES),
        "n_quarantined": 0,
        "bands": BANDS,
    }
    (root / "quarantine.json").write_text("[]")
    index_path = root / "index.json"
    index_path.write_text(json.dumps(index, indent=2))
    return index_path


@pytest.fixture(scope="session")
def reduce_index(tmp_path_factory) -> Path:
    """Path of a fixture ``results/reduce/index.json`` (2 fields, 3 bands, 320 objects)."""
    return write_reduce_outputs(tmp_path_factory.mktemp("reduce"))


@pytest.fixture()
def train_cfg(tmp_path) -> dict:
    """A validated tiny config matching the fixture dataset, tracking into a temporary sqlite."""
    from astroflow.config import validate

    return validate(
        {
            "seed": 3,
            "instrument": {"bands": BANDS, "pixel_scale_arcsec": PIXEL_SCALE_ARCSEC},
            "reduce": {"cutout_size": CUTOUT, "chunk_objects": CHUNK},
            "train": {
                "models": ["kim_brunner"],
                "max_epochs": 2,
                "batch_size": 32,
                "split": {"cell_arcsec": 30.0, "buffer_arcsec": 2.0},
            },
            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "astroflow-test"},
        },
        source="tests/train/conftest.py",
    )


def quick_fit(index_path: Path, out: Path, task: str = "classification"):
    """(trainer, module, datamodule, index) of a 2-batch, 1-epoch resnet fit on a fixture
    dataset: enough to test what a fit leaves behind, not how well it learns."""
    from astroflow.config import validate
    from astroflow.split import assign_splits
    from astroflow.train.data import CutoutDataModule, read_index
    from astroflow.train.fit import train_model

    cfg = validate(
        {
            "seed": 3,
            "instrument": {"bands": ["g", "r", "i"]},
            "train": {"max_epochs": 1, "batch_size": 16, "models": ["resnet"]},
        }
    )
    index = read_index(index_path)
    split = assign_splits(index.objects, cfg["train"]["split"], seed=cfg["seed"])
    dm = CutoutDataModule.from_config(cfg, index, split, task=task)
    if task == "morphology":
        dm.check_targets()
    trainer, module = train_model(
        cfg,
        "resnet",
        dm,
        out,
        limit_train_batches=2,
        limit_val_batches=2,
        enable_progress_bar=False,
    )
    return trainer, module, dm, index
