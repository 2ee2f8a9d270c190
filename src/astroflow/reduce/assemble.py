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
    #: Whether an overscan (``BIASSEC``) level was subtracted.
    overscan_subtracted: bool = False


@dataclass
class DetectorElectrons:
    """A whole detector in electrons (overscan removed, bias not yet)."""

    image_e: np.ndarray
    #: ``(detsec, read noise [e-])`` of each amplifier.
    read_noise_e: list[tuple[tuple[slice, slice], float]]
    saturated: np.ndarray
    saturate_e: float
    #: Whether every amplifier had an overscan level subtracted.
    overscan_subtracted: bool = False


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


@dataclass(frozen=True)
class AmpSections:
    """Where one amplifier's pixels are, as numpy ``(rows, columns)`` slices.

    ``data`` is the light-sensitive section (``TRIMSEC``, else ``DATASEC``), ``bias`` the
    overscan (``BIASSEC``; None: no overscan), ``detsec`` its place on the detector. ``source``
    says where each came from: ``header``, ``profile`` (a fixed section of the instrument
    profile) or ``default`` (the layout's ``overscan_cols`` and ``sections.overscan_side``).
    """

    data: tuple[slice, slice]
    bias: tuple[slice, slice] | None
    detsec: tuple[slice, slice]
    data_key: str
    source: dict[str, str]


def default_sections(index: int, layout: Layout) -> dict[str, str | None]:
    """The sections of amplifier ``index`` when neither header nor profile gives them.

    The raw array is ``instrument.amp_shape`` plus ``overscan_cols`` columns, the overscan on
    the profile's ``sections.overscan_side`` (right: data first; left: overscan first), and
    amplifiers are tiled along x in file order.
    """
    ny, nx, oc = layout.amp_ny, layout.amp_nx, layout.overscan_cols
    left = layout.profile.sections.get("overscan_side", "right") == "left"
    d0 = oc if left else 0
    x0 = index * nx
    bias = None
    if oc > 0:
        bias = f"[1:{oc},1:{ny}]" if left else f"[{nx + 1}:{nx + oc},1:{ny}]"
    return {
        "DATASEC": f"[{d0 + 1}:{d0 + nx},1:{ny}]",
        "DETSEC": f"[{x0 + 1}:{x0 + nx},1:{ny}]",
        "BIASSEC": bias,
    }


def _overlap(a: tuple[slice, slice], b: tuple[slice, slice]) -> bool:
    return all(max(p.start, q.start) < min(p.stop, q.stop) for p, q in zip(a, b, strict=True))


def resolve_sections(
    header: fits.Header, shape: tuple[int, ...], index: int, path: str, hdu: str, layout: Layout
) -> tuple[fits.Header, AmpSections]:
    """Sections of one amplifier from its header, else the profile, else the defaults.

    A section the header writes always wins, whatever ``instrument.overscan_cols`` says (a
    header ``BIASSEC`` is used with ``overscan_cols: 0`` too). The profile's fixed
    ``sections.datasec|biassec|detsec`` come next; last, unless the profile's
    ``sections.required`` is true, :func:`default_sections`. The raw array must be
    ``amp_shape + overscan_cols`` wide only when a default data or overscan section is used;
    otherwise it may be any size that holds the sections. The geometry is checked here
    (headers and shapes only, no pixels), so a file's verdict needs no pixel read.

    Returns
    -------
    header, sections
        The header with the sections filled in (a copy when anything was added) and the
        parsed sections.

    Raises
    ------
    FrameError
        Missing section (``sections.required``); wrong array shape for the default sections;
        a section malformed, reversed, outside the array, of another size than
        ``instrument.amp_shape``, or off the detector; an overscan overlapping the data or
        not covering its rows.
    """
    sections = layout.profile.sections
    defaults = default_sections(index, layout)
    data_key = "TRIMSEC" if "TRIMSEC" in header else "DATASEC"
    texts: dict[str, str | None] = {}
    source: dict[str, str] = {}
    added: dict[str, str] = {}
    for key in ("DATASEC", "DETSEC", "BIASSEC"):
        header_key = data_key if key == "DATASEC" else key
        if header_key in header:
            texts[key], source[key] = str(header[header_key]), "header"
            continue
        fixed = sections.get(key.lower())
        if fixed:
            texts[key], source[key] = fixed, "profile"
        elif not sections["required"] and defaults[key] is not None:
            texts[key], source[key] = defaults[key], "default"
        elif key == "BIASSEC":
            texts[key] = None  # no overscan: the master bias alone removes the bias
            continue
        else:
            raise FrameError(path, hdu, f"missing header keyword {key}")
        added[key] = texts[key]
    if added:
        header = header.copy()
        for key, value in added.items():
            header[key] = value
    name = {"DATASEC": data_key, "DETSEC": "DETSEC", "BIASSEC": "BIASSEC"}
    ny, nx = shape[-2:] if len(shape) >= 2 else (0, 0)
    if len(shape) != 2 or (
        "default" in (source.get("DATASEC"), source.get("BIASSEC"))
        and tuple(shape) != layout.raw_amp_shape
    ):
        raise FrameError(
            path,
            hdu,
            f"wrong shape {tuple(shape)}, expected {layout.raw_amp_shape} "
            "(instrument.amp_shape + overscan_cols)",
        )
    parsed = {
        key: parse_section(text, path, hdu) for key, text in texts.items() if text is not None
    }
    for key in ("DATASEC", "BIASSEC"):
        if key in parsed and (parsed[key][0].stop > ny or parsed[key][1].stop > nx):
            raise FrameError(
                path,
                hdu,
                f"wrong shape {tuple(shape)}: {name[key]} {texts[key]} lies outside the array "
                f"({source[key]})",
            )
    data_y, data_x = parsed["DATASEC"]
    if (data_y.stop - data_y.start, data_x.stop - data_x.start) != (layout.amp_ny, layout.amp_nx):
        raise FrameError(
            path,
            hdu,
            f"{data_key} {texts['DATASEC']} does not match "
            f"instrument.amp_shape {[layout.amp_ny, layout.amp_nx]}",
        )
    det_y, det_x = parsed["DETSEC"]
    det_ny, det_nx = layout.detector_shape
    if (det_y.stop - det_y.start, det_x.stop - det_x.start) != (layout.amp_ny, layout.amp_nx) or (
        det_y.stop > det_ny or det_x.stop > det_nx
    ):
        raise FrameError(
            path, hdu, f"DETSEC {texts['DETSEC']} does not fit the {det_ny}x{det_nx} detector"
        )
    bias = parsed.get("BIASSEC")
    if bias is not None:
        where = ", ".join(f"{name[k]} from the {source[k]}" for k in ("DATASEC", "BIASSEC"))
        if _overlap(bias, parsed["DATASEC"]):
            raise FrameError(
                path,
                hdu,
                f"BIASSEC {texts['BIASSEC']} overlaps {data_key} {texts['DATASEC']} ({where}; "
                "the default sections put the overscan on the side the instrument profile's "
                "sections.overscan_side names)",
            )
        if bias[0].start <= data_y.start and bias[0].stop >= data_y.stop:
            bias = (data_y, bias[1])  # the overscan of each data row
        elif bias[0].stop - bias[0].start != data_y.stop - data_y.start:
            raise FrameError(
                path,
                hdu,
                f"BIASSEC {texts['BIASSEC']} rows do not cover {data_key} {texts['DATASEC']} "
                "rows",
            )
    return header, AmpSections(parsed["DATASEC"], bias, parsed["DETSEC"], data_key, source)


def _with_primary_wcs(header: fits.Header, primary: fits.Header | None) -> fits.Header:
    """The amp header with a celestial WCS found only in the primary header copied in, so
    everything downstream (detector WCS, exposure cache) reads one self-contained header."""
    if "CTYPE1" in header or primary is None or "CTYPE1" not in primary:
        return header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        cards = WCS(primary, naxis=2).to_header()
    header = header.copy()
    for card in cards.cards:
        header[card.keyword] = card.value
    return header


def amp_to_electrons(
    amp: AmpRaw, path: str, layout: Layout, overscan_method: str = "rows"
) -> AmpElectrons:
    """Overscan-subtract, trim and gain-correct one amplifier.

    Header keywords and missing sections are taken as ``layout.profile`` says
    (:func:`resolve_sections`).

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
    header, sections = resolve_sections(
        amp.header, amp.data_adu.shape, amp.index, path, amp.name, layout
    )
    header = _with_primary_wcs(header, amp.primary)
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
    data = amp.data_adu[sections.data]
    if sections.bias is not None:
        level = overscan_level(amp.data_adu[sections.bias], overscan_method)
    else:
        level = np.zeros(data.shape[0])
    image_e = np.subtract(data, level[:, None], dtype=np.float32)
    image_e *= np.float32(gain)
    saturated = data >= saturate_adu
    saturate_e = float((saturate_adu - float(np.median(level))) * gain)
    return AmpElectrons(
        amp.name,
        sections.detsec,
        image_e,
        read_noise,
        gain,
        saturated,
        saturate_e,
        header,
        sections.bias is not None,
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
    return DetectorElectrons(
        image,
        read_noise,
        saturated,
        min(a.saturate_e for a in amps),
        all(a.overscan_subtracted for a in amps),
    )


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
