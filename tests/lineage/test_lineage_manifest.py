"""The raw manifest: digest, checks against the archive, tampering named by file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits

from astroflow.io.fits_read import sha256_file
from astroflow.lineage import manifest


@pytest.fixture()
def archive(tmp_path, monkeypatch):
    """A small raw archive (bytes need not be FITS for hashing) under tmp_path/data/raw."""
    monkeypatch.chdir(tmp_path)
    files = {
        "data/raw/calib/bias_000.fits": b"bias" * 100,
        "data/raw/science/F00/F00_r_e0.fits": b"science" * 100,
        "data/catalogs/labels.ecsv": b"# %ECSV 1.0\nra dec class\n",
        "results/reduce/calib/master_bias.fits": b"master",
    }
    for rel, data in files.items():
        os.makedirs(os.path.dirname(rel), exist_ok=True)
        with open(rel, "wb") as fh:
            fh.write(data)
    inputs = {rel: sha256_file(rel) for rel in files}
    return tmp_path, manifest.build_manifest(inputs, exclude_under=tmp_path / "results/reduce")


def test_manifest_lists_raw_files_only(archive):
    root, m = archive
    paths = {f["path"]: f for f in m["files"]}
    assert set(paths) == {"data/raw/calib/bias_000.fits", "data/raw/science/F00/F00_r_e0.fits",
                          "data/catalogs/labels.ecsv"}
    assert paths["data/raw/calib/bias_000.fits"]["role"] == "calib"
    assert paths["data/raw/science/F00/F00_r_e0.fits"]["role"] == "science"
    assert paths["data/catalogs/labels.ecsv"]["role"] == "labels"
    assert paths["data/raw/calib/bias_000.fits"]["size_bytes"] == 400
    assert m["root"] == str(root / "data/raw")
    assert m["digest"] == manifest.manifest_digest(m["files"])


def test_intact_archive_passes_and_tampering_is_named(archive):
    root, m = archive
    assert manifest.check_files(m, root) == []
    target = root / "data/raw/science/F00/F00_r_e0.fits"
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF  # same size, different content
    target.write_bytes(bytes(data))
    (mismatch,) = manifest.check_files(m, root)
    assert mismatch.path == "data/raw/science/F00/F00_r_e0.fits"
    assert "sha256" in mismatch.problem
    target.unlink()
    (mismatch,) = manifest.check_files(m, root)
    assert mismatch.problem == "missing"


def test_added_exposure_changes_digest_and_is_unlisted(archive):
    root, m = archive
    extra = root / "data/raw/science/F00/F00_r_e1.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.int16)).writeto(extra)
    # a file that is not FITS is no exposure: a rerun would name it, not reduce it
    (root / "data/raw/science/F00/notes.txt").write_text("seeing was bad")
    assert manifest.unlisted_files(m, m["root"], root) == [str(extra)]
    inputs = {f["path"]: f["sha256"] for f in m["files"]}
    inputs["data/raw/science/F00/F00_r_e1.fits"] = sha256_file(extra)
    grown = manifest.build_manifest(inputs)
    assert grown["n_files"] == m["n_files"] + 1
    assert grown["digest"] != m["digest"]


def test_quarantined_files_are_recorded(archive):
    root, m = archive
    bad = root / "data/raw/science/F00/F00_g_e0.fits"
    bad.write_bytes(b"corrupt")
    inputs = {f["path"]: f["sha256"] for f in m["files"]}
    with_bad = manifest.build_manifest(inputs, quarantined=[str(bad)])
    entry = next(f for f in with_bad["files"] if f["quarantined"])
    assert entry["path"] == str(bad) and entry["sha256"] == sha256_file(bad)


def test_vanished_input_is_an_error_naming_it(archive):
    root, m = archive
    (root / "data/raw/calib/bias_000.fits").unlink()
    with pytest.raises(FileNotFoundError, match="bias_000.fits"):
        manifest.build_manifest({f["path"]: f["sha256"] for f in m["files"]})


def test_a_labels_catalog_in_any_format_is_the_labels(tmp_path, monkeypatch):
    """The stores name their catalog: a CSV catalog is the labels, not a science exposure
    (whose missing archive root would make reproduce refuse)."""
    monkeypatch.chdir(tmp_path)
    files = {"data/raw/F00_r.fits": b"r", "data/raw/F00_g.fits": b"g",
             "cats/labels.csv": b"ra,dec,class"}
    for rel, data in files.items():
        os.makedirs(os.path.dirname(rel), exist_ok=True)
        with open(rel, "wb") as fh:
            fh.write(data)
    inputs = {rel: sha256_file(rel) for rel in files}
    m = manifest.build_manifest(inputs, labels=["cats/labels.csv"])
    roles = {f["path"]: f["role"] for f in m["files"]}
    assert roles == {"data/raw/F00_r.fits": "science", "data/raw/F00_g.fits": "science",
                     "cats/labels.csv": "labels"}
    assert m["root"] == str(tmp_path / "data/raw")
