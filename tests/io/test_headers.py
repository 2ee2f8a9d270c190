"""The block header reader against astropy: files written by others, broken cards, broken files."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import astropy
import numpy as np
import pytest
from astropy.io import fits

from astroflow.io.headers import read_file_headers

ASTROPY_DATA = Path(astropy.__file__).parent / "io" / "fits" / "tests" / "data"
ASTROPY_FILES = sorted(p for p in ASTROPY_DATA.rglob("*") if p.is_file())


def _astropy_headers(path: Path) -> list[fits.Header] | None:
    """Every HDU's header as astropy reads it, None where astropy cannot."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, lazy_load_hdus=False, ignore_missing_end=False) as hdul:
                return [h.header.copy() for h in hdul]
    except Exception:
        return None


def test_astropy_ships_its_odd_files():
    assert len(ASTROPY_FILES) > 20, f"astropy's test FITS files not found under {ASTROPY_DATA}"


@pytest.mark.parametrize("path", ASTROPY_FILES, ids=lambda p: p.name)
def test_files_written_by_others_read_as_astropy_reads_them(path):
    """Every astropy test file: never raises; where astropy reads it, same HDUs and values."""
    found = read_file_headers(path)
    expected = _astropy_headers(path)
    if path.suffix == ".Z":  # astropy reads Unix compress; we name it
        assert "Unix compress" in found.problem
        return
    if expected is None:
        return  # astropy refuses it; not raising is the whole of our promise
    if found.problem is not None:
        assert "truncated" in found.problem, (path, found.problem)
        return
    assert len(found.hdus) == len(expected)
    for ours, theirs in zip(found.hdus, expected, strict=True):
        assert ours.bitpix == theirs["BITPIX"], path.name  # the image's, compressed or not
        if ours.shape is not None:
            n = theirs["NAXIS"]
            assert ours.shape == tuple(theirs[f"NAXIS{k}"] for k in range(n, 0, -1)), path.name
        if ours.header.get("ZIMAGE") is True:
            continue  # astropy shows the image's header, we keep the table's cards
        for key in ("EXTNAME", "OBJECT", "EXPTIME", "FILTER", "DATE-OBS", "GCOUNT"):
            if key in theirs and isinstance(theirs[key], int | float | str):
                assert ours.header.get(key) == theirs[key], (path.name, key)


def test_continue_hierarch_and_bad_cards(tmp_path):
    header = fits.Header()
    header["FILTER"] = "r"
    header["LONGSTR"] = "x" * 100 + "end"
    header["HIERARCH ESO INS FILT1 NAME"] = "Stroem_u"
    path = tmp_path / "a.fits"
    fits.PrimaryHDU(np.zeros((3, 5), np.int16), header=header).writeto(path)
    raw = path.read_bytes()
    bad = b"EXPTIME =  12.5 s".ljust(80) + b"OBJECT  = 'unterminated".ljust(80)
    start = raw.index(b"END     ")
    path.write_bytes(raw[:start] + bad + b"END".ljust(80) + raw[start + 240 :])
    found = read_file_headers(path)
    assert found.problem is None
    h = found.primary
    assert h["FILTER"] == "r" and h["LONGSTR"] == "x" * 100 + "end"
    assert h["ESO INS FILT1 NAME"] == "Stroem_u"
    # unparsable values count as missing and are named
    assert "EXPTIME" not in h and "OBJECT" not in h
    assert set(h.malformed) == {"EXPTIME", "OBJECT"}
    assert found.hdus[0].shape == (3, 5)


def test_broken_files_are_named_not_raised(tmp_path):
    good = tmp_path / "good.fits"
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(np.ones((50, 60), np.int32), name="AMP1")]
    fits.HDUList(hdus).writeto(good)
    raw = good.read_bytes()
    cases = {
        "empty.fits": b"",
        "text.dat": b"hello, this is not FITS\n",
        "cut_header.fits": raw[:2000],
        "cut_data.fits": raw[: len(raw) - 2880 * 2],
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    problems = {name: read_file_headers(tmp_path / name).problem for name in cases}
    assert "empty" in problems["empty.fits"]
    assert "not a FITS file" in problems["text.dat"]
    assert "truncated header" in problems["cut_header.fits"]
    assert "truncated file" in problems["cut_data.fits"] and "AMP1" in problems["cut_data.fits"]
    found = read_file_headers(good)
    assert found.problem is None and [h.shape for h in found.images] == [(50, 60)]


def test_fits_by_content_gzip_and_tile_compression(tmp_path):
    data = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    plain = tmp_path / "frame.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="AMP1")]).writeto(plain)
    odd_suffix = tmp_path / "frame.0001"  # archives name files in many ways
    shutil.copy(plain, odd_suffix)
    zipped = tmp_path / "frame_gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    fz = tmp_path / "frame.fits.fz"
    comp = fits.CompImageHDU(data, name="AMP1", compression_type="RICE_1")
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(fz)
    for path in (odd_suffix, zipped, fz):
        found = read_file_headers(path)
        assert found.problem is None, path
        assert [(h.name, h.shape) for h in found.images] == [("AMP1", (64, 48))], path
    assert read_file_headers(fz).images[0].bitpix == 16
