"""`astroflow reduce field/index` end to end on the small archive: store, table, digest, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from reduce_archive import BANDS, ZP, build_archive, field_args, make_cfg

from astroflow.io import sha256_file
from astroflow.reduce.arrays import njy_per_e_per_s
from astroflow.reduce.field import reduce_field
from astroflow.reduce.stage import main


def run_field(archive, calib, out: Path, cfg: dict, threads: int = 2) -> Path:
    rc = main(field_args(cfg, archive, archive.science_paths, calib, out, threads))
    assert rc == 0
    return out


def run_calib(archive, cfg: dict, out: Path) -> Path:
    assert (
        main(
            [
                "calib",
                "--config-json",
                json.dumps(cfg),
                "--frames",
                *archive.calib_paths,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def epochs2(tmp_path_factory):
    """Two dithered epochs per band, reduced once (module scope)."""
    root = tmp_path_factory.mktemp("epochs2")
    archive = build_archive(root / "raw", n_epochs=2)
    cfg = make_cfg(root)
    calib = run_calib(archive, cfg, root / "calib")
    return archive, cfg, calib, run_field(archive, calib, root / "fields", cfg)


def test_zarr_store_round_trip_with_provenance(epochs2):
    archive, cfg, calib, out = epochs2
    group = zarr.open_group(str(out / "F00.zarr"), mode="r", zarr_format=3)
    table = pd.read_parquet(out / "F00.objects.parquet")
    n = len(table)
    assert n == 16  # every injected object, nothing spurious
    images = group["images"]
    assert images.shape == (n, len(BANDS), 32, 32) and images.dtype == np.float32
    assert images.chunks == (4, len(BANDS), 32, 32)
    assert type(images.compressors[0]).__name__ == "BloscCodec"
    assert group["variance"].shape == images.shape and group["mask"].dtype == np.uint8
    attrs = dict(group.attrs)
    assert attrs["bands"] == BANDS and attrs["flux_unit"] == "nJy" and attrs["field"] == "F00"
    assert attrs["n_objects"] == n and attrs["pixel_scale_arcsec"] == 0.2
    prov = attrs["provenance"]
    for path in [*archive.science_paths, archive.labels_path, *archive.calib_paths]:
        assert prov["inputs"][path] == sha256_file(path)
    assert prov["inputs"][str(calib / "master_bias.fits")] == sha256_file(
        calib / "master_bias.fits"
    )
    assert len(prov["config_hash"]) == 16 and prov["code_version"]

    expected_cols = [
        "object_id",
        "field",
        "row",
        "ra",
        "dec",
        "x",
        "y",
        "psf_fwhm_arcsec",
        "depth_mag_5sigma",
        "flux_radius_arcsec",
        "concentration",
        "ellipticity",
        "snr",
        "label",
    ]
    for b in BANDS:
        expected_cols += [f"mag_{b}", f"magerr_{b}", f"mag_psf_{b}", f"exposure_ids_{b}"]
    assert set(expected_cols) <= set(table.columns)
    assert table["row"].tolist() == list(range(n))
    assert table["object_id"].iloc[3] == "F00-000003"
    assert table["label"].dtype == np.int8
    assert table["exposure_ids_r"].iloc[0] == "1002,1003"


def test_flags_column_follows_the_stored_mask_planes(epochs2):
    """The field job's ``flags`` are what the flags module gives on the store's own mask
    plane, exposure ids and positions, and the store names every bit."""
    from astroflow.reduce.flags import FLAG_BITS, FlagSettings, object_flags

    archive, cfg, calib, out = epochs2
    group = zarr.open_group(str(out / "F00.zarr"), mode="r", zarr_format=3)
    table = pd.read_parquet(out / "F00.objects.parquet")
    assert table["flags"].dtype == np.int32
    n_exp = np.array([[len(s.split(",")) if s else 0 for s in table[f"exposure_ids_{b}"]]
                      for b in BANDS]).T
    expected = object_flags(group["mask"][:], n_exp, table[["x", "y"]].to_numpy(),
                            cfg["instrument"]["pixel_scale_arcsec"],
                            FlagSettings.from_config(cfg["reduce"]["flags"]))
    assert table["flags"].tolist() == expected.tolist()
    assert set(group.attrs["flag_bits"]) == {str(b) for b in FLAG_BITS.values()}


def test_photometry_labels_and_flux_units(epochs2):
    archive, cfg, calib, out = epochs2
    table = pd.read_parquet(out / "F00.objects.parquet")
    images = zarr.open_group(str(out / "F00.zarr"), mode="r")["images"][...]
    truth = pd.DataFrame(
        [
            {
                "ra": o["ra"],
                "dec": o["dec"],
                "star": o["star"],
                **{f"flux_{b}": o["flux"][b] for b in BANDS},
            }
            for o in archive.objects
        ]
    )
    d = (
        np.hypot(
            (table["ra"].to_numpy()[:, None] - truth["ra"].to_numpy()) * np.cos(0.035),
            table["dec"].to_numpy()[:, None] - truth["dec"].to_numpy(),
        )
        * 3600
    )
    match = d.argmin(axis=1)
    assert np.all(d.min(axis=1) < 0.1)  # astrometry through the WCS within 0.1 arcsec
    t = truth.iloc[match].reset_index(drop=True)
    stars = t["star"].to_numpy()
    for b_index, b in enumerate(BANDS):
        true_mag = ZP[b] - 2.5 * np.log10(t[f"flux_{b}"])
        # PSF-aperture magnitudes of stars are unbiased after the aperture correction
        assert np.median(np.abs(table[f"mag_psf_{b}"][stars] - true_mag[stars])) < 0.05
        # cutouts are in nJy: a star's stamp holds its total flux
        factor = njy_per_e_per_s(ZP[b])
        star_rows = np.flatnonzero(stars & (t[f"flux_{b}"] > 2000))
        sums = images[star_rows, b_index].sum(axis=(1, 2))
        np.testing.assert_allclose(sums, t[f"flux_{b}"].to_numpy()[star_rows] * factor, rtol=0.05)
    # concentration separates the injected classes
    conc = table["concentration"].to_numpy()
    assert conc[~stars].min() > conc[stars].max() - 0.05
    assert np.median(np.abs(conc[stars])) < 0.03
    # first 12 truth objects are labelled (star=0, galaxy=1), the rest -1
    expected = np.where(match < 12, np.where(stars, 0, 1), -1)
    np.testing.assert_array_equal(table["label"].to_numpy(), expected)


def test_same_inputs_give_identical_bytes_and_digest(epochs2, tmp_path):
    archive, cfg, calib, out = epochs2
    again = run_field(archive, calib, tmp_path, cfg, threads=1)
    a = zarr.open_group(str(out / "F00.zarr"), mode="r")
    b = zarr.open_group(str(again / "F00.zarr"), mode="r")
    assert a.attrs["digest"] == b.attrs["digest"]
    for chunk in sorted((out / "F00.zarr").rglob("c/*/*/*/*")):
        twin = again / "F00.zarr" / chunk.relative_to(out / "F00.zarr")
        assert chunk.read_bytes() == twin.read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "F00.objects.parquet"), pd.read_parquet(again / "F00.objects.parquet")
    )


def test_index_gathers_fields_and_logs_one_mlflow_run(epochs2, tmp_path, monkeypatch):
    import mlflow

    archive, cfg, calib, out = epochs2
    # the config's tracking URI, not one an earlier test's mlflow.set_tracking_uri exported
    # (and restored afterwards: mlflow.set_tracking_uri below exports it too)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg["tracking"]["uri"])
    rc = main(
        [
            "index",
            "--config-json",
            json.dumps(cfg),
            "--field-dir",
            str(out),
            "--fields",
            "F00",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    index = json.loads((tmp_path / "index.json").read_text())
    field_digest = zarr.open_group(str(out / "F00.zarr"), mode="r").attrs["digest"]
    assert index["fields"]["F00"]["digest"] == field_digest
    assert index["n_objects"] == 16 and index["n_quarantined"] == 0 and index["bands"] == BANDS
    assert (tmp_path / index["fields"]["F00"]["store"]).resolve() == (out / "F00.zarr").resolve()
    assert len(pd.read_parquet(tmp_path / "objects.parquet")) == 16
    assert json.loads((tmp_path / "quarantine.json").read_text()) == []
    mlflow.set_tracking_uri(cfg["tracking"]["uri"])
    runs = mlflow.search_runs(experiment_names=[cfg["tracking"]["experiment"]])
    run = runs[runs["tags.stage"] == "reduce"].iloc[0]
    assert run["metrics.n_objects"] == 16 and run["metrics.n_fields"] == 1
    assert run["tags.dataset_digest"] == index["digest"]
    assert run["params.dask_scheduler"] == "processes"  # the scheduler the fields ran on


def test_local_dask_cluster_gives_the_same_dataset(epochs2, tmp_path):
    """dask.scheduler = local (a distributed LocalCluster) reduces to the same bytes."""
    archive, cfg, calib, out = epochs2
    local_cfg = {
        **cfg,
        "dask": {"scheduler": "local", "local": {"n_workers": 1, "processes": False}},
    }
    again = run_field(archive, calib, tmp_path, local_cfg, threads=2)
    store = zarr.open_group(str(again / "F00.zarr"), mode="r")
    assert store.attrs["dask"]["scheduler"] == "local"
    assert store.attrs["digest"] == zarr.open_group(str(out / "F00.zarr"), mode="r").attrs["digest"]


def test_spawned_workers_give_the_same_dataset(epochs2, tmp_path, monkeypatch):
    """Where workers cannot be forked (macOS), they are spawned: they import afresh, load the
    masters themselves and take the catalog from the board; the bytes are the same."""
    import multiprocessing

    import astroflow.dask_cluster

    archive, cfg, calib, out = epochs2
    spawn = multiprocessing.get_context("spawn")
    monkeypatch.setattr(astroflow.dask_cluster, "_worker_context", lambda: spawn)
    cfg = {**cfg, "reduce": {**cfg["reduce"], "exposure_cache": False}}  # all made afresh
    again = run_field(archive, calib, tmp_path, cfg, threads=2)
    store = zarr.open_group(str(again / "F00.zarr"), mode="r")
    assert store.attrs["dask"] == {"scheduler": "processes", "num_workers": 2,
                                   "start_method": "spawn"}
    assert store.attrs["digest"] == zarr.open_group(str(out / "F00.zarr"), mode="r").attrs["digest"]


def test_tile_compressed_archive_gives_the_same_dataset(tmp_path):
    """.fits.fz (RICE, lossless for integers) must reduce to exactly the plain-FITS result."""
    digests = []
    for compress in (False, True):
        root = tmp_path / f"c{compress}"
        archive = build_archive(root / "raw", compress=compress, seed=11)
        assert archive.science_paths[0].endswith(".fits.fz" if compress else ".fits")
        cfg = make_cfg(root)
        calib = run_calib(archive, cfg, root / "calib")
        out = run_field(archive, calib, root / "fields", cfg, threads=1)
        digests.append(zarr.open_group(str(out / "F00.zarr"), mode="r").attrs["digest"])
    assert digests[0] == digests[1]


def test_a_failing_task_names_its_exposures(epochs2, tmp_path, monkeypatch):
    """A task that raises (a bug, a worker killed) fails the job with the exposures it had."""
    from astroflow.reduce.exposure_work import ExposureWork

    archive, cfg, calib, _ = epochs2
    cfg = {**cfg, "reduce": {**cfg["reduce"], "exposure_cache": False}}  # nothing kept to reuse

    def broken(self, exposure, sha256, catalog):
        raise ZeroDivisionError("division by zero in the cutouts")

    monkeypatch.setattr(ExposureWork, "product", broken)
    with pytest.raises(RuntimeError, match=r"the task reducing .*F00.* failed: ZeroDivision"):
        reduce_field(
            cfg, "F00", archive.science_paths, str(calib), archive.labels_path,
            str(tmp_path / "F00.zarr"), str(tmp_path / "F00.objects.parquet"),
            str(tmp_path / "F00.quarantine.json"), threads=1, cache_dir=None,
        )  # fmt: skip
    assert not (tmp_path / "F00.zarr").exists()
