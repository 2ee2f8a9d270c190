"""The raw archive follows docs/data_contracts.md keyword for keyword, and is reproducible."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest
from astropy.io import fits
from sim_helpers import detector_pixels, tiny_config

from astroflow.simulate import camera, layout, stage

PRIMARY_KEYS = ("INSTRUME", "TELESCOP", "OBJECT", "EXPTIME", "DATE-OBS", "MJD-OBS", "AIRMASS",
                "EXPNUM", "IMAGETYP", "NAMPS")
AMP_KEYS = ("BIASSEC", "DATASEC", "TRIMSEC", "DETSEC", "GAIN", "RDNOISE", "SATURATE")


def _section(value: str) -> tuple[int, int, int, int]:
    xs, ys = value.strip("[]").split(",")
    x1, x2 = (int(v) for v in xs.split(":"))
    y1, y2 = (int(v) for v in ys.split(":"))
    return x1, x2, y1, y2


def test_every_file_has_the_contract_keywords(tiny_archive):
    cfg, raw = tiny_archive["cfg"], tiny_archive["raw_dir"]
    ny, nx = cfg["instrument"]["amp_shape"]
    n_over = cfg["instrument"]["overscan_cols"]
    expnums, types = [], set()
    for path in sorted(raw.rglob("*.fits")):
        with fits.open(path) as hdul:
            h0 = hdul[0].header
            assert hdul[0].data is None, path
            for key in PRIMARY_KEYS:
                assert key in h0, f"{path}: primary lacks {key}"
            types.add(h0["IMAGETYP"])
            expnums.append(h0["EXPNUM"])
            assert h0["NAMPS"] == cfg["instrument"]["n_amps"] == len(hdul) - 1
            if h0["IMAGETYP"] in ("object", "flat"):
                assert h0["FILTER"] in cfg["instrument"]["bands"]
            if h0["IMAGETYP"] == "bias":
                assert h0["EXPTIME"] == 0.0
            gains = []
            for k in range(1, len(hdul)):
                hdu = hdul[k]
                h = hdu.header
                assert h["EXTNAME"] == f"AMP{k}"
                assert h["BITPIX"] == 16 and h["BZERO"] == 32768 and h["BSCALE"] == 1
                assert hdu.data.dtype == np.uint16 and hdu.data.shape == (ny, nx + n_over)
                for key in AMP_KEYS:
                    assert key in h, f"{path}[AMP{k}] lacks {key}"
                assert h["DATASEC"] == h["TRIMSEC"] == f"[1:{nx},1:{ny}]"
                assert _section(h["BIASSEC"]) == (nx + 1, nx + n_over, 1, ny)
                assert _section(h["DETSEC"]) == ((k - 1) * nx + 1, k * nx, 1, ny)
                assert hdu.data.max() <= h["SATURATE"]
                gains.append(h["GAIN"])
                if h0["IMAGETYP"] == "object":
                    assert h["CTYPE1"] == "RA---TAN" and h["CTYPE2"] == "DEC--TAN"
            assert len(set(gains)) == len(gains), "gain must differ per amplifier"
    assert types == {"bias", "dark", "flat", "object"}
    assert len(expnums) == len(set(expnums))


def test_amp_wcs_places_truth_objects_consistently(tiny_archive):
    """Both amps' WCS give the same detector pixel for the same sky position."""
    cfg, truth = tiny_archive["cfg"], tiny_archive["truth"]
    path = layout.science_files(cfg, tiny_archive["raw_dir"], "F01")[1]
    sel = truth[truth["field"] == "F01"]
    with fits.open(path) as hdul:
        x1, y1 = detector_pixels(hdul[1].header, sel["ra"], sel["dec"])
        x2, y2 = detector_pixels(hdul[2].header, sel["ra"], sel["dec"])
        ra0, dec0 = layout.field_center_deg(1)
        cx = cfg["instrument"]["n_amps"] * cfg["instrument"]["amp_shape"][1] / 2
    np.testing.assert_allclose(x1, x2, atol=1e-6)
    np.testing.assert_allclose(y1, y2, atol=1e-6)
    # field centre within the dither of the detector centre (4 arcsec = 20 pixels)
    from astropy.wcs import WCS

    xc, _ = WCS(hdul[1].header).all_world2pix(ra0, dec0, 0)
    assert abs(xc - (cx - 0.5)) < 21


def test_two_runs_are_byte_identical(tmp_path):
    cfg = tiny_config(n_fields=1, n_bias=1, n_dark=1, n_flat=1)
    cfg["instrument"]["bands"] = ["r", "i"]
    for run in ("a", "b"):
        rc = stage.main(["all", "--config-json", json.dumps(cfg), "--raw-dir",
                         str(tmp_path / run / "raw"), "--catalog-dir", str(tmp_path / run / "cat")])
        assert rc == 0
    root = tmp_path / "a"
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert len(files) == 4 + 2 + 3  # calib, science, truth F00 + truth + labels
    for rel in files:
        assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False), rel
    other = tiny_config(n_fields=1, n_bias=1, n_dark=1, n_flat=1)
    other["instrument"]["bands"] = ["r", "i"]
    other["seed"] = 7
    stage.main(["calib", "--config-json", json.dumps(other), "--raw-dir", str(tmp_path / "c")])
    assert not filecmp.cmp(root / "raw/calib/bias_000.fits", tmp_path / "c/calib/bias_000.fits",
                           shallow=False)


def test_compressed_archive_holds_the_same_pixels(tmp_path):
    cfg = tiny_config(n_fields=1, n_bias=1, n_dark=0, n_flat=1)
    cfg["instrument"]["bands"] = ["r"]
    plain = cfg | {"simulate": cfg["simulate"] | {"compress": False}}
    packed = cfg | {"simulate": cfg["simulate"] | {"compress": True}}
    for name, c in (("plain", plain), ("packed", packed)):
        argv = ["field", "--config-json", json.dumps(c), "--field", "F00", "--raw-dir",
                str(tmp_path / name), "--truth-out", str(tmp_path / f"{name}.ecsv")]
        assert stage.main(argv) == 0
    a = fits.open(tmp_path / "plain/science/F00/F00_r_e0.fits")
    b = fits.open(tmp_path / "packed/science/F00/F00_r_e0.fits.fz")
    with a, b:
        assert isinstance(b[1], fits.CompImageHDU) and b[1].header["EXTNAME"] == "AMP1"
        assert b[1].compression_type == "RICE_1"
        for k in (1, 2):
            assert b[k].data.dtype == np.uint16
            np.testing.assert_array_equal(a[k].data, b[k].data)
            assert b[k].header["GAIN"] == a[k].header["GAIN"]


def test_overscan_tracks_the_per_frame_bias(tiny_archive):
    """Raw bias levels differ frame to frame; overscan-subtracted ones agree."""
    cfg, raw = tiny_archive["cfg"], tiny_archive["raw_dir"]
    bias_paths = [p for p in layout.calib_files(cfg, raw) if "bias_" in p]
    with fits.open(bias_paths[0]) as h0, fits.open(bias_paths[1]) as h1:
        nx = cfg["instrument"]["amp_shape"][1]
        raw0, raw1 = (h[1].data.astype(float) for h in (h0, h1))
        corr0 = raw0[:, :nx] - raw0[:, nx:].mean(axis=1, keepdims=True)
        corr1 = raw1[:, :nx] - raw1[:, nx:].mean(axis=1, keepdims=True)
    raw_diff = abs(np.median(raw0[:, :nx]) - np.median(raw1[:, :nx]))
    corr_diff = abs(np.median(corr0) - np.median(corr1))
    assert corr_diff < 0.5
    assert raw_diff > 3 * corr_diff or raw_diff > 1.0
    # the bias has structure: the column means differ by more than the noise
    col = corr0.mean(axis=0)
    assert col[:5].mean() - np.median(col) > 4.0  # ramp near the readout


@pytest.mark.parametrize("kind", ["dark", "flat"])
def test_calibration_frames_show_their_signal(tiny_archive, kind):
    cfg, raw = tiny_archive["cfg"], tiny_archive["raw_dir"]
    path = next(p for p in layout.calib_files(cfg, raw) if f"{kind}_" in p)
    with fits.open(path) as hdul:
        nx = cfg["instrument"]["amp_shape"][1]
        data = hdul[1].data.astype(float)
        signal = np.median(data[:, :nx]) - np.median(data[:, nx:])
        gain = hdul[1].header["GAIN"]
    if kind == "flat":
        assert 0.5 * camera.FULL_WELL_E < signal * gain < camera.FULL_WELL_E  # high, unsaturated
    else:
        assert hdul[0].header["EXPTIME"] > 0 and "FILTER" not in hdul[0].header
        assert 0 < signal * gain < 50


def test_one_field_job_equals_the_same_field_from_all(tiny_archive, tmp_path):
    """A Snakemake job for one field writes the bytes `simulate all` wrote for it."""
    cfg = tiny_archive["cfg"]
    argv = ["field", "--config-json", json.dumps(cfg), "--field", "F01", "--raw-dir",
            str(tmp_path), "--truth-out", str(tmp_path / "F01.truth.ecsv")]
    assert stage.main(argv) == 0
    for mine, theirs in zip(layout.science_files(cfg, tmp_path, "F01"),
                            layout.science_files(cfg, tiny_archive["raw_dir"], "F01"), strict=True):
        assert filecmp.cmp(mine, theirs, shallow=False), mine
    assert filecmp.cmp(tmp_path / "F01.truth.ecsv",
                       tiny_archive["catalog_dir"] / "fields" / "F01.truth.ecsv", shallow=False)
