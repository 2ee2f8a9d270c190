"""The demo camera: a detector that needs a real reduction before its pixels mean anything.

Everything here works in electrons until :meth:`Detector.read_out` turns an electron image
into raw amplifier arrays in ADU. The detector's fixed properties (gains, read noise, bias
structure, pixel response, bad columns, hot pixels, dust on each filter) are drawn once from
the master seed, so calibration frames and science frames share them exactly:

- bias: ~1000 ADU per amplifier, a column pattern, a ramp near each amplifier's first columns
  and a gradient along y; on top, a per-frame offset and a per-frame row pattern that the
  overscan columns share (so overscan subtraction is needed and works);
- dark current (``simulate.dark_current_e_per_s``), hot pixels and one hot partial column
  (scaled by EXPTIME);
- flat field per band: vignetting, pixel response non-uniformity, 2-3 dust donuts, a slight
  illumination tilt and two dead partial columns; normalised to a median of 1 over the
  detector, which is the normalisation the zero points refer to;
- gain (e-/ADU) and read noise differ per amplifier, scattered about ``simulate.gain_e_per_adu``
  and ``simulate.read_noise_e`` (a real mosaic's amplifiers never agree, and the reduction must
  read GAIN per extension); Poisson noise; cosmic rays; charge above ``simulate.full_well_e``
  bleeds along columns; pixels are clipped at ``SATURATE`` ADU.

The camera keys come from the config so that the survey presets (``config/presets/``) can
describe MegaCam- or SDSS-like electronics; the module constants below are the demo values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from astroflow.simulate.seeding import DETECTOR, FLAT_BAND, rng_for

#: Demo pixel full well [e-] (``simulate.full_well_e``); charge above it bleeds along the column.
FULL_WELL_E = 9000.0
#: Nominal bias level [ADU].
BIAS_LEVEL_ADU = 1000.0
#: Demo mean dark current [e-/s/pixel] (``simulate.dark_current_e_per_s``).
DARK_E_PER_S = 0.02
#: Cosmic-ray hits per megapixel per second of exposure.
COSMIC_RATE_PER_MPIX_S = 0.08
#: Mean level of a flat-field frame, as a fraction of the full well (high, never saturated).
FLAT_LEVEL_FRACTION = 2.0 / 3.0
#: Demo mean level of a flat-field frame [e-].
FLAT_LEVEL_E = FLAT_LEVEL_FRACTION * FULL_WELL_E
#: Amplifier gains are uniform within this fraction of ``simulate.gain_e_per_adu``.
GAIN_SPREAD = 0.2
#: Amplifier read noises are uniform within this fraction of ``simulate.read_noise_e``.
READ_NOISE_SPREAD = 0.3
#: Largest raw value a uint16 pixel can hold [ADU].
ADC_MAX_ADU = 65535
#: Headroom kept below ADC_MAX_ADU for the bias scatter, structure and per-frame offsets [ADU].
BIAS_HEADROOM_ADU = 300.0
#: PRNU amplitude (1 sigma) per band; bluer bands show more.
_PRNU_BY_BAND = {"u": 0.016, "g": 0.012, "r": 0.010, "i": 0.009, "z": 0.011, "y": 0.012}


@dataclass(frozen=True)
class Amp:
    """One amplifier's electronics (header values are exactly these numbers)."""

    index: int  # 1-based, as in EXTNAME AMP<k>
    gain_e_per_adu: float
    read_noise_e: float
    bias_adu: float
    saturate_adu: int


class Detector:
    """Fixed properties of the demo detector, derived from ``cfg['seed']``.

    Parameters
    ----------
    cfg
        Resolved config; reads ``instrument`` (amp layout), the camera keys of ``simulate``
        (``gain_e_per_adu``, ``read_noise_e``, ``dark_current_e_per_s``, ``full_well_e``)
        and ``seed``.
    """

    def __init__(self, cfg: Mapping):
        inst = cfg["instrument"]
        self.n_amps = int(inst["n_amps"])
        self.ny, self.nx_amp = (int(v) for v in inst["amp_shape"])
        self.n_over = int(inst["overscan_cols"])
        self.nx = self.n_amps * self.nx_amp
        self.bands = tuple(inst["bands"])
        sim = cfg["simulate"]
        self.full_well_e = float(sim["full_well_e"])
        self.flat_level_e = FLAT_LEVEL_FRACTION * self.full_well_e
        self._cfg = {"seed": cfg["seed"]}
        rng = rng_for(cfg, DETECTOR)
        gain0, rdn0 = float(sim["gain_e_per_adu"]), float(sim["read_noise_e"])
        amps = []
        for k in range(self.n_amps):
            gain = round(float(rng.uniform(1 - GAIN_SPREAD, 1 + GAIN_SPREAD)) * gain0, 4)
            rdn = round(float(rng.uniform(1 - READ_NOISE_SPREAD, 1 + READ_NOISE_SPREAD)) * rdn0, 3)
            bias = round(BIAS_LEVEL_ADU + float(rng.normal(0.0, 30.0)), 2)
            sat = min(int(bias + 0.97 * self.full_well_e / gain), ADC_MAX_ADU)
            amps.append(Amp(k + 1, gain, rdn, bias, sat))
        self.amps = tuple(amps)

        y = np.arange(self.ny)[:, None] / max(self.ny - 1, 1)
        structure = np.zeros((self.ny, self.nx))
        for k, amp in enumerate(self.amps):
            cols = np.arange(self.nx_amp)
            pattern = np.convolve(rng.normal(0.0, 2.0, self.nx_amp + 4), np.ones(5) / 5, "valid")
            pattern += rng.normal(0.0, 0.7, self.nx_amp)
            ramp = 12.0 * np.exp(-cols / 6.0)
            structure[:, k * self.nx_amp : (k + 1) * self.nx_amp] = (
                amp.bias_adu + pattern[None, :] + ramp[None, :] + 4.0 * y
            )
        self.bias_structure_adu = structure

        dark = np.full((self.ny, self.nx), float(sim["dark_current_e_per_s"]))
        n_hot = max(1, int(2e-4 * self.ny * self.nx))
        hy, hx = rng.integers(0, self.ny, n_hot), rng.integers(0, self.nx, n_hot)
        dark[hy, hx] = rng.uniform(0.5, 20.0, n_hot)
        self.hot_column = int(rng.integers(4, self.nx - 4))
        hot_start = int(rng.integers(0, self.ny // 2))
        dark[hot_start:, self.hot_column] = 3.0
        self.dark_e_per_s = dark

        self.dead_columns = tuple(int(c) for c in rng.choice(np.arange(4, self.nx - 4), 2, False))
        self.dead_starts = tuple(int(rng.integers(0, self.ny // 2)) for _ in self.dead_columns)
        self._prnu_noise = rng.normal(0.0, 1.0, (self.ny, self.nx))
        self._flats: dict[str, np.ndarray] = {}
        self._vignette_centre = (
            self.ny / 2 + rng.normal(0.0, 0.05 * self.ny),
            self.nx / 2 + rng.normal(0.0, 0.05 * self.nx),
        )

    def flat(self, band: str) -> np.ndarray:
        """Relative response ``(ny, nx)`` in ``band`` (median 1), dead columns included."""
        if band not in self._flats:
            self._flats[band] = self._make_flat(band)
        return self._flats[band]

    def _make_flat(self, band: str) -> np.ndarray:
        b = self.bands.index(band)
        rng = rng_for(self._cfg, FLAT_BAND, b)
        yy, xx = np.mgrid[0 : self.ny, 0 : self.nx].astype(float)
        cy, cx = self._vignette_centre
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / ((self.ny / 2) ** 2 + (self.nx / 2) ** 2)
        flat = 1.0 - 0.12 * r2
        tilt = rng.normal(0.0, 0.02, 2)
        flat *= 1.0 + tilt[0] * (xx / self.nx - 0.5) + tilt[1] * (yy / self.ny - 0.5)
        flat *= 1.0 + _PRNU_BY_BAND.get(band.lower(), 0.01) * self._prnu_noise
        for _ in range(int(rng.integers(2, 4))):
            radius = rng.uniform(10.0, 28.0)
            width = 0.3 * radius
            depth = rng.uniform(0.03, 0.09)
            dy, dx = rng.uniform(radius, self.ny - radius), rng.uniform(radius, self.nx - radius)
            rr = np.hypot(yy - dy, xx - dx)
            flat *= 1.0 - depth * np.exp(-0.5 * ((rr - radius) / width) ** 2)
            flat *= 1.0 - 0.4 * depth * (rr < radius)
        for col, start in zip(self.dead_columns, self.dead_starts, strict=True):
            flat[start:, col] = 0.03
        flat /= np.median(flat)
        flat.setflags(write=False)
        return flat

    def add_cosmic_rays(self, electrons: np.ndarray, rng: np.random.Generator, exptime_s: float):
        """Add cosmic-ray tracks (a few pixels long, sharp, not flat-fielded) in place."""
        n = int(rng.poisson(COSMIC_RATE_PER_MPIX_S * electrons.size / 1e6 * exptime_s))
        for _ in range(n):
            length = min(rng.exponential(4.0), 30.0)
            angle = rng.uniform(0.0, np.pi)
            steps = max(1, int(2 * length) + 1)
            s = np.linspace(0.0, length, steps)
            y0, x0 = rng.uniform(0, self.ny), rng.uniform(0, self.nx)
            ys = np.clip(np.round(y0 + s * np.sin(angle)).astype(int), 0, self.ny - 1)
            xs = np.clip(np.round(x0 + s * np.cos(angle)).astype(int), 0, self.nx - 1)
            np.add.at(electrons, (ys, xs), rng.uniform(400.0, 1500.0))
        return n

    @staticmethod
    def bleed(electrons: np.ndarray, full_well_e: float = FULL_WELL_E) -> int:
        """Spill charge above the full well up and down its column, in place.

        Returns the number of columns that bled.
        """
        cols = np.flatnonzero((electrons > full_well_e).any(axis=0))
        ny = electrons.shape[0]
        for c in cols:
            col = electrons[:, c]
            over = col > full_well_e
            edges = np.flatnonzero(np.diff(np.concatenate(([0], over.astype(np.int8), [0]))))
            for start, stop in zip(edges[::2], edges[1::2], strict=True):
                excess = float((col[start:stop] - full_well_e).sum())
                col[start:stop] = full_well_e
                for direction, half in ((1, excess / 2), (-1, excess / 2)):
                    j = stop if direction == 1 else start - 1
                    while half > 0 and 0 <= j < ny:
                        room = max(full_well_e - col[j], 0.0)
                        take = min(room, half)
                        col[j] += take
                        half -= take
                        j += direction
        return len(cols)

    def expose(
        self, expected_e: np.ndarray | float, exptime_s: float, rng: np.random.Generator,
        flat_band: str | None, cosmics: bool,
    ) -> np.ndarray:
        """Electron image of one exposure: signal x flat + dark, Poisson, cosmics, bleeding.

        ``expected_e`` is the sky-plus-objects signal (electrons for a flat of 1) or 0.
        """
        signal = np.zeros((self.ny, self.nx)) + expected_e
        if flat_band is not None:
            signal *= self.flat(flat_band)
        signal += self.dark_e_per_s * exptime_s
        electrons = rng.poisson(signal).astype(np.float64)
        if cosmics:
            self.add_cosmic_rays(electrons, rng, exptime_s)
        self.bleed(electrons, self.full_well_e)
        return electrons

    def read_out(self, electrons: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Raw ``uint16`` arrays ``(ny, nx_amp + n_over)`` per amplifier (overscan last)."""
        out = []
        for k, amp in enumerate(self.amps):
            sl = slice(k * self.nx_amp, (k + 1) * self.nx_amp)
            frame_offset = rng.normal(0.0, 8.0)
            row_pattern = np.convolve(rng.normal(0.0, 1.5, self.ny + 6), np.ones(7) / 7, "valid")
            sigma_adu = amp.read_noise_e / amp.gain_e_per_adu
            raw = np.empty((self.ny, self.nx_amp + self.n_over))
            raw[:, : self.nx_amp] = electrons[:, sl] / amp.gain_e_per_adu
            raw[:, : self.nx_amp] += self.bias_structure_adu[:, sl]
            raw[:, self.nx_amp :] = amp.bias_adu
            raw += frame_offset + row_pattern[:, None]
            raw += rng.normal(0.0, sigma_adu, raw.shape)
            out.append(np.clip(np.round(raw), 0, amp.saturate_adu).astype(np.uint16))
        return out
