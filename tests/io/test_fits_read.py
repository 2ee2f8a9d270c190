"""Raw FITS reading: BZERO, tile compression, sections, broken files, archive scanning."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astroflow.io import FrameError, parse_section, read_frame, read_primary_header, scan_archive


def _write(path, data, compress=False, primary=None, **cards):
    ph = fits.PrimaryHDU()
    for k, v in (primary or {}).items():
        ph.header[k] = v
    hdu = fits.CompImageHDU(data, compression_type="RICE_1") if compress else fits.ImageHDU(data)
    hdu.header["EXTNAME"] = "AMP1"
    for k, v in cards.items():
        hdu.header[k] = v
    fits.HDUList([ph, hdu]).writeto(path)
    return path


def test_parse_section_is_zero_based_numpy_order():
    ys, xs = parse_section("[3:10,1:4]")
    assert (ys, xs) == (slice(0, 4), slice(2, 10))
    with pytest.raises(FrameError, match="malformed section"):
        parse_section("[1:2]", "f.fits", "AMP1")
    with pytest.raises(FrameError, match="reversed"):
        parse_section("[10:3,1:4]")


@pytest.mark.parametrize("compress", [False, True])
def test_uint16_bzero_pixels_roundtrip_plain_and_fz(tmp_path, compress):
    data = (np.arange(40 * 30).reshape(40, 30) * 50 % 65535).astype(np.uint16)
    path = _write(
        tmp_path / ("a.fits.fz" if compress else "a.fits"), data, compress, primary={"FILTER": "r"}
    )
    assert fits.getheader(path, 1 if not compress else 1).get("BZERO", 32768) == 32768
    frame = read_frame(path)
    assert [a.name for a in frame.amps] == ["AMP1"]
    np.testing.assert_array_equal(frame.amps[0].data_adu, data.astype(np.float32))
    assert frame.primary["FILTER"] == "r"


def test_nonstandard_header_card_is_tolerated(tmp_path):
    path = _write(
        tmp_path / "a.fits", np.zeros((4, 4), np.uint16), primary={"FILTER": "g", "JUNK": 1}
    )
    raw = bytearray(path.read_bytes())
    i = raw.find(b"JUNK    =")
    raw[i : i + 80] = b"BAD KEY!= 'junk' / not a FITS keyword".ljust(80)
    path.write_bytes(bytes(raw))
    header = read_primary_header(path)
    assert header["FILTER"] == "g"


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"this is not a FITS file at all" * 100, "unreadable"),
    ],
)
def test_broken_files_raise_frame_error_naming_file(tmp_path, content, reason):
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(FrameError, match=reason) as info:
        read_frame(path)
    assert str(path) in str(info.value)
    assert info.value.to_entry()["path"] == str(path)


def test_truncated_file_is_reported(tmp_path):
    path = _write(tmp_path / "a.fits", np.ones((200, 100), np.uint16))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 2880 * 2])
    with pytest.raises(FrameError, match="truncated"):
        read_frame(path)


def test_scan_archive_classifies_by_header_not_name(tmp_path):
    data = np.zeros((4, 4), np.uint16)
    _write(tmp_path / "x1.fits", data, primary={"IMAGETYP": "zero"})
    _write(
        tmp_path / "flat_looking_name.fits",
        data,
        primary={"IMAGETYP": "object", "OBJECT": "F07", "FILTER": "i", "EXPNUM": 12},
    )
    (tmp_path / "sub").mkdir()
    _write(
        tmp_path / "sub" / "y.fits.fz",
        data,
        compress=True,
        primary={"IMAGETYP": "dome flat", "FILTER": "g"},
    )
    _write(tmp_path / "nofilter.fits", data, primary={"IMAGETYP": "object", "OBJECT": "F07"})
    (tmp_path / "empty.fits").write_bytes(b"")
    infos = {p.path.rsplit("/", 1)[-1]: p for p in scan_archive(tmp_path)}
    assert infos["x1.fits"].imagetyp == "bias"
    sci = infos["flat_looking_name.fits"]
    assert (sci.imagetyp, sci.field, sci.band, sci.expnum) == ("object", "F07", "i", 12)
    # what reduce needs and this header lacks is named, as inspect names it
    assert "missing header keyword EXPTIME" in sci.problem
    assert infos["y.fits.fz"].imagetyp == "flat" and infos["y.fits.fz"].band == "g"
    assert "FILTER" in infos["nofilter.fits"].problem
    assert "empty" in infos["empty.fits"].problem
