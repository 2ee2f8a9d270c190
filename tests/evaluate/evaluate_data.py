"""A tiny but real dataset for evaluate tests: Zarr cutout stores, object table, index,
train split, train run record and a truth catalog, written to tmp_path.

Stars are PSF-sized Gaussians and galaxies wider ones, in nJy with noise, so that an image
statistic separates them imperfectly (faint objects are harder), and catalog columns follow the
same physics (concentration grows with size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from astropy.table import Table

from astroflow.config import validate

BANDS = ["g", "r", "i"]
PIXEL_SCALE_ARCSEC = 0.2
CUTOUT = 32
PSF_FWHM_ARCSEC = 0.9
#: Rows (per field) whose truth entry is put 2 arcsec away, so they match nothing; rows with
#: (row % 15) >= 10 are in the test region.
DISPLACED_ROWS = [3, 10, 11, 12, 25, 26]


def synthetic_catalog(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Catalog rows with a true class (column ``truth``) and correlated catalog features."""
    truth = (rng.random(n) < 0.6).astype(np.int8)
    mag_r = rng.uniform(18.0, 24.5, n)
    r_half = np.where(truth == 1, rng.lognormal(np.log(0.45), 0.4, n), 0.0)
    noise = 0.01 * 10 ** (0.3 * (mag_r - 18))  # photometric noise grows to the faint end
    conc = np.where(truth == 1, 0.9 * r_half, 0.0) + rng.normal(0, 1, n) * (0.02 + noise)
    colour = np.where(truth == 1, 0.7, 0.4) + rng.normal(0, 0.2, n)
    df = pd.DataFrame({
        "truth": truth,
        "mag_g": mag_r + colour,
        "mag_r": mag_r,
        "mag_i": mag_r - 0.5 * colour,
        "concentration": conc,
        "flux_radius_arcsec": np.hypot(PSF_FWHM_ARCSEC / 2, r_half) + rng.normal(0, 0.03, n),
        "ellipticity": np.where(truth == 1, rng.uniform(0, 0.6, n), rng.uniform(0, 0.08, n)),
        "psf_fwhm_arcsec": rng.normal(PSF_FWHM_ARCSEC, 0.05, n),
        "r_half_arcsec": r_half,
    })
    return df


def _cutouts(rng: np.random.Generator, cat: pd.DataFrame, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - size // 2
    r2 = xx**2 + yy**2
    psf_sigma_pix = PSF_FWHM_ARCSEC / 2.355 / PIXEL_SCALE_ARCSEC
    images = np.empty((len(cat), len(BANDS), size, size), dtype=np.float32)
    for k, row in enumerate(cat.itertuples()):
        sigma = np.hypot(psf_sigma_pix, row.r_half_arcsec / 1.177 / PIXEL_SCALE_ARCSEC)
        profile = np.exp(-r2 / (2 * sigma**2)) / (2 * np.pi * sigma**2)
        for b, band in enumerate(BANDS):
            flux_njy = 10 ** ((31.4 - getattr(row, f"mag_{band}")) / 2.5)
            images[k, b] = flux_njy * profile + rng.normal(0, 10.0, (size, size))
    return images


@dataclass
class TinyDataset:
    cfg: dict
    index: Path
    train_dir: Path
    truth: Path
    objects: pd.DataFrame


def make_tiny_dataset(
    root: Path, seed: int = 0, n_per_field: int = 150, cutout: int = CUTOUT
) -> TinyDataset:
    """Write the reduce and train outputs evaluate reads, for two fields; ``cutout`` [pixels]
    is the stamp side (32 keeps tests fast; the trained CNNs need 48)."""
    rng = np.random.default_rng(seed)
    reduce_dir = root / "reduce"
    (reduce_dir / "fields").mkdir(parents=True)
    tables, truth_rows, index_fields = [], [], {}
    for f, (ra0, dec0) in enumerate([(150.0, 2.0), (151.0, 2.5)]):
        field = f"F{f:02d}"
        cat = synthetic_catalog(rng, n_per_field)
        cat["field"] = field
        cat["row"] = np.arange(n_per_field)
        cat["object_id"] = [f"{field}-{i:06d}" for i in range(n_per_field)]
        # A 15 x 10 grid with 8 arcsec spacing: no two objects within a match radius.
        gx, gy = np.meshgrid(np.arange(15), np.arange(10))
        cat["ra"] = ra0 + gx.ravel()[:n_per_field] * 8 / 3600 / np.cos(np.radians(dec0))
        cat["dec"] = dec0 + gy.ravel()[:n_per_field] * 8 / 3600
        store = reduce_dir / "fields" / f"{field}.zarr"
        group = zarr.open_group(str(store), mode="w")
        arr = group.create_array("images", shape=(n_per_field, len(BANDS), cutout, cutout),
                                 chunks=(64, len(BANDS), cutout, cutout), dtype="float32")
        arr[:] = _cutouts(rng, cat, cutout)
        group.attrs.update({"bands": BANDS, "flux_unit": "nJy", "field": field})
        index_fields[field] = {"digest": f"d{f}", "n_objects": n_per_field,
                               "store": f"fields/{field}.zarr",
                               "objects": f"fields/{field}.objects.parquet"}
        # Truth: every object, but DISPLACED_ROWS sit 2 arcsec away from their detection.
        t = cat[["object_id", "ra", "dec", "truth", "mag_r"]].copy()
        t.loc[t.index[DISPLACED_ROWS], "dec"] += 2 / 3600
        truth_rows.append(t.assign(field=field))
        tables.append(cat)
    objects = pd.concat(tables, ignore_index=True)
    # Catalog labels: 70 % labelled, 3 % of those flipped.
    label = objects["truth"].to_numpy().astype(np.int8)
    flip = rng.random(len(label)) < 0.03
    label[flip] = 1 - label[flip]
    label[rng.random(len(label)) > 0.7] = -1
    objects["label"] = label
    objects.drop(columns=["truth", "r_half_arcsec"]).to_parquet(reduce_dir / "objects.parquet")
    (reduce_dir / "index.json").write_text(json.dumps({
        "fields": index_fields, "digest": "tiny-digest", "n_objects": len(objects),
        "n_quarantined": 0, "bands": BANDS,
    }))
    truth = pd.concat(truth_rows, ignore_index=True)
    truth_path = root / "truth.ecsv"
    Table({
        "id": np.arange(len(truth)), "field": truth["field"].to_numpy(),
        "ra": truth["ra"].to_numpy(), "dec": truth["dec"].to_numpy(),
        "class": np.where(truth["truth"] == 1, "galaxy", "star"),
        "mag_r": truth["mag_r"].to_numpy(),
    }).write(truth_path, format="ascii.ecsv")
    # Split by sky region: the east third of each field is the test region.
    train_dir = root / "train" / "toy"
    train_dir.mkdir(parents=True)
    col = np.tile(np.arange(15), 10)[:n_per_field]
    col = np.tile(col, 2)
    split = np.select([col >= 10, col == 9, col == 8], ["test", "buffer", "val"], "train")
    pd.DataFrame({"object_id": objects["object_id"], "split": split}).to_parquet(
        train_dir / "split.parquet")
    (train_dir / "run.json").write_text(json.dumps({"run_id": "train-run-123", "model": "toy"}))
    cfg = validate({
        "instrument": {"bands": BANDS, "pixel_scale_arcsec": PIXEL_SCALE_ARCSEC},
        "evaluate": {"n_bootstrap": 40, "mag_bins": [18.0, 21.0, 23.0, 24.5], "tta": True},
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "evaluate-test"},
    })
    return TinyDataset(cfg, reduce_dir / "index.json", train_dir, truth_path, objects)


class MomentNet:
    """Torch form of the moment classifier: ``(n, bands, S, S)`` tensor -> ``p_galaxy``;
    differentiable, so the stage can draw integrated-gradients saliency maps with it."""

    def __init__(self, band_index: int, radius0_pix: float, scale_pix: float):
        self.band_index = band_index
        self.radius0_pix = radius0_pix
        self.scale_pix = scale_pix

    def __call__(self, x):
        import torch

        img = x[:, self.band_index].double()
        s = img.shape[-1]
        yy, xx = torch.meshgrid(torch.arange(s) - s // 2, torch.arange(s) - s // 2,
                                indexing="ij")
        r2 = (xx**2 + yy**2).double()
        w = torch.clamp(img, min=0) * (r2 <= 64)  # within 8 pixels of the centre
        flux = w.sum(dim=(1, 2)) + 1e-9
        radius = torch.sqrt((w * r2).sum(dim=(1, 2)) / flux + 1e-12)
        return torch.sigmoid((radius - self.radius0_pix) / self.scale_pix).float()


class MomentScorer:
    """A real, simple classifier: logistic of the flux-weighted second-moment radius of the
    detection-band cutout (extended sources have larger moments). ``tta`` averages the 8
    rotations/flips, as the trained model's inference does. ``model`` is its torch form."""

    def __init__(self, band_index: int = 1, radius0_pix: float = 3.0, scale_pix: float = 0.2):
        self.model = MomentNet(band_index, radius0_pix, scale_pix)
        self.device = "cpu"
        self.calls: list[int] = []
        self.tta_flags: list[bool] = []

    def _p(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(images))).double().numpy()

    def predict_proba(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        self.calls.append(len(images))
        self.tta_flags.append(bool(tta))
        if not tta:
            return self._p(images)
        views = [np.rot90(images, k, axes=(2, 3)) for k in range(4)]
        views += [v[..., ::-1] for v in views]
        return np.mean([self._p(np.ascontiguousarray(v)) for v in views], axis=0)
