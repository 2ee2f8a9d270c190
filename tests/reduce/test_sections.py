"""Amplifier sections: a header's always win; the default overscan may be on either side.

Real FITS files written with astropy: a header ``BIASSEC`` used with ``overscan_cols: 0``, an
overscan before the data found from the header or from the profile's ``overscan_side``, and
the errors that name what to set when the defaults do not fit the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from reduce_archive import AMP_NX, AMP_NY, N_OVER, READ_NOISE_E, make_cfg

from astroflow.io import read_frame
from astroflow.io.fits_read import FrameError
from astroflow.io.profile import InstrumentProfile
from astroflow.reduce.assemble import Layout, amp_to_electrons


def test_header_biassec_is_honoured_with_overscan_cols_zero(archive, tmp_path):
    """``overscan_cols: 0`` describes what the default sections assume; a BIASSEC the header
    writes is still used, and the raw array may be wider than ``amp_shape``."""
    cfg = make_cfg(tmp_path)
    cfg["instrument"]["overscan_cols"] = 0
    layout = Layout.from_config(cfg)
    path = archive.calib_paths[0]  # a bias frame: 64 data + 8 overscan columns per amp
    for k, amp in enumerate(read_frame(path).amps):
        assert amp.data_adu.shape == (AMP_NY, AMP_NX + N_OVER)
        electrons = amp_to_electrons(amp, path, layout)
        assert electrons.overscan_subtracted
        truth = archive.bias_e[:, k * AMP_NX : (k + 1) * AMP_NX]
        assert abs(np.mean(electrons.image_e - truth)) < 0.5  # the ~1000 ADU level is gone
        assert np.std(electrons.image_e - truth) < 6


LEVEL_ADU, GAIN, NX_OVER = 1500.0, 2.0, 6


def _left_overscan_frame(path: Path, sections: bool, rng) -> tuple[str, np.ndarray]:
    """One amplifier whose overscan comes first: columns 1-6 overscan, 7-70 data.

    The bias level changes along y (so a wrong column range cannot pass by luck); returns
    the path and the signal in electrons.
    """
    signal = rng.uniform(100.0, 3000.0, (AMP_NY, AMP_NX))
    rows = LEVEL_ADU + 0.5 * np.arange(AMP_NY)[:, None]
    adu = np.empty((AMP_NY, NX_OVER + AMP_NX))
    adu[:, :NX_OVER] = rows
    adu[:, NX_OVER:] = signal / GAIN + rows
    adu += rng.normal(0.0, READ_NOISE_E / GAIN, adu.shape)
    hdu = fits.ImageHDU(np.round(adu).astype(np.int32))
    hdu.header["EXTNAME"] = "AMP1"
    hdu.header["GAIN"] = GAIN
    if sections:
        hdu.header["BIASSEC"] = f"[1:{NX_OVER},1:{AMP_NY}]"
        hdu.header["DATASEC"] = f"[{NX_OVER + 1}:{NX_OVER + AMP_NX},1:{AMP_NY}]"
        hdu.header["DETSEC"] = f"[1:{AMP_NX},1:{AMP_NY}]"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return str(path), signal


def _layout(overscan_cols: int, side: str | None = None, required: bool = False) -> Layout:
    sections = {"required": required, **({"overscan_side": side} if side else {})}
    profile = InstrumentProfile({"name": "leftcam", "sections": sections})
    return Layout(1, AMP_NY, AMP_NX, overscan_cols, profile)


@pytest.mark.parametrize(
    ("sections", "overscan_cols", "side"),
    [(True, 0, None), (True, NX_OVER, "right"), (False, NX_OVER, "left")],
    ids=["header-sections-no-overscan-cols", "header-sections-win", "profile-side-left"],
)
def test_overscan_on_the_left_is_removed(tmp_path, sections, overscan_cols, side):
    """The overscan before the data is found from the header's sections (whatever the
    profile's side or ``overscan_cols``), or, without them, from ``sections.overscan_side``."""
    path, signal = _left_overscan_frame(tmp_path / "left.fits", sections, np.random.default_rng(4))
    amp = read_frame(path).amps[0]
    electrons = amp_to_electrons(amp, path, _layout(overscan_cols, side), "rows")
    residual = electrons.image_e - signal
    assert abs(np.mean(residual)) < 0.5  # the injected 1500-1564 ADU bias level is removed
    assert np.std(residual) < 1.5 * READ_NOISE_E  # and row by row: no gradient left
    assert abs(np.polyfit(np.arange(AMP_NY), residual.mean(axis=1), 1)[0]) < 0.01


def test_default_sections_on_the_wrong_side_are_named(tmp_path):
    """A header BIASSEC on the left without a DATASEC, under a profile whose default data
    section is on the left of a right-side overscan: the overlap is an error naming the key."""
    path, _ = _left_overscan_frame(tmp_path / "left.fits", True, np.random.default_rng(5))
    with fits.open(path, mode="update") as hdul:
        del hdul[1].header["DATASEC"]
    amp = read_frame(path).amps[0]
    with pytest.raises(FrameError) as caught:
        amp_to_electrons(amp, path, _layout(NX_OVER, "right"))
    text = str(caught.value)
    assert f"BIASSEC [1:{NX_OVER},1:{AMP_NY}] overlaps DATASEC [1:{AMP_NX},1:{AMP_NY}]" in text
    assert "sections.overscan_side" in text and path in text


def test_default_sections_need_the_raw_shape(tmp_path):
    """Without sections in the header, the raw array must be amp_shape + overscan_cols."""
    path, _ = _left_overscan_frame(tmp_path / "left.fits", False, np.random.default_rng(6))
    amp = read_frame(path).amps[0]
    with pytest.raises(FrameError, match=r"wrong shape \(128, 70\), expected \(128, 68\)"):
        amp_to_electrons(amp, path, _layout(4, "left"))


