"""Network architectures and the classifier that wraps them with crop and normalisation.

``StarGalaxyClassifier`` is what gets saved and served: it takes raw calibrated cutouts in nJy
(any size >= ``crop_size``), centre-crops them, applies ``arcsinh(x / band_scale_njy)`` with the
per-band scale stored as a buffer, and returns one logit per object (galaxy = positive). So the
MLflow model, the checkpoint and evaluation all apply exactly the training-time preprocessing.
The architectures end in ``n_outputs`` units: 1 for the classifier, 2 for the morphology
regressor (:mod:`astroflow.train.morphology`), which shares the same preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from astroflow.train.augment import center_crop

LEAKY_SLOPE = 0.01


def _conv(c_in: int, c_out: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding="same"), nn.LeakyReLU(LEAKY_SLOPE)]


class KimBrunner2016(nn.Module):
    """The star/galaxy CNN of Kim & Brunner 2016 (MNRAS 464, 4463), Table 1.

    conv 32@5x5, conv 32@3x3, maxpool 2; 3 x conv 64@3x3, maxpool 2; 3 x conv 128@3x3,
    maxpool 2; FC 2048, dropout 0.5, FC 2048, dropout 0.5, FC ``n_outputs`` (1 in the paper).
    Leaky ReLU, 'same' padding.
    """

    def __init__(self, n_bands: int, crop_size: int, n_outputs: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv(n_bands, 32, 5), *_conv(32, 32, 3), nn.MaxPool2d(2)]
        layers += [*_conv(32, 64, 3), *_conv(64, 64, 3), *_conv(64, 64, 3), nn.MaxPool2d(2)]
        layers += [*_conv(64, 128, 3), *_conv(128, 128, 3), *_conv(128, 128, 3), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        side = crop_size // 2 // 2 // 2
        if side < 1:
            raise ValueError(f"kim_brunner: crop_size {crop_size} too small for three 2x poolings")
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * side * side, 2048),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Dropout(0.5),
            nn.Linear(2048, 2048),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Dropout(0.5),
            nn.Linear(2048, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or 1x1 strided) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet for ~44-pixel cutouts: stem 32, stages 32/64/128 (one block each,
    stride 2 between), global average pooling, ``n_outputs`` units (one logit for the
    classifier). ~0.7 M parameters, quick on a CPU.
    """

    def __init__(
        self,
        n_bands: int,
        crop_size: int,
        n_outputs: int = 1,
        widths: Sequence[int] = (32, 64, 128),
    ) -> None:
        super().__init__()
        del crop_size  # global pooling: any input size works
        self.stem = nn.Sequential(
            nn.Conv2d(n_bands, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks, c_in = [], widths[0]
        for k, width in enumerate(widths):
            blocks.append(BasicBlock(c_in, width, stride=1 if k == 0 else 2))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


NETS = {"kim_brunner": KimBrunner2016, "resnet": SmallResNet}


def build_net(name: str, n_bands: int, crop_size: int, n_outputs: int = 1) -> nn.Module:
    """The architecture called ``name`` (a ``train.models`` entry) with ``n_outputs`` units."""
    if name not in NETS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(NETS)}")
    return NETS[name](n_bands, crop_size, n_outputs)


def normalise_cutouts(
    x: torch.Tensor, crop_size: int, band_scale_njy: torch.Tensor
) -> torch.Tensor:
    """Centre crop, replace non-finite pixels (off-detector) by 0, arcsinh stretch per band."""
    x = center_crop(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), crop_size)
    return torch.asinh(x / band_scale_njy.to(x.dtype)[None, :, None, None])


class StarGalaxyClassifier(nn.Module):
    """Raw nJy cutouts ``(N, n_bands, S, S)`` -> galaxy logits ``(N,)``.

    Parameters
    ----------
    net
        Maps normalised ``(N, n_bands, crop, crop)`` to ``(N, 1)`` logits.
    band_scale_njy
        Per-band arcsinh softening scale [nJy], fitted on the training split.
    crop_size
        Side of the centre crop applied before the network.
    """

    def __init__(self, net: nn.Module, band_scale_njy: Sequence[float], crop_size: int) -> None:
        super().__init__()
        self.net = net
        self.crop_size = int(crop_size)
        scale = torch.as_tensor(list(band_scale_njy), dtype=torch.float32)
        self.register_buffer("band_scale_njy", scale)

    @property
    def n_bands(self) -> int:
        return int(self.band_scale_njy.numel())

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Centre crop, replace non-finite pixels (off-detector) by 0, arcsinh stretch."""
        return normalise_cutouts(x, self.crop_size, self.band_scale_njy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normalise(x).contiguous(memory_format=torch.channels_last)
        return self.net(z).squeeze(1)


class GalaxyProbability(nn.Module):
    """``p_galaxy`` from raw cutouts: the served form (MLflow pyfunc returns this)."""

    def __init__(self, classifier: StarGalaxyClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.classifier(x))
