"""Run SExtractor (with a PSFEx PSF) on one calibrated frame and read back its catalog.

Why two programs: ``CLASS_STAR`` (SExtractor's neural-network stellarity) needs only the
seeing, but ``SPREAD_MODEL`` (Desai et al. 2012) compares each object with the local PSF model,
which PSFEx builds from the frame's own stars. The sequence is the classic one:

1. SExtractor, pass 1: bright-ish sources with ``VIGNET`` stamps, written as FITS_LDAC;
2. PSFEx on that catalog: a pixel-basis PSF model (``.psf``);
3. SExtractor, pass 2 with ``PSF_NAME``: ``CLASS_STAR``, ``SPREAD_MODEL`` and positions.

Every setting is written to a config file in the work folder (nothing is taken from a default
file), so a run is reproducible from the folder alone. ``PIXEL_SCALE`` and ``SEEING_FWHM`` are
always set: with their defaults ``CLASS_STAR`` is meaningless. The shipped
``prepsfex.param`` lacks ``SNR_WIN``, so the parameter lists are written here.

Images are in e-/s, so one "ADU" is ``exptime`` electrons: ``GAIN = exptime_s`` gives the right
Poisson noise of the objects, while the weight map (inverse background variance, 0 on masked
pixels) gives the background noise.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

log = logging.getLogger(__name__)

#: Names under which the two programs are installed (Debian first, then upstream's names).
SEXTRACTOR_NAMES = ("source-extractor", "sex")
PSFEX_NAMES = ("psfex",)
#: Where the star/galaxy network weights (``default.nnw``) live, relative to ``<prefix>/share``.
SHARE_DIRS = ("source-extractor", "sextractor")
#: Side of the stamps PSFEx learns from and of its PSF model [pixels].
VIGNET_PIX = 35
PSF_SIZE_PIX = 25
#: 3x3 "all-ground" detection filter with FWHM 2 pixels: SExtractor's default.conv and sep's
#: default kernel (the one the reduce stage detects with).
DETECTION_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])

#: Fewest stars PSFEx must accept for its PSF (and so SPREAD_MODEL) to be trusted.
MIN_PSF_STARS = 5

#: Pass 1 columns: what PSFEx reads (SNR_WIN is what the shipped prepsfex.param lacks).
PSFEX_PARAMS = (
    f"VIGNET({VIGNET_PIX},{VIGNET_PIX})", "X_IMAGE", "Y_IMAGE", "XWIN_IMAGE", "YWIN_IMAGE",
    "FLUX_APER(1)", "FLUXERR_APER(1)", "FLUX_RADIUS", "ELONGATION", "FLAGS", "SNR_WIN",
    "FLUX_MAX",
)
#: Pass 2 columns: the baselines' scores and what matching and diagnostics need.
CATALOG_PARAMS = (
    "NUMBER", "X_IMAGE", "Y_IMAGE", "ALPHAWIN_J2000", "DELTAWIN_J2000", "MAG_AUTO",
    "MAGERR_AUTO", "FLUX_RADIUS", "SNR_WIN", "FLAGS", "CLASS_STAR", "SPREAD_MODEL",
    "SPREADERR_MODEL",
)


class SExtractorError(RuntimeError):
    """SExtractor or PSFEx failed on a frame; the message names the frame and the step."""


@dataclass(frozen=True)
class Tools:
    """Paths of the two programs and of the neural-network weights ``default.nnw``."""

    sextractor: str
    psfex: str
    nnw: str


def find_tools() -> tuple[Tools | None, str | None]:
    """Locate ``source-extractor``/``sex``, ``psfex`` and ``default.nnw``.

    Returns
    -------
    tools, reason
        ``(Tools, None)`` when everything is there, else ``(None, why not)`` for the
        ``"skipped"`` note in metrics.json.
    """
    sex = next((p for p in map(shutil.which, SEXTRACTOR_NAMES) if p), None)
    if sex is None:
        return None, "source-extractor not found (looked for " + ", ".join(SEXTRACTOR_NAMES) + ")"
    psfex = next((p for p in map(shutil.which, PSFEX_NAMES) if p), None)
    if psfex is None:
        return None, "psfex not found (SPREAD_MODEL needs a PSFEx PSF)"
    prefix = Path(sex).resolve().parent.parent
    candidates = [prefix / "share" / d / "default.nnw" for d in SHARE_DIRS]
    candidates += [Path("/usr/share") / d / "default.nnw" for d in SHARE_DIRS]
    nnw = next((c for c in candidates if c.is_file()), None)
    if nnw is None:
        return None, ("SExtractor's default.nnw (CLASS_STAR network) not found in "
                      + ", ".join(str(c.parent) for c in candidates))
    return Tools(sex, psfex, str(nnw)), None


def conv_text(kernel: np.ndarray) -> str:
    """A SExtractor ``.conv`` filter file (normalised) for ``kernel``."""
    rows = "\n".join(" ".join(f"{v:g}" for v in row) for row in np.asarray(kernel, float))
    return f"CONV NORM\n{rows}\n"


def filtered_threshold(detect_sigma: float, kernel: np.ndarray = DETECTION_KERNEL) -> float:
    """SExtractor ``DETECT_THRESH`` that detects what sep's matched filter detects at
    ``detect_sigma``.

    SExtractor compares the *filtered* image with ``DETECT_THRESH`` times the *unfiltered*
    background RMS, while sep (reduce) compares it with the noise of the filtered image, which
    is ``sqrt(sum k^2) / sum k`` times smaller. Without this scaling SExtractor misses a fifth
    of the reduce objects at S/N 10-20, which would then go unscored.
    """
    k = np.asarray(kernel, float)
    return float(detect_sigma) * float(np.sqrt(np.sum(k**2)) / np.sum(k))


def _write_config(path: Path, settings: dict[str, object]) -> Path:
    lines = []
    for key, value in settings.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        lines.append(f"{key:<18} {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(cmd: list[str], cwd: Path, what: str, frame: str) -> None:
    log.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SExtractorError(f"{frame}: {what} failed with exit code {proc.returncode}: "
                              + " | ".join(tail))


def _sextractor_settings(
    tools: Tools,
    seeing_fwhm_arcsec: float,
    pixel_scale_arcsec: float,
    zeropoint_mag: float,
    gain_e_per_unit: float,
    detect_sigma: float,
    detect_min_area: int,
    threads: int,
) -> dict[str, object]:
    fwhm_pix = seeing_fwhm_arcsec / pixel_scale_arcsec
    return {
        "DETECT_TYPE": "CCD",
        "DETECT_MINAREA": int(detect_min_area),
        "DETECT_THRESH": round(filtered_threshold(detect_sigma), 4),
        "ANALYSIS_THRESH": round(filtered_threshold(detect_sigma), 4),
        "FILTER": "Y",
        "FILTER_NAME": "detection.conv",
        "DEBLEND_NTHRESH": 32,
        "DEBLEND_MINCONT": 0.005,
        "CLEAN": "Y",
        "CLEAN_PARAM": 1.0,
        "MASK_TYPE": "CORRECT",
        "WEIGHT_TYPE": "MAP_WEIGHT",
        "WEIGHT_IMAGE": "weight.fits",
        # Aperture for PSFEx's flux normalisation: 3 FWHM across.
        "PHOT_APERTURES": round(3.0 * fwhm_pix, 2),
        "PHOT_AUTOPARAMS": (2.5, 3.5),
        "SATUR_LEVEL": 1e29,  # saturated pixels carry weight 0 instead
        "MAG_ZEROPOINT": float(zeropoint_mag),
        "GAIN": float(gain_e_per_unit),
        "PIXEL_SCALE": float(pixel_scale_arcsec),
        "SEEING_FWHM": float(seeing_fwhm_arcsec),
        "STARNNW_NAME": tools.nnw,
        "BACK_TYPE": "AUTO",
        "BACK_SIZE": 64,
        "BACK_FILTERSIZE": 3,
        "MEMORY_PIXSTACK": 3000000,
        "NTHREADS": max(1, int(threads)),
        "VERBOSE_TYPE": "QUIET",
        "WRITE_XML": "N",
        "CHECKIMAGE_TYPE": "NONE",
    }


def _psfex_settings(seeing_fwhm_arcsec: float, pixel_scale_arcsec: float) -> dict[str, object]:
    fwhm_pix = seeing_fwhm_arcsec / pixel_scale_arcsec
    return {
        "BASIS_TYPE": "PIXEL_AUTO",
        "PSF_SAMPLING": 0.0,
        "PSF_SIZE": (PSF_SIZE_PIX, PSF_SIZE_PIX),
        "CENTER_KEYS": "XWIN_IMAGE,YWIN_IMAGE",
        "PHOTFLUX_KEY": "FLUX_APER(1)",
        "PHOTFLUXERR_KEY": "FLUXERR_APER(1)",
        # A constant PSF: the frames evaluated here are one detector each and hold tens of
        # usable stars, too few to constrain a spatially varying model reliably.
        "PSFVAR_KEYS": "X_IMAGE,Y_IMAGE",
        "PSFVAR_GROUPS": (1, 1),
        "PSFVAR_DEGREES": 0,
        "SAMPLE_AUTOSELECT": "Y",
        "SAMPLE_FWHMRANGE": (round(0.5 * fwhm_pix, 2), round(2.5 * fwhm_pix, 2)),
        "SAMPLE_VARIABILITY": 0.3,
        "SAMPLE_MINSN": 20,
        "SAMPLE_MAXELLIP": 0.3,
        "CHECKPLOT_TYPE": "NONE",
        "CHECKIMAGE_TYPE": "NONE",
        "WRITE_XML": "N",
        "VERBOSE_TYPE": "QUIET",
        "NTHREADS": 1,
    }


def run_sextractor(
    image: np.ndarray,
    weight: np.ndarray,
    header: fits.Header,
    work_dir: Path,
    tools: Tools,
    *,
    seeing_fwhm_arcsec: float,
    pixel_scale_arcsec: float,
    zeropoint_mag: float,
    gain_e_per_unit: float,
    detect_sigma: float = 3.0,
    detect_min_area: int = 5,
    threads: int = 1,
    frame_name: str = "frame",
) -> Table:
    """Catalog of one calibrated frame with ``CLASS_STAR`` and ``SPREAD_MODEL``.

    Parameters
    ----------
    image : 2-d array
        Background-subtracted (or not: SExtractor subtracts its own) flux per pixel.
    weight : 2-d array
        Inverse background variance per pixel, 0 where a pixel must be ignored.
    header : astropy.io.fits.Header
        WCS of the frame (sky positions of the catalog come from it).
    work_dir : Path
        An existing, empty folder for the FITS files, configs and catalogs.
    tools : Tools
        From :func:`find_tools`.
    seeing_fwhm_arcsec, pixel_scale_arcsec : float
        PSF FWHM of this frame and pixel scale [arcsec]; ``CLASS_STAR`` depends on both.
    zeropoint_mag : float
        AB magnitude of one image unit per pixel sum (``MAG_AUTO`` only).
    gain_e_per_unit : float
        Electrons per image unit (the exposure time for e-/s images).
    detect_sigma, detect_min_area
        Detection threshold [sigma of the filtered background, as sep and the reduce stage
        count it] and minimum area [pixels].
    threads : int
        SExtractor threads.
    frame_name : str
        Named in errors (the raw exposure's path).

    Returns
    -------
    astropy.table.Table
        One row per source with the columns of :data:`CATALOG_PARAMS`; ``meta`` holds
        ``psf_stars`` (stars PSFEx accepted) and ``psf_fwhm_arcsec`` (of its model).

    Raises
    ------
    SExtractorError
        When a program fails, writes no catalog, or PSFEx accepts fewer than
        :data:`MIN_PSF_STARS` stars.
    """
    work_dir = Path(work_dir)
    if image.shape != weight.shape:
        raise ValueError(f"{frame_name}: image {image.shape} and weight {weight.shape} differ")
    fits.PrimaryHDU(np.ascontiguousarray(image, np.float32), header=header).writeto(
        work_dir / "image.fits", overwrite=True)
    fits.PrimaryHDU(np.ascontiguousarray(weight, np.float32), header=header).writeto(
        work_dir / "weight.fits", overwrite=True)
    (work_dir / "detection.conv").write_text(conv_text(DETECTION_KERNEL))
    base = _sextractor_settings(tools, seeing_fwhm_arcsec, pixel_scale_arcsec, zeropoint_mag,
                                gain_e_per_unit, detect_sigma, detect_min_area, threads)

    (work_dir / "psfex.param").write_text("\n".join(PSFEX_PARAMS) + "\n")
    pass1 = {**base, "CATALOG_NAME": "psfex.cat", "CATALOG_TYPE": "FITS_LDAC",
             "PARAMETERS_NAME": "psfex.param"}
    _write_config(work_dir / "pass1.sex", pass1)
    _run([tools.sextractor, "image.fits", "-c", "pass1.sex"], work_dir,
         "source-extractor (PSFEx input pass)", frame_name)

    _write_config(work_dir / "default.psfex", _psfex_settings(seeing_fwhm_arcsec,
                                                              pixel_scale_arcsec))
    _run([tools.psfex, "psfex.cat", "-c", "default.psfex"], work_dir, "psfex", frame_name)
    psf = work_dir / "psfex.psf"
    if not psf.is_file():
        raise SExtractorError(f"{frame_name}: psfex wrote no PSF model (too few usable stars?)")
    # PSFEx writes a (blank) model even when it accepted no star; SPREAD_MODEL would then be
    # computed against nothing.
    psf_header = fits.getheader(psf, 1)
    n_stars = int(psf_header.get("ACCEPTED", 0))
    if n_stars < MIN_PSF_STARS:
        raise SExtractorError(f"{frame_name}: psfex accepted {n_stars} stars for the PSF model, "
                              f"need at least {MIN_PSF_STARS}")

    (work_dir / "catalog.param").write_text("\n".join(CATALOG_PARAMS) + "\n")
    pass2 = {**base, "CATALOG_NAME": "catalog.fits", "CATALOG_TYPE": "FITS_LDAC",
             "PARAMETERS_NAME": "catalog.param", "PSF_NAME": "psfex.psf"}
    _write_config(work_dir / "pass2.sex", pass2)
    _run([tools.sextractor, "image.fits", "-c", "pass2.sex"], work_dir,
         "source-extractor (CLASS_STAR/SPREAD_MODEL pass)", frame_name)
    table = read_ldac(work_dir / "catalog.fits")
    table.meta["psf_stars"] = n_stars
    table.meta["psf_fwhm_arcsec"] = float(psf_header.get("PSF_FWHM", np.nan)) * pixel_scale_arcsec
    return table


def read_ldac(path: Path) -> Table:
    """The object table (``LDAC_OBJECTS``) of a FITS_LDAC catalog."""
    path = Path(path)
    if not path.is_file():
        raise SExtractorError(f"{path}: SExtractor wrote no catalog")
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        if "LDAC_OBJECTS" not in names:
            raise SExtractorError(f"{path}: no LDAC_OBJECTS extension (found {names})")
        return Table(hdul["LDAC_OBJECTS"].data)
