"""Truth and labels catalogs: contract columns; labels are a noisy, brighter-biased subset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from sim_helpers import tiny_config

from astroflow.simulate import catalogs, stage


def test_truth_has_the_contract_columns(tiny_archive):
    truth, cfg = tiny_archive["truth"], tiny_archive["cfg"]
    needed = ["id", "field", "ra", "dec", "class", "r_half_arcsec", "sersic_n", "ellipticity",
              "redshift"] + [f"mag_{b}" for b in cfg["instrument"]["bands"]]
    assert set(needed) <= set(truth.colnames)
    assert len(np.unique(truth["id"])) == len(truth)
    assert set(truth["class"]) == {"star", "galaxy"}
    assert set(truth["field"]) == {"F00", "F01"}
    stars = truth[truth["class"] == "star"]
    assert np.all(stars["r_half_arcsec"] == 0) and np.all(np.isnan(stars["redshift"]))
    frac = len(stars) / len(truth)
    sigma = np.sqrt(frac * (1 - frac) / len(truth))
    assert abs(frac - cfg["simulate"]["star_fraction"]) < 4 * sigma


def test_labels_are_a_noisy_brighter_subset_never_the_truth(tiny_archive):
    truth, labels, cfg = tiny_archive["truth"], tiny_archive["labels"], tiny_archive["cfg"]
    sim = cfg["simulate"]
    assert labels.colnames == ["ra", "dec", "class", "sersic_n", "ellipticity"]
    assert len(labels) == round(sim["label_fraction"] * len(truth)) < len(truth)
    assert set(labels["class"]) <= {"star", "galaxy"}
    idx, sep, _ = SkyCoord(labels["ra"], labels["dec"]).match_to_catalog_sky(
        SkyCoord(truth["ra"], truth["dec"]))
    assert np.all(sep.arcsec < 0.3)
    assert not np.all(sep.arcsec == 0)  # astrometric scatter
    matched = truth[idx]
    flipped = int(np.sum(np.asarray(matched["class"]) != np.asarray(labels["class"])))
    expected_flips = round(sim["label_noise"] * len(labels))
    assert expected_flips >= 1 and abs(flipped - expected_flips) <= 2
    assert np.median(matched["mag_r"]) < np.median(truth["mag_r"]) - 0.3
    assert labels.meta["n_flipped"] == expected_flips


def test_labels_morphology_is_noisy_truth_of_true_galaxies(tiny_archive):
    truth, labels = tiny_archive["truth"], tiny_archive["labels"]
    idx, _, _ = SkyCoord(labels["ra"], labels["dec"]).match_to_catalog_sky(
        SkyCoord(truth["ra"], truth["dec"]))
    matched = truth[idx]
    galaxy = np.asarray(matched["class"]) == "galaxy"
    n, e = np.asarray(labels["sersic_n"]), np.asarray(labels["ellipticity"])
    assert np.isnan(n[~galaxy]).all() and np.isnan(e[~galaxy]).all()
    assert np.isfinite(n[galaxy]).all() and np.isfinite(e[galaxy]).all()
    dex = np.log10(n[galaxy]) - np.log10(np.asarray(matched["sersic_n"])[galaxy])
    de = e[galaxy] - np.asarray(matched["ellipticity"])[galaxy]
    assert galaxy.sum() > 20
    assert np.abs(dex).max() < 5 * catalogs.LABEL_LOG_SERSIC_SCATTER_DEX
    assert np.abs(de).max() < 5 * catalogs.LABEL_ELLIPTICITY_SCATTER
    # noise of the stated size, not the truth copied
    assert 0.5 < np.std(dex) / catalogs.LABEL_LOG_SERSIC_SCATTER_DEX < 1.5
    assert ((e >= 0) & (e <= catalogs.LABEL_ELLIPTICITY_MAX))[galaxy].all()


def test_labels_with_full_fraction_and_no_noise_still_differ(tiny_archive):
    cfg = tiny_config(label_fraction=1.0, label_noise=0.0)
    labels = catalogs.make_labels(cfg, tiny_archive["truth"])
    assert len(labels) == len(tiny_archive["truth"])
    assert labels.colnames != tiny_archive["truth"].colnames
    assert not np.array_equal(np.asarray(labels["ra"]), np.asarray(tiny_archive["truth"]["ra"]))


def test_catalogs_command_merges_field_tables(tiny_archive, tmp_path):
    cfg = tiny_archive["cfg"]
    fields = sorted((tiny_archive["catalog_dir"] / "fields").glob("*.truth.ecsv"))
    rc = stage.main(["catalogs", "--config-json", json.dumps(cfg), "--truth-in",
                     *map(str, fields), "--truth-out", str(tmp_path / "t.ecsv"),
                     "--labels-out", str(tmp_path / "l.ecsv")])
    assert rc == 0
    assert (tmp_path / "t.ecsv").read_bytes() == (tiny_archive["catalog_dir"] / "truth.ecsv"
                                                  ).read_bytes()
    assert Table.read(tmp_path / "t.ecsv").meta["fields"] == ["F00", "F01"]


def test_not_a_truth_table_names_the_file(tmp_path):
    bad = tmp_path / "bad.ecsv"
    Table({"ra": [1.0], "dec": [2.0]}).write(bad, format="ascii.ecsv")
    with pytest.raises(ValueError, match="bad.ecsv"):
        catalogs.merge_truth([bad])
