"""Per-band flux scale for the arcsinh stretch the networks see.

Cutouts in nJy span from sky noise (tens of nJy) to bright stars (1e6 nJy) and differ in noise
between bands. ``arcsinh(x / scale_b)`` is linear near the noise and logarithmic for bright
cores; with ``scale_b`` the robust sky noise of band b, every band's noise sits at ~1 whatever
the depth. The scale is fitted on the training split only and stored inside the model.
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826


def border_pixels(images: np.ndarray, width: int = 4) -> np.ndarray:
    """Pixels of the outer ``width``-pixel frame, per band: ``(n_bands, n_pixels)``.

    The frame is mostly sky, so its spread is a noise estimate little biased by the central
    source.
    """
    n, b, s, _ = images.shape
    if 2 * width >= s:
        raise ValueError(f"border_pixels: frame of {width} pixels too wide for {s}-pixel cutouts")
    mask = np.ones((s, s), dtype=bool)
    mask[width:-width, width:-width] = False
    return images[:, :, mask].transpose(1, 0, 2).reshape(b, -1)


def fit_band_scale_njy(images: np.ndarray, width: int = 4) -> np.ndarray:
    """Robust per-band noise level [nJy]: 1.4826 x MAD of the border pixels.

    Parameters
    ----------
    images
        Training cutouts ``(N, n_bands, S, S)`` in nJy.

    Returns
    -------
    numpy.ndarray
        ``(n_bands,)`` float32 scales, all finite and positive.

    Raises
    ------
    ValueError
        If a band has no spread (empty or constant cutouts), naming the band index.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"fit_band_scale_njy: need (N>0, bands, S, S) images, got {images.shape}")
    pix = border_pixels(images.astype(np.float64, copy=False), width)
    med = np.nanmedian(pix, axis=1, keepdims=True)
    scale = MAD_TO_SIGMA * np.nanmedian(np.abs(pix - med), axis=1)
    bad = np.flatnonzero(~np.isfinite(scale) | (scale <= 0))
    if bad.size:
        raise ValueError(
            f"fit_band_scale_njy: band index(es) {bad.tolist()} have no pixel spread "
            "in the training cutouts; cannot normalise"
        )
    return scale.astype(np.float32)
