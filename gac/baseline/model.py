"""A compact pix2pix-style U-Net (S1 dB -> S2L2A reflectance x 10^4) and its optional PatchGAN critic.

The network is self-contained: S1 standardisation and the per-band output
statistics of the training split are buffers, so `forward` takes what the
stores hold (S1 in dB, NaN allowed) and returns what they hold (reflectance x
10^4). Its last layer starts at zero, so before training it predicts the
training split's per-band mean image: everything it gains over that is learnt.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from gac.nodata import standardised_filled
from gac.startup import first_model_call

S1_CHANNELS = 2
S2_CHANNELS = 12


def _down(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.GroupNorm(min(8, cout), cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    ]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class BaselineUNet(nn.Module):
    """pix2pix's generator shape (strided-conv encoder, transposed-conv decoder, skips), sized by `channels` and
    `depth`.

    forward(s1_db: (B, 2, H, W) float, dB, NaN = no data) -> (B, 12, H, W) reflectance x 10^4;
    H and W must divide by 2^depth. Pixels where S1 is NaN come back NaN.
    """

    def __init__(
        self,
        channels: int = 16,
        depth: int = 3,
        dropout: float = 0.0,
        s1_mean: Sequence[float] = (0.0, 0.0),
        s1_std: Sequence[float] = (1.0, 1.0),
        s2_mean: Sequence[float] = (0.0,) * S2_CHANNELS,
        s2_std: Sequence[float] = (1.0,) * S2_CHANNELS,
    ):
        super().__init__()
        self.depth = depth
        self.register_buffer("s1_mean", torch.tensor(s1_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("s1_std", torch.tensor(s1_std, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("s2_mean", torch.tensor(s2_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("s2_std", torch.tensor(s2_std, dtype=torch.float32).view(1, -1, 1, 1))
        widths = [channels * 2 ** min(level, 3) for level in range(depth + 1)]  # capped at 8x, as pix2pix caps at 512
        self.stem = nn.Sequential(nn.Conv2d(S1_CHANNELS, widths[0], 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.downs = nn.ModuleList(_down(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(
            _up(widths[i + 1] * (1 if i == depth - 1 else 2), widths[i], dropout if i >= depth - 2 else 0.0)
            for i in reversed(range(depth))
        )
        self.out = nn.Conv2d(widths[0] * 2, S2_CHANNELS, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def standardised(self, s1_db: torch.Tensor) -> torch.Tensor:
        """The network's raw output: per-band standardised reflectance (what the L1 loss compares)."""
        first_model_call("baseline U-Net")
        side = 2**self.depth
        if s1_db.shape[-1] % side or s1_db.shape[-2] % side:
            raise ValueError(f"tile side {tuple(s1_db.shape[-2:])} must divide by 2^depth = {side}")
        x = standardised_filled(s1_db, self.s1_mean, self.s1_std)  # nodata reads as the band mean (gac.nodata)
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = torch.cat([up(y), skips.pop()], dim=1)
        return self.out(y)

    def to_reflectance(self, standardised: torch.Tensor) -> torch.Tensor:
        return standardised * self.s2_std + self.s2_mean

    def forward(self, s1_db: torch.Tensor) -> torch.Tensor:
        out = self.to_reflectance(self.standardised(s1_db))
        missing = torch.isnan(s1_db).any(dim=1, keepdim=True)
        return out.masked_fill(missing, float("nan")) if bool(missing.any()) else out


class PatchDiscriminator(nn.Module):
    """pix2pix's conditional PatchGAN: (S1, S2) pairs -> a map of real/fake logits, one per overlapping patch."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [_down(S1_CHANNELS + S2_CHANNELS, channels, norm=False)]
        width = channels
        for i in range(1, layers):
            blocks.append(_down(width, min(width * 2, channels * 8)))
            width = min(width * 2, channels * 8)
        blocks.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, s1_standardised: torch.Tensor, s2_standardised: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([s1_standardised, s2_standardised], dim=1))
