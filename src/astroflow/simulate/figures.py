"""The two pictures of ``docs/simulate.md``: a raw amplifier and the same field calibrated.

The raw picture shows what the reduction is up against (overscan strip, bias ramp and column
pattern, cosmic rays, bleed trails, dead and hot columns, all in ADU); the calibrated one
shows the same exposure after the real reduction code (:mod:`astroflow.reduce`: overscan,
gain, master bias, dark and flat, cosmic-ray cleaning, background), so the pictures document
the pipeline rather than an idealised version of it. Run::

    python -m astroflow.simulate.figures --out docs/images

which simulates the tiny survey's calibration frames and one field into a temporary
directory (or reads an existing archive with ``--raw-dir``) and writes
``raw_amplifier.png`` and ``calibrated_field.png``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from astroflow.simulate import layout

log = logging.getLogger("astroflow.simulate.figures")

REPO = Path(__file__).resolve().parents[3]
#: Field and band pictured (the tiny config has them).
FIELD, BAND = "F00", "r"
#: Figure resolution [dots per inch]; with the sizes below the PNGs stay well under 300 kB.
DPI = 80


def _percentile_limits(image: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    return float(np.percentile(finite, lo)), float(np.percentile(finite, hi))


def _read_amp(path: str, amp: int) -> tuple[np.ndarray, dict]:
    from astropy.io import fits

    with fits.open(path) as hdul:
        hdu = hdul[amp]
        return hdu.data.astype(np.float32), dict(hdu.header)


def plot_raw_amplifier(
    science_path: str, dark_path: str, out_png: str | Path, amp: int = 1
) -> Path:
    """Picture one raw amplifier in ADU, overscan included: a science frame and a dark.

    The science frame (zscale stretch) shows stars, galaxies, bleed trails and the dead
    column on top of the sky; the dark (1st-99.5th percentile stretch, no sky) shows what
    the sky hides: the bias ramp next to the readout, the column pattern, the gradient along
    y, hot pixels, the hot column and cosmic rays. The orange line marks ``BIASSEC``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import ZScaleInterval

    from astroflow.io.fits_read import parse_section

    panels = []
    for path, what in ((science_path, "science"), (dark_path, "dark")):
        data, header = _read_amp(path, amp)
        if what == "science":
            lo, hi = ZScaleInterval().get_limits(data)
        else:
            lo, hi = _percentile_limits(data, 1.0, 99.5)
        panels.append((data, header, what, Path(path).name, lo, hi))
    ny, nx = panels[0][0].shape
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 4.4 * ny / max(2 * nx, ny) + 0.8))
    for ax, (data, header, what, name, lo, hi) in zip(axes, panels, strict=True):
        _, xs = parse_section(header["BIASSEC"], name, header["EXTNAME"])
        im = ax.imshow(data, origin="lower", cmap="gray", vmin=lo, vmax=hi,
                       interpolation="nearest")
        ax.axvline(xs.start - 0.5, color="tab:orange", lw=0.8)
        ax.set_title(f"{what}: {name} [{header['EXTNAME']}]\nGAIN {header['GAIN']} e-/ADU, "
                     f"RDNOISE {header['RDNOISE']} e-", fontsize=7)
        ax.set_xlabel("x [pixel] (overscan right of the orange line)", fontsize=7)
        ax.tick_params(labelsize=6)
        bar = fig.colorbar(im, ax=ax, fraction=0.08)
        bar.set_label("raw value [ADU]", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    axes[0].set_ylabel("y [pixel]", fontsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)
    return out_png


def plot_calibrated_field(
    cfg: Mapping, raw_dir: str | Path, out_png: str | Path, work_dir: str | Path
) -> Path:
    """Calibrate one science exposure with :mod:`astroflow.reduce` and picture it.

    Masters are built from every calibration frame under ``raw_dir`` into ``work_dir``.
    Pixels flagged bad (saturated, bleed, dead columns, hot pixels) are drawn in red,
    cosmic rays in cyan. The stretch is asinh in units of the background noise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from astroflow.reduce.assemble import Layout
    from astroflow.reduce.calibrate import MASK_BAD, MASK_COSMIC, calibrate_exposure
    from astroflow.reduce.masters import build_masters, load_masters

    calib = layout.calib_files(cfg, raw_dir)
    build_masters(calib, dict(cfg), work_dir)
    masters = load_masters(work_dir, Layout.from_config(cfg))
    science = dict(
        zip(
            [e["band"] for e in layout.science_exposures(cfg, FIELD)],
            layout.science_files(cfg, raw_dir, FIELD),
            strict=True,
        )
    )
    exposure = calibrate_exposure(science[BAND], dict(cfg), masters)
    scaled = np.arcsinh(exposure.image / (3.0 * exposure.background_rms))
    rgb = plt.get_cmap("gray")(np.clip((scaled + 1.0) / 6.0, 0.0, 1.0))
    rgb[(exposure.mask & MASK_BAD) != 0] = (0.85, 0.1, 0.1, 1.0)
    rgb[(exposure.mask & MASK_COSMIC) != 0] = (0.1, 0.8, 0.9, 1.0)
    ny, nx = exposure.image.shape
    fig, ax = plt.subplots(figsize=(5.0, 5.0 * ny / nx + 0.6))
    ax.imshow(rgb, origin="lower", interpolation="nearest")
    ax.set_title(
        f"{FIELD} {BAND}, calibrated by astroflow.reduce: PSF FWHM "
        f'{exposure.psf_fwhm_arcsec:.2f}", 5-sigma depth {exposure.depth_mag_5sigma:.1f} mag\n'
        "asinh stretch; red = masked bad pixels, cyan = cosmic rays",
        fontsize=8,
    )
    ax.set_xlabel("x [pixel]", fontsize=8)
    ax.set_ylabel("y [pixel]", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)
    return out_png


def make_figures(cfg: Mapping, raw_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Both pictures from an existing archive of ``cfg`` (it must hold field F00)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    science = dict(
        zip(
            [e["band"] for e in layout.science_exposures(cfg, FIELD)],
            layout.science_files(cfg, raw_dir, FIELD),
            strict=True,
        )
    )
    dark = next(p for p in layout.calib_files(cfg, raw_dir) if Path(p).name.startswith("dark_"))
    raw_png = plot_raw_amplifier(science[BAND], dark, out / "raw_amplifier.png")
    log.info("wrote %s", raw_png)
    with tempfile.TemporaryDirectory() as work:
        cal_png = plot_calibrated_field(cfg, raw_dir, out / "calibrated_field.png", work)
    log.info("wrote %s", cal_png)
    return [raw_png, cal_png]


def main(argv: list[str] | None = None) -> int:
    from astroflow.cli_common import setup_logging
    from astroflow.config import load_config
    from astroflow.simulate import stage

    parser = argparse.ArgumentParser(
        prog="python -m astroflow.simulate.figures",
        description="Draw docs/images/raw_amplifier.png and calibrated_field.png.",
    )
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    parser.add_argument(
        "--config", nargs="+", default=[str(REPO / "config" / "config.yaml"),
                                        str(REPO / "config" / "tiny.yaml")],
        help="config files of the archive (default: the tiny survey)",
    )
    parser.add_argument(
        "--raw-dir", default=None, help="existing raw archive (default: simulate one)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    cfg = load_config(*args.config)
    if args.raw_dir is not None:
        make_figures(cfg, args.raw_dir, args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stage.simulate_calib(cfg, tmp)
        stage.simulate_field(cfg, FIELD, tmp, Path(tmp) / f"{FIELD}.truth.ecsv")
        make_figures(cfg, tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
