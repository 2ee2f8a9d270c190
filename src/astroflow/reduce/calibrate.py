"""Calibrate one science exposure: electrons, flat field, variance, masks, background, PSF.

Order of operations (all on the assembled detector, in electrons until the last step):
overscan/trim/gain (:mod:`assemble`) -> minus master bias -> minus master dark x EXPTIME ->
divided by the band's master flat -> variance (Poisson + read noise, through the flat) ->
masks (saturated + bleed, bad flat pixels, hot dark pixels) -> background (sep, bad pixels
masked) -> cosmic rays (:mod:`astroflow.reduce.cosmics`, or L.A.Cosmic by ``reduce.cosmic_rays``;
replaced and flagged) -> background subtracted -> e-/s -> PSF FWHM from bright unsaturated
stars, aperture correction and 5-sigma depth. Arrays are float32 and updated in place: the
per-pixel work is a few passes over the detector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import astroscrappy
import numpy as np
import sep
from astropy.wcs import WCS

from astroflow.io.fits_read import FrameError, read_frame
from astroflow.io.profile import profile_from_config
from astroflow.reduce.assemble import AmpElectrons, Layout, amp_to_electrons, assemble, detector_wcs
from astroflow.reduce.cosmics import CosmicRayParams, clean_cosmic_rays, find_cosmic_rays
from astroflow.reduce.islands import find_islands
from astroflow.reduce.masters import Masters, allowed_missing

log = logging.getLogger(__name__)

#: Mask bits of the data contract.
MASK_BAD = 1
MASK_COSMIC = 2
MASK_OFF_DETECTOR = 4

#: Pixels within this many rows of a saturated pixel (same column) are flagged as bleed.
BLEED_ROWS = 2
#: Exposures with at least this fraction of saturated pixels are quarantined.
FULLY_SATURATED_FRACTION = 0.99
#: Aperture radius of the PSF magnitude, in units of the PSF FWHM.
PSF_APERTURE_FWHM = 1.0
#: Radius (in FWHM) treated as "total" flux of a star when measuring the aperture correction.
TOTAL_APERTURE_FWHM = 3.0
#: Minimum number of stars needed to measure the PSF.
MIN_PSF_STARS = 3
#: Moffat betas the PSF profile is read in; at the upper end a Moffat is a Gaussian to < 1 %.
MOFFAT_BETA_RANGE = (1.5, 100.0)


@dataclass
class Exposure:
    """A calibrated exposure, ready for detection, photometry and cutouts.

    ``image`` is background-subtracted flux in e-/s per pixel; ``variance`` in (e-/s)^2;
    ``mask`` uses bits 1 (bad/saturated/bleed) and 2 (cosmic ray).
    """

    path: str
    expnum: str
    band: str
    exptime_s: float
    mjd: float
    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    background_rms: float
    wcs: WCS
    psf_fwhm_pix: float
    psf_fwhm_arcsec: float
    psf_aperture_pix: float
    aperture_correction: float
    depth_mag_5sigma: float
    zeropoint_mag: float
    n_cosmic: int


def amp_task(
    path: str, index: int, layout: Layout, overscan_method: str
) -> AmpElectrons | FrameError:
    """Read and convert one amplifier (one Dask task); errors are returned, not raised."""
    try:
        frame = read_frame(path, amp_index=index, primary_pixels=layout.profile.primary_pixels)
        return amp_to_electrons(frame.amps[0], path, layout, overscan_method)
    except FrameError as exc:
        return exc


def _primary_keys(path: str, cfg: dict, masters: Masters) -> tuple[str, float, str, float]:
    """Check the science primary header: (band, exptime_s, expnum, mjd).

    Keywords are those of the instrument profile (``FILTER``, ``EXPTIME``, ``DATE-OBS`` for the
    demo camera). An exposure whose band has no master flat (or that lacks a master bias or
    dark) is quarantined, unless ``reduce.allow_uncorrected`` lets it through without that
    correction (:func:`_check_masters`).
    """
    from astroflow.io.fits_read import read_primary_header

    profile = profile_from_config(cfg)
    header = read_primary_header(path)
    found = profile.classify(header, path)
    if found.frame_type != "object":
        raise FrameError(path, "PRIMARY", f"not a science frame: {found.how}")
    keys = {q: profile.key(q) for q in ("filter", "exptime", "date", "mjd")}
    for quantity in ("filter", "exptime", "date"):
        if profile.get(header, quantity) is None:
            raise FrameError(
                path, "PRIMARY", f"missing header keyword {keys[quantity] or quantity.upper()}"
            )
    band = str(profile.get(header, "filter")).strip()
    raw_exptime = profile.get(header, "exptime")
    try:
        exptime = float(raw_exptime)
    except (TypeError, ValueError) as exc:
        raise FrameError(
            path, "PRIMARY", f"{keys['exptime']} {raw_exptime!r} is not a number"
        ) from exc
    if not exptime > 0:
        raise FrameError(path, "PRIMARY", f"{keys['exptime']} {exptime} is not positive")
    try:  # the profile reads the date, as the plan and inspect do (ISO, dd/mm/yy, MJD-OBS)
        mjd = profile.mjd(header)
    except ValueError as exc:
        raise FrameError(path, "PRIMARY", str(exc)) from exc
    if band not in cfg["instrument"]["bands"]:
        raise FrameError(
            path,
            "PRIMARY",
            f"{keys['filter']} {band!r} is not one of instrument.bands "
            f"{cfg['instrument']['bands']}",
        )
    _check_masters(path, band, cfg, masters)
    expnum = profile.get(header, "expnum")
    expnum = str(expnum).strip() if expnum is not None else ""
    return band, exptime, expnum or path.rsplit("/", 1)[-1].split(".")[0], mjd


def _check_masters(path: str, band: str, cfg: dict, masters: Masters) -> None:
    """Raise the quarantine reason when a master the exposure needs is missing and
    ``reduce.allow_uncorrected`` does not allow it.

    A missing bias or dark not allowed stops ``reduce calib`` already; it reaches this only
    with masters made under another setting.
    """
    allowed = allowed_missing(cfg["reduce"])
    missing = [kind for kind in masters.missing(band) if kind not in allowed]
    if not missing:
        return
    if "flat" in missing:
        why = "refused by its quality checks (masters.json); " if (
            f"flat {band}" in masters.refused
        ) else ""
        raise FrameError(
            path,
            "PRIMARY",
            f"no calibration for band {band!r} (no master flat; {why}set "
            "reduce.allow_uncorrected: true to reduce it without flat-field correction)",
        )
    raise FrameError(
        path,
        "PRIMARY",
        f"no master {' and no master '.join(missing)} (masters.json); set "
        "reduce.allow_uncorrected: true to reduce without it, or rerun `astroflow reduce calib`",
    )


def finish_exposure(
    path: str, amps: list[AmpElectrons | FrameError], cfg: dict, masters: Masters
) -> Exposure | FrameError:
    """Calibrate an exposure from its converted amplifiers (one Dask task per exposure)."""
    try:
        for amp in amps:
            if isinstance(amp, FrameError):
                raise amp
        return _calibrate(path, amps, cfg, masters)
    except FrameError as exc:
        return exc


def calibrate_exposure(path: str, cfg: dict, masters: Masters) -> Exposure:
    """Calibrate one exposure in the calling thread (tests, small jobs).

    Raises
    ------
    FrameError
        For every quarantine reason: unreadable/empty/truncated file, missing keywords,
        invalid WCS, wrong shape, no calibration for its band, fully saturated, no PSF stars.
    """
    layout = Layout.from_config(cfg)
    method = cfg["reduce"]["overscan_method"]
    frame = read_frame(path, primary_pixels=layout.profile.primary_pixels)
    amps = [amp_to_electrons(a, path, layout, method) for a in frame.amps]
    return _calibrate(path, amps, cfg, masters)


def _calibrate(path: str, amps: list[AmpElectrons], cfg: dict, masters: Masters) -> Exposure:
    band, exptime, expnum, mjd = _primary_keys(path, cfg, masters)
    layout = Layout.from_config(cfg)
    detector = assemble(amps, path, layout)
    wcs = detector_wcs(path, amps[0].name, amps[0].header)
    if detector.saturated.mean() >= FULLY_SATURATED_FRACTION:
        raise FrameError(
            path,
            None,
            f"fully saturated ({100 * detector.saturated.mean():.1f} % of pixels at SATURATE)",
        )
    missing = masters.missing(band)
    if missing:  # reduce.allow_uncorrected; each field job says it once (field.py)
        log.debug("%s: band %s: no master %s: not applied", path, band, ", ".join(missing))
    image_e, variance_e = _remove_signature(detector, masters, band, exptime)
    _, static_bad = masters.flat_and_bad(band)

    mask = static_bad.astype(np.uint8)  # MASK_BAD == 1
    _flag_bleed(mask, detector.saturated)
    nonfinite = ~np.isfinite(image_e)
    if nonfinite.any():  # undefined (BLANK/NaN) pixels: flagged bad, still on the detector
        image_e[nonfinite] = 0.0
        mask[nonfinite] |= MASK_BAD
        finite_var = variance_e[np.isfinite(variance_e)]
        variance_e[nonfinite] = float(np.median(finite_var)) if finite_var.size else 1.0

    bad = mask != 0
    background = sep.Background(image_e, mask=bad, bw=64, bh=64, fw=3, fh=3)
    back_e = background.back()
    hits = _cosmic_rays(image_e, variance_e, back_e, bad, detector, cfg)
    mask[hits] |= MASK_COSMIC
    n_cosmic = int(hits[0].size)

    image_e -= back_e
    image = np.multiply(image_e, np.float32(1.0 / exptime), dtype=np.float32)
    variance = np.multiply(variance_e, np.float32(1.0 / exptime**2), dtype=np.float32)
    rms = float(background.globalrms) / exptime
    zeropoint = float(cfg["instrument"]["zeropoint_mag"][band])
    fwhm_pix, ap_corr = measure_psf(image, rms, mask, path)
    ap_radius = PSF_APERTURE_FWHM * fwhm_pix
    noise_e_per_s = rms * np.sqrt(np.pi) * ap_radius
    depth = zeropoint - 2.5 * np.log10(5.0 * noise_e_per_s / ap_corr)
    scale = float(cfg["instrument"]["pixel_scale_arcsec"])
    log.debug(
        '%s: band %s, FWHM %.2f", depth %.2f, %d cosmic-ray pixels',
        path,
        band,
        fwhm_pix * scale,
        depth,
        n_cosmic,
    )
    return Exposure(
        path=path,
        expnum=expnum,
        band=band,
        exptime_s=exptime,
        mjd=mjd,
        image=image,
        variance=variance,
        mask=mask,
        background_rms=rms,
        wcs=wcs,
        psf_fwhm_pix=fwhm_pix,
        psf_fwhm_arcsec=fwhm_pix * scale,
        psf_aperture_pix=ap_radius,
        aperture_correction=ap_corr,
        depth_mag_5sigma=float(depth),
        zeropoint_mag=zeropoint,
        n_cosmic=n_cosmic,
    )


#: Detector rows processed at once by :func:`_remove_signature`: a few float32 planes of a
#: strip stay in a core's cache instead of each operation streaming whole frames from memory.
STRIP_ROWS = 64


def _remove_signature(
    detector, masters: Masters, band: str, exptime: float
) -> tuple[np.ndarray, np.ndarray]:
    """(image, variance) in electrons: minus bias and dark x EXPTIME, over the flat.

    Variance = (signal + dark + read noise^2) / flat^2, with signal + dark = raw - bias.
    Works in place on the assembled image, a strip of rows at a time. A master that is
    missing (``reduce.allow_uncorrected``) is not applied; without a master bias and without
    an overscan the bias level stays in the image (the background fit removes it) and in the
    variance's signal term (over-estimating it by the bias level in e-).
    """
    flat = masters.flat_and_bad(band)[0] if band in masters.flats else None
    image_e = detector.image_e
    variance_e = np.empty_like(image_e)
    bias, dark = masters.bias_e, masters.dark_e_per_s
    t = np.float32(exptime)
    for start in range(0, image_e.shape[0], STRIP_ROWS):
        rows = slice(start, start + STRIP_ROWS)
        image, variance = image_e[rows], variance_e[rows]
        if bias is not None:
            image -= bias[rows]
        np.maximum(image, 0.0, out=variance)
        for (amp_rows, amp_cols), read_noise in detector.read_noise_e:
            if amp_rows.start < rows.stop and start < amp_rows.stop:
                inside = slice(max(amp_rows.start - start, 0), amp_rows.stop - start)
                variance[inside, amp_cols] += np.float32(read_noise**2)
        if dark is not None:
            image -= dark[rows] * t
        if flat is not None:
            image /= flat[rows]
            variance /= flat[rows]
            variance /= flat[rows]
    return image_e, variance_e


def _flag_bleed(mask: np.ndarray, saturated: np.ndarray) -> None:
    """Flag saturated pixels and ``BLEED_ROWS`` pixels above and below them (same column)."""
    ys, xs = np.nonzero(saturated)
    if ys.size == 0:
        return
    ny = mask.shape[0]
    for dy in range(-BLEED_ROWS, BLEED_ROWS + 1):
        mask[np.clip(ys + dy, 0, ny - 1), xs] |= MASK_BAD


def _cosmic_rays(
    image_e: np.ndarray,
    variance_e: np.ndarray,
    back_e: np.ndarray,
    bad: np.ndarray,
    detector,
    cfg: dict,
) -> tuple[np.ndarray, np.ndarray]:
    """Find cosmic-ray pixels ``(ys, xs)`` and replace them in ``image_e``
    (``reduce.cosmic_rays``)."""
    section = cfg["reduce"].get("cosmic_rays") or {}
    if section.get("method", "sharpness") == "lacosmic":
        crmask, cleaned = astroscrappy.detect_cosmics(
            image_e,
            inmask=bad,
            invar=variance_e,
            sigclip=4.5,
            objlim=5.0,
            gain=1.0,
            readnoise=float(np.median([rn for _, rn in detector.read_noise_e])),
            satlevel=float(detector.saturate_e),
            niter=4,
        )
        hits = np.nonzero(crmask & ~bad)
        image_e[hits] = cleaned[hits]
        return hits
    hits = find_cosmic_rays(image_e, variance_e, back_e, bad, CosmicRayParams.from_config(section))
    clean_cosmic_rays(image_e, back_e, hits, bad)
    return hits


def _moffat_radius(fraction: float, beta: float) -> float:
    """Radius enclosing ``fraction`` of a Moffat profile's flux, in units of its alpha."""
    return float(np.sqrt((1.0 - fraction) ** (-1.0 / (beta - 1.0)) - 1.0))


def _moffat_ratio(beta: float) -> float:
    """r80/r50 of a Moffat profile: sqrt(ln 5 / ln 2) (a Gaussian's) as beta grows."""
    return _moffat_radius(0.8, beta) / _moffat_radius(0.5, beta)


def _moffat_beta(ratio: float) -> float:
    """The Moffat beta in ``MOFFAT_BETA_RANGE`` whose r80/r50 is ``ratio`` (to 1e-12).

    r80/r50 falls monotonically with beta, so bisection finds it in ~50 steps of a closed
    form (~30 us). ``scipy.optimize.brentq`` did the same, but importing ``scipy.optimize``
    (0.15-0.4 s, depending on what came before) was paid by every field job; imported lazily,
    each forked worker would pay it instead.
    """
    low, high = MOFFAT_BETA_RANGE
    while high - low > 1e-12:
        mid = 0.5 * (low + high)
        if _moffat_ratio(mid) > ratio:
            low = mid  # still too much light in the wings: a larger beta
        else:
            high = mid
    return 0.5 * (low + high)


def _profile_fwhm(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, masked: np.ndarray, r50: float
) -> float:
    """FWHM [pixels] of the stellar locus from its curve of growth.

    ``2 * r50`` is the FWHM of a Gaussian only: a Moffat PSF (beta 3.5, like the atmosphere's)
    puts more light in its wings, and the same rule reads its FWHM 21 % too wide. The stars'
    r80/r50 fixes the profile: at or below a Gaussian's ``sqrt(ln 5 / ln 2)`` the Gaussian rule
    holds; above it, the Moffat beta with that ratio converts r50 to the FWHM,
    ``2 alpha sqrt(2^(1/beta) - 1)``.
    """
    rmax = np.full(x.size, 2.0 * TOTAL_APERTURE_FWHM * r50)
    radii, flags = sep.flux_radius(image, x, y, rmax, [0.5, 0.8], mask=masked, subpix=5)
    good = (flags == 0) & np.all(np.isfinite(radii) & (radii > 0), axis=1)
    if not good.any():
        return 2.0 * r50
    r50 = float(np.median(radii[good, 0]))
    ratio = float(np.median(radii[good, 1] / radii[good, 0]))

    if ratio <= _moffat_ratio(MOFFAT_BETA_RANGE[1]):
        return 2.0 * r50
    beta = MOFFAT_BETA_RANGE[0]
    if ratio < _moffat_ratio(beta):
        beta = _moffat_beta(ratio)
    hwhm_per_alpha = np.sqrt(2.0 ** (1.0 / beta) - 1.0)
    return 2.0 * r50 * hwhm_per_alpha / _moffat_radius(0.5, beta)


def measure_psf(image: np.ndarray, rms: float, mask: np.ndarray, path: str) -> tuple[float, float]:
    """PSF FWHM [pixels] and point-source aperture correction from bright unsaturated stars.

    Bright (> 20 sigma peak), unmasked and isolated sources (no other 5-sigma island within
    ``TOTAL_APERTURE_FWHM`` FWHM + 2 px; :mod:`astroflow.reduce.islands`) are candidates.
    Stars form the tightest cluster in half-light radius r50 (galaxies spread to larger radii,
    artefacts to smaller): the locus is the candidate whose +-10 % r50 window holds the most
    candidates, and the FWHM comes from those stars' curve of growth (:func:`_profile_fwhm`:
    Gaussian or Moffat, whichever their r80/r50 says). The aperture correction is the median
    fraction of those stars' flux (within ``TOTAL_APERTURE_FWHM`` FWHM) inside the PSF
    aperture of radius ``PSF_APERTURE_FWHM * FWHM``; it is measured, so it holds for any PSF
    shape.

    Raises
    ------
    FrameError
        When fewer than ``MIN_PSF_STARS`` usable stars are found.
    """
    masked = mask != 0
    objects = find_islands(image, 5.0 * rms, masked, min_area=5)
    r50 = np.array([])
    if len(objects) >= MIN_PSF_STARS:
        all_x, all_y = objects.x, objects.y
        bright = (objects.a > 0) & (objects.peak > 20.0 * rms)
        x, y, a = all_x[bright], all_y[bright], objects.a[bright]
        if x.size:
            rmax = np.clip(6.0 * a, 3.0, 40.0)
            r50, flags = sep.flux_radius(image, x, y, rmax, 0.5, mask=masked, subpix=5)
            _, _, big_flags = sep.sum_circle(image, x, y, rmax, mask=masked, subpix=1)
            dist = np.hypot(x[:, None] - all_x[None, :], y[:, None] - all_y[None, :])
            dist[dist == 0] = np.inf
            nearest = dist.min(axis=1)
            ok = (flags == 0) & (big_flags == 0) & np.isfinite(r50) & (r50 > 0.5)
            ok &= nearest > TOTAL_APERTURE_FWHM * 2.0 * r50 + 2.0
            r50, x, y = r50[ok], x[ok], y[ok]
    if r50.size < MIN_PSF_STARS:
        raise FrameError(
            path,
            None,
            f"PSF not measurable: {r50.size} bright isolated unsaturated stars, "
            f"need {MIN_PSF_STARS}",
        )
    within = np.abs(r50[None, :] - r50[:, None]) <= 0.1 * r50[:, None]
    counts = within.sum(axis=1)
    best = np.flatnonzero(counts == counts.max())
    locus = best[np.argmin(r50[best])]
    stars = np.flatnonzero(within[locus])
    if stars.size < MIN_PSF_STARS:
        raise FrameError(
            path, None, f"PSF not measurable: stellar locus has only {stars.size} stars"
        )
    fwhm = _profile_fwhm(image, x[stars], y[stars], masked, float(np.median(r50[stars])))
    f_psf, _, fl1 = sep.sum_circle(
        image, x[stars], y[stars], PSF_APERTURE_FWHM * fwhm, mask=masked, subpix=5
    )
    f_tot, _, fl2 = sep.sum_circle(
        image, x[stars], y[stars], TOTAL_APERTURE_FWHM * fwhm, mask=masked, subpix=5
    )
    use = (fl1 == 0) & (fl2 == 0) & (f_tot > 0)
    ratio = f_psf[use] / f_tot[use]
    ap_corr = float(np.median(ratio)) if ratio.size else float("nan")
    if not 0.2 < ap_corr <= 1.05:
        raise FrameError(path, None, f"PSF not measurable: aperture correction {ap_corr:.3g}")
    return fwhm, ap_corr
