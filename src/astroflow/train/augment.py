"""Crops and the eight dihedral transforms of square cutouts, batched on the tensor's device.

Galaxy/star identity does not change under 90-degree rotations and flips of the sky, nor under
sub-cutout shifts of a few pixels, so training sees random members of that group (more data for
free) and prediction may average over all eight transforms (test-time augmentation).
"""

from __future__ import annotations

import functools

import torch

N_DIHEDRAL = 8


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size x size`` window of ``(N, C, S, S)`` images (no-op when S == size)."""
    s = x.shape[-1]
    if size > s or x.shape[-2] != s:
        raise ValueError(f"center_crop: cannot crop {size} from images of shape {tuple(x.shape)}")
    off = (s - size) // 2
    return x[..., off : off + size, off : off + size]


def random_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """An independent random ``size x size`` window per image, via one gather."""
    n, c, s, _ = x.shape
    if size == s:
        return x
    if size > s:
        raise ValueError(f"random_crop: cannot crop {size} from images of shape {tuple(x.shape)}")
    oy = torch.randint(0, s - size + 1, (n,), device=x.device)
    ox = torch.randint(0, s - size + 1, (n,), device=x.device)
    ar = torch.arange(size, device=x.device)
    rows = (oy[:, None] + ar[None, :])[:, None, :, None]  # (n, 1, size, 1)
    cols = (ox[:, None] + ar[None, :])[:, None, None, :]  # (n, 1, 1, size)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return x[batch, chan, rows, cols]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Dihedral transform ``k`` (0..7): ``k % 4`` quarter turns, then a flip if ``k >= 4``."""
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


@functools.lru_cache(maxsize=8)
def _dihedral_sources(size: int, device: torch.device) -> torch.Tensor:
    """(8, size * size): the flat index each pixel of transform ``k`` of a ``size x size``
    image comes from (the transforms applied to the index grid itself). Made once per size
    and device, not on every training step; read only."""
    grid = torch.arange(size * size, device=device).reshape(size, size)
    return torch.stack([dihedral(grid, k).reshape(-1) for k in range(N_DIHEDRAL)])


def random_dihedral(x: torch.Tensor) -> torch.Tensor:
    """An independent random dihedral transform per image, as one gather.

    Selecting the images of each transform with a mask instead (``x[ks == k]``) made the host
    wait for the GPU eight times a step: ~23 % of a GPU training step's host time. The draws
    and the pixels are the same as that selection gave.
    """
    return random_dihedral_k(x)[0]


def random_dihedral_k(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`random_dihedral` and the transform ``k`` drawn for each image (same draws), for
    targets that turn with the image (:func:`dihedral_spin2`)."""
    n, c, s, _ = x.shape
    ks = torch.randint(0, N_DIHEDRAL, (n,), device=x.device)
    sources = _dihedral_sources(s, x.device)[ks][:, None, :].expand(n, c, s * s)
    return torch.gather(x.reshape(n, c, s * s), 2, sources).reshape(n, c, s, s), ks


def dihedral_spin2(e: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Ellipticity components ``(N, 2)`` ``(e1, e2)`` of images after :func:`dihedral` ``k``.

    ``e1 = |g| cos 2 beta`` and ``e2 = |g| sin 2 beta`` with ``beta`` the major axis' angle from
    the array's x axis (columns) towards its y axis (rows). A spin-2 quantity: a quarter turn
    (odd ``k % 4``) negates both, a half turn leaves them, and the flip of the x axis that
    follows for ``k >= 4`` negates ``e2``. ``|g|`` and the Sersic index do not change; a
    regressor of ``(e1, e2)`` must turn its targets with its augmented images by this (issue
    25, docs/train.md: the morphology task), and undo it before averaging test-time
    augmentations.
    """
    k = torch.as_tensor(k, device=e.device).expand(e.shape[0])
    quarter = torch.where(k % 2 == 1, -1.0, 1.0).to(e.dtype)
    flip = torch.where(k >= 4, -1.0, 1.0).to(e.dtype)
    return torch.stack([e[:, 0] * quarter, e[:, 1] * quarter * flip], dim=1)
