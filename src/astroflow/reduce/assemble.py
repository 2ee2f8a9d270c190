"""Turn a raw multi-amplifier frame into one detector image in electrons.

Per amplifier: subtract the overscan (``BIASSEC``), trim to ``DATASEC``/``TRIMSEC``, multiply
by ``GAIN`` (amps differ), flag pixels at or above ``SATURATE``; then place each amp at its
``DETSEC``. The detector WCS is the AMP1 WCS shifted by DETSEC - DATASEC, as the contract says.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from astroflow.io.fits_read import AmpRaw, FrameError, parse_section
from astroflow.io.profile import InstrumentProfile, load_profile, profile_from_config
from astroflow.reduce.arrays import overscan_level


@dataclass(frozen=True)
class Layout:
    """Expected detector layout, from ``cfg["instrument"]``, and the instrument profile that
    says which header keywords hold sections, gain, read noise and saturation."""

    n_amps: int
    amp_ny: int
    amp_nx: int
    overscan_cols: int
    profile: InstrumentProfile = field(default_factory=load_profile, compare=False)

    @classmethod
    def from_config(cls, cfg: dict) -> Layout:
        inst = cfg["instrument"]
        return cls(
            int(inst["n_amps"]),
            int(inst["amp_shape"][0]),
            int(inst["amp_shape"][1]),
            int(inst["overscan_cols"]),
            profile_from_config(cfg),
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
    #: ``(detsec, read noise [e-])`` of each amplifier.
    read_noise_e: list[tuple[tuple[slice, slice], float]]
    saturated: np.ndarray
    saturate_e: float


def _header_float(
    amp: AmpRaw, path: str, key: str | None, default: float | None = None, quantity: str = ""
) -> float:
    """A number from the amp header (then the primary header); ``default`` when absent.

    Raises
    ------
    FrameError
        When the keyword is absent and there is no default, or its value is not a finite number.
    """
    header = amp.header
    if key is not None and key not in header and amp.primary is not None and key in amp.primary:
        header = amp.primary
    if key is None or key not in header:
        if default is not None:
            return float(default)
        raise FrameError(path, amp.name, f"missing header keyword {key or quantity.upper()}")
    try:
        value = float(header[key])
    except (TypeError, ValueError) as exc:
        raise FrameError(
            path, amp.name, f"header keyword {key}={header[key]!r} is not a number"
        ) from exc
    if not np.isfinite(value):
        raise FrameError(path, amp.name, f"header keyword {key} is not finite")
    return value


def _with_profile_sections(amp: AmpRaw, path: str, layout: Layout) -> fits.Header:
    """The amp header with the sections the profile supplies where the header has none.

    Headers that carry ``DATASEC``/``TRIMSEC``, ``DETSEC`` (and ``BIASSEC``) are returned as
    they are. Otherwise the profile's fixed sections are used, or, when the profile does not
    require sections, the whole array minus ``overscan_cols`` columns on the right is data,
    those columns are overscan, and amplifiers are tiled along x in file order. A celestial
    WCS found only in the primary header is copied in too, so everything downstream (detector
    WCS, exposure cache) reads one self-contained header.
    """
    profile = layout.profile
    header = amp.header
    copied = False

    def put(key: str, value: str) -> None:
        nonlocal header, copied
        if not copied:
            header, copied = header.copy(), True
        header[key] = value

    sections = profile.sections
    nx, oc = layout.amp_nx, layout.overscan_cols
    x0 = amp.index * nx
    computed = {
        "DATASEC": f"[1:{nx},1:{layout.amp_ny}]",
        "DETSEC": f"[{x0 + 1}:{x0 + nx},1:{layout.amp_ny}]",
        "BIASSEC": f"[{nx + 1}:{nx + oc},1:{layout.amp_ny}]" if oc > 0 else None,
    }
    has_data = "TRIMSEC" in header or "DATASEC" in header
    for key, present in (("DATASEC", has_data), ("DETSEC", "DETSEC" in header)):
        if present:
            continue
        value = sections.get(key.lower()) or (None if sections["required"] else computed[key])
        if value is None:
            raise FrameError(path, amp.name, f"missing header keyword {key}")
        put(key, value)
    if "BIASSEC" not in header:
        value = sections.get("biassec") or (None if sections["required"] else computed["BIASSEC"])
        if value is not None:
            put("BIASSEC", value)
    primary = amp.primary
    if "CTYPE1" not in header and primary is not None and "CTYPE1" in primary:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            cards = WCS(primary, naxis=2).to_header()
        for card in cards.cards:
            put(card.keyword, card.value)
    return header


def amp_to_electrons(
    amp: AmpRaw, path: str, layout: Layout, overscan_method: str = "rows"
) -> AmpElectrons:
    """Overscan-subtract, trim and gain-correct one amplifier.

    Header keywords and missing sections are taken as ``layout.profile`` says.

    Raises
    ------
    FrameError
        BITPIX not among the profile's ``pixels.bitpix``; wrong raw shape; missing/malformed
        BIASSEC/DATASEC/DETSEC/GAIN; sections outside the array or not matching
        ``instrument.amp_shape``.
    """
    bitpix = amp.header.get("BITPIX")
    if bitpix is not None and int(bitpix) not in layout.profile.bitpix:
        raise FrameError(
            path,
            None,
            f"wrong BITPIX {bitpix} in {amp.name}: instrument profile "
            f"{layout.profile.name!r} expects {list(layout.profile.bitpix)} (pixels.bitpix)",
        )
    if amp.data_adu.shape != layout.raw_amp_shape:
        raise FrameError(
            path,
            amp.name,
            f"wrong shape {amp.data_adu.shape}, expected "
            f"{layout.raw_amp_shape} (instrument.amp_shape + overscan_cols)",
        )
    header = _with_profile_sections(amp, path, layout)
    secname = "TRIMSEC" if "TRIMSEC" in header else "DATASEC"
    data_y, data_x = parse_section(header[secname], path, amp.name)
    det_y, det_x = parse_section(header["DETSEC"], path, amp.name)
    ny, nx = amp.data_adu.shape
    if data_y.stop > ny or data_x.stop > nx:
        raise FrameError(path, amp.name, f"{secname} {header[secname]} outside the array {ny}x{nx}")
    if (data_y.stop - data_y.start, data_x.stop - data_x.start) != (layout.amp_ny, layout.amp_nx):
        raise FrameError(
            path,
            amp.name,
            f"{secname} {header[secname]} does not match "
            f"instrument.amp_shape {[layout.amp_ny, layout.amp_nx]}",
        )
    det_ny, det_nx = layout.detector_shape
    if (det_y.stop - det_y.start, det_x.stop - det_x.start) != (layout.amp_ny, layout.amp_nx) or (
        det_y.stop > det_ny or det_x.stop > det_nx
    ):
        raise FrameError(
            path,
            amp.name,
            f"DETSEC {header['DETSEC']} does not fit the {det_ny}x{det_nx} detector",
        )
    profile = layout.profile
    values = profile.values
    gain = _header_float(amp, path, profile.key("gain"), values["gain"], "gain")
    if gain <= 0:
        raise FrameError(path, amp.name, f"non-positive GAIN {gain}")
    read_noise = _header_float(amp, path, profile.key("rdnoise"), values["rdnoise"] or 0.0)
    saturate_adu = _header_float(
        amp,
        path,
        profile.key("saturate"),
        np.inf if values["saturate"] is None else values["saturate"],
    )
    data = amp.data_adu[data_y, data_x]
    if "BIASSEC" in header and layout.overscan_cols > 0:
        over_y, over_x = parse_section(header["BIASSEC"], path, amp.name)
        overscan = amp.data_adu[over_y, over_x]
        if overscan.shape[0] != data.shape[0]:
            raise FrameError(
                path, amp.name, f"BIASSEC {header['BIASSEC']} rows differ from {secname} rows"
            )
        level = overscan_level(overscan, overscan_method)
    else:
        level = np.zeros(data.shape[0])
    image_e = np.subtract(data, level[:, None], dtype=np.float32)
    image_e *= np.float32(gain)
    saturated = data >= saturate_adu
    saturate_e = float((saturate_adu - float(np.median(level))) * gain)
    return AmpElectrons(
        amp.name, (det_y, det_x), image_e, read_noise, gain, saturated, saturate_e, header
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
    boxes = [(amp.detsec[0].indices(shape[0]), amp.detsec[1].indices(shape[1])) for amp in amps]
    area = sum((y[1] - y[0]) * (x[1] - x[0]) for y, x in boxes)
    overlap = any(
        max(a[0][0], b[0][0]) < min(a[0][1], b[0][1])
        and max(a[1][0], b[1][0]) < min(a[1][1], b[1][1])
        for k, a in enumerate(boxes)
        for b in boxes[k + 1 :]
    )
    if overlap or area != shape[0] * shape[1]:  # so, without overlaps, all covered once
        raise FrameError(path, None, "amplifier DETSECs overlap or leave detector pixels uncovered")
    image = np.empty(shape, np.float32)
    saturated = np.empty(shape, bool)
    for amp in amps:
        image[amp.detsec] = amp.image_e
        saturated[amp.detsec] = amp.saturated
    read_noise = [(amp.detsec, amp.read_noise_e) for amp in amps]
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
