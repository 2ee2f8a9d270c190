"""Turn a raw multi-amplifier frame into one detector image in electrons.

Per amplifier: subtract the overscan (``BIASSEC``), trim to ``DATASEC``/``TRIMSEC``, multiply
by ``GAIN`` (amps differ), flag pixels at or above ``SATURATE``; then place each amp at its
``DETSEC``. The detector WCS is the AMP1 WCS shifted by DETSEC - DATASEC, as the contract says.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from astroflow.io.fits_read import AmpRaw, FrameError, parse_section
from astroflow.reduce.arrays import overscan_level


@dataclass(frozen=True)
class Layout:
    """Expected detector layout, from ``cfg["instrument"]``."""

    n_amps: int
    amp_ny: int
    amp_nx: int
    overscan_cols: int

    @classmethod
    def from_config(cls, cfg: dict) -> Layout:
        inst = cfg["instrument"]
        return cls(
            int(inst["n_amps"]),
            int(inst["amp_shape"][0]),
            int(inst["amp_shape"][1]),
            int(inst["overscan_cols"]),
        )

    @property
    def raw_amp_shape(self) -> tuple[int, int]:
        return (self.amp_ny, self.amp_nx + self.overscan_cols)

    @property
    def detector_shape(self) -> tuple[int, int]:
        return (self.amp_ny, self.amp_nx * self.n_amps)


@dataclass
class AmpElectrons:
    """One amplifier after overscan subtraction, trimming and gain."""

    name: str
    detsec: tuple[slice, slice]
    image_e: np.ndarray
    read_noise_e: float
    gain_e_per_adu: float
    saturated: np.ndarray
    saturate_e: float
    header: fits.Header


@dataclass
class DetectorElectrons:
    """A whole detector in electrons (overscan removed, bias not yet)."""

    image_e: np.ndarray
    read_noise_e: np.ndarray
    saturated: np.ndarray
    saturate_e: float


def _header_float(amp: AmpRaw, path: str, key: str) -> float:
    if key not in amp.header:
        raise FrameError(path, amp.name, f"missing header keyword {key}")
    try:
        value = float(amp.header[key])
    except (TypeError, ValueError) as exc:
        raise FrameError(
            path, amp.name, f"header keyword {key}={amp.header[key]!r} is not a number"
        ) from exc
    if not np.isfinite(value):
        raise FrameError(path, amp.name, f"header keyword {key} is not finite")
    return value


def amp_to_electrons(
    amp: AmpRaw, path: str, layout: Layout, overscan_method: str = "rows"
) -> AmpElectrons:
    """Overscan-subtract, trim and gain-correct one amplifier.

    Raises
    ------
    FrameError
        Wrong raw shape, missing/malformed BIASSEC/DATASEC/DETSEC/GAIN, or sections outside
        the array or not matching ``instrument.amp_shape``.
    """
    if amp.data_adu.shape != layout.raw_amp_shape:
        raise FrameError(
            path,
            amp.name,
            f"wrong shape {amp.data_adu.shape}, expected "
            f"{layout.raw_amp_shape} (instrument.amp_shape + overscan_cols)",
        )
    secname = "TRIMSEC" if "TRIMSEC" in amp.header else "DATASEC"
    for key in (secname, "DETSEC"):
        if key not in amp.header:
            raise FrameError(path, amp.name, f"missing header keyword {key}")
    data_y, data_x = parse_section(amp.header[secname], path, amp.name)
    det_y, det_x = parse_section(amp.header["DETSEC"], path, amp.name)
    ny, nx = amp.data_adu.shape
    if data_y.stop > ny or data_x.stop > nx:
        raise FrameError(
            path, amp.name, f"{secname} {amp.header[secname]} outside the array {ny}x{nx}"
        )
    if (data_y.stop - data_y.start, data_x.stop - data_x.start) != (layout.amp_ny, layout.amp_nx):
        raise FrameError(
            path,
            amp.name,
            f"{secname} {amp.header[secname]} does not match "
            f"instrument.amp_shape {[layout.amp_ny, layout.amp_nx]}",
        )
    det_ny, det_nx = layout.detector_shape
    if (det_y.stop - det_y.start, det_x.stop - det_x.start) != (layout.amp_ny, layout.amp_nx) or (
        det_y.stop > det_ny or det_x.stop > det_nx
    ):
        raise FrameError(
            path,
            amp.name,
            f"DETSEC {amp.header['DETSEC']} does not fit the {det_ny}x{det_nx} detector",
        )
    gain = _header_float(amp, path, "GAIN")
    if gain <= 0:
        raise FrameError(path, amp.name, f"non-positive GAIN {gain}")
    read_noise = _header_float(amp, path, "RDNOISE") if "RDNOISE" in amp.header else 0.0
    saturate_adu = _header_float(amp, path, "SATURATE") if "SATURATE" in amp.header else np.inf
    data = amp.data_adu[data_y, data_x]
    if "BIASSEC" in amp.header and layout.overscan_cols > 0:
        over_y, over_x = parse_section(amp.header["BIASSEC"], path, amp.name)
        overscan = amp.data_adu[over_y, over_x]
        if overscan.shape[0] != data.shape[0]:
            raise FrameError(
                path, amp.name, f"BIASSEC {amp.header['BIASSEC']} rows differ from {secname} rows"
            )
        level = overscan_level(overscan, overscan_method)
    else:
        level = np.zeros(data.shape[0])
    image_e = ((data.astype(np.float64) - level[:, None]) * gain).astype(np.float32)
    saturated = data >= saturate_adu
    saturate_e = float((saturate_adu - float(np.median(level))) * gain)
    return AmpElectrons(
        amp.name, (det_y, det_x), image_e, read_noise, gain, saturated, saturate_e, amp.header
    )


def assemble(amps: list[AmpElectrons], path: str, layout: Layout) -> DetectorElectrons:
    """Place amplifiers at their DETSEC; every detector pixel must be covered exactly once."""
    if len(amps) != layout.n_amps:
        raise FrameError(
            path,
            None,
            f"wrong shape: {len(amps)} amplifier extensions, expected "
            f"instrument.n_amps = {layout.n_amps}",
        )
    shape = layout.detector_shape
    image = np.zeros(shape, np.float32)
    read_noise = np.zeros(shape, np.float32)
    saturated = np.zeros(shape, bool)
    covered = np.zeros(shape, np.int8)
    for amp in amps:
        image[amp.detsec] = amp.image_e
        read_noise[amp.detsec] = amp.read_noise_e
        saturated[amp.detsec] = amp.saturated
        covered[amp.detsec] += 1
    if not np.all(covered == 1):
        raise FrameError(path, None, "amplifier DETSECs overlap or leave detector pixels uncovered")
    return DetectorElectrons(image, read_noise, saturated, min(a.saturate_e for a in amps))


def detector_wcs(path: str, amp_name: str, header: fits.Header) -> WCS:
    """Detector WCS: an amp's TAN WCS shifted by its DETSEC - DATASEC offset.

    Raises
    ------
    FrameError
        When the amp header carries no valid celestial WCS.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception as exc:
            raise FrameError(path, amp_name, f"invalid WCS: {exc}") from exc
    if not wcs.has_celestial or wcs.wcs.ctype[0][:4] not in {"RA--", "GLON", "ELON"}:
        raise FrameError(path, amp_name, "missing or invalid WCS (no celestial CTYPE)")
    try:
        scale = wcs.pixel_scale_matrix
    except Exception as exc:
        raise FrameError(path, amp_name, f"invalid WCS: {exc}") from exc
    if not np.all(np.isfinite(scale)) or abs(np.linalg.det(scale)) == 0:
        raise FrameError(path, amp_name, "missing or invalid WCS (singular pixel scale)")
    secname = "TRIMSEC" if "TRIMSEC" in header else "DATASEC"
    data_y, data_x = parse_section(header[secname], path, amp_name)
    det_y, det_x = parse_section(header["DETSEC"], path, amp_name)
    wcs = wcs.deepcopy()
    wcs.wcs.crpix = [
        wcs.wcs.crpix[0] + (det_x.start - data_x.start),
        wcs.wcs.crpix[1] + (det_y.start - data_y.start),
    ]
    return wcs
