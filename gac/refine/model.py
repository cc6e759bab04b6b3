"""The stage-2 refiner: Prithvi features -> ConvNeXt-style dense head -> a residual on all 12 bands.

opt_v2 = opt_v1 + delta. Predicting a residual keeps opt_v1 as the starting
point (a fresh head adds almost nothing), so training only has to learn the
correction; the head's output layer starts near zero for that reason, but
not at exactly zero, which would leave every other layer without gradient.

The head upsamples the 1/16-resolution token maps in four x2 steps. Each of
the first `feature_levels` steps adds one block's features (deepest first, so
coarse semantics steer and earlier blocks add detail), and the last step adds
the full-resolution input itself, so edges need not survive the 16 px patches.
Every step is FiLM-modulated by the month/location encoding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gac.data.store import S1_BANDS, S2_BANDS
from gac.nodata import filled_with_mean, standardised_filled
from gac.refine import backbone as backbone_module
from gac.refine.conditioning import N_FEATURES, encode_metadata
from gac.startup import first_model_call

PATCH = 16
UP_STEPS = 4  # 1/16 -> 1/1
MLP_BAND_PIXELS = 8192  # pixels (batch x rows x width) per checkpointed band of a head MLP in the memory mode


def normalisation(channels: list[str]) -> tuple[list[float], list[float]]:
    """Per-channel mean/std: Prithvi-EO-2.0's for its six bands, TerraMind's S2L2A/S1RTC pretraining stats for the
    rest."""
    from gac.refine.backbone import S2_TO_HLS
    from gac.terramind import pretraining_stats
    from gac.upstream import prithvi as upstream_prithvi

    vit = upstream_prithvi().vit
    prithvi = dict(zip(S2_TO_HLS, zip(vit.PRITHVI_V2_MEAN, vit.PRITHVI_V2_STD)))
    s2 = dict(zip(S2_BANDS, zip(*pretraining_stats("S2L2A"))))
    s1 = dict(zip(S1_BANDS, zip(*pretraining_stats("S1RTC"))))
    stats = [prithvi.get(c) or s2.get(c) or s1[c] for c in channels]
    return [float(m) for m, _ in stats], [float(s) for _, s in stats]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, inverted-bottleneck MLP, layer scale, residual (Liu et al. 2022).

    `checkpoint_mlp` (the refiner's memory mode): in training, the MLP runs on
    bands of rows under activation checkpointing. At full resolution its 4x
    wide hidden layer is the largest activation of a stage-2 step (224 px, 64
    channels: 2 x 49 MB kept for backward, and as much again in gradients);
    in bands of MLP_BAND_PIXELS pixels only one band's worth exists at a time.
    """

    def __init__(self, channels: int, layer_scale: float = 0.1):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pw1 = nn.Linear(channels, 4 * channels)
        self.pw2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale))
        self.checkpoint_mlp = False

    def _mlp(self, y: Tensor) -> Tensor:
        return self.pw2(F.gelu(self.pw1(y)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        if self.checkpoint_mlp and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            rows = max(1, MLP_BAND_PIXELS // (y.shape[0] * y.shape[2]))
            y = torch.cat([checkpoint(self._mlp, band, use_reentrant=False) for band in y.split(rows, dim=1)], dim=1)
        else:
            y = self._mlp(y)
        return x + (y * self.gamma).permute(0, 3, 1, 2)


class FiLM(nn.Module):
    """Feature-wise scale and shift from the metadata encoding; starts as the identity."""

    def __init__(self, features: int, channels: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.net(cond).chunk(2, dim=1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class DenseHead(nn.Module):
    """Multi-level ViT token maps (+ the full-resolution input) -> a 12-band residual at full resolution."""

    def __init__(self, embed_dim: int, levels: int, in_channels: int, channels: int, out_channels: int, metadata: bool):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(embed_dim, channels, 1) for _ in range(levels))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.GELU())
        self.up = nn.ModuleList(nn.ConvTranspose2d(channels, channels, 2, stride=2) for _ in range(UP_STEPS))
        self.blocks = nn.ModuleList(ConvNeXtBlock(channels) for _ in range(UP_STEPS + 1))
        self.film = nn.ModuleList(FiLM(N_FEATURES, channels) for _ in range(UP_STEPS + 1)) if metadata else None
        self.out = nn.Conv2d(channels, out_channels, 1)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)

    def _step(self, index: int, x: Tensor, cond: Tensor | None) -> Tensor:
        if self.film is not None and cond is not None:
            x = self.film[index](x, cond)
        return self.blocks[index](x)

    def forward(self, features: list[Tensor], image: Tensor, cond: Tensor | None) -> Tensor:
        """`features`: (B, D, h, w) maps, deepest first; `image`: the normalised input (B, C, H, W)."""
        x = self._step(0, self.proj[0](features[0]), cond)
        for step in range(UP_STEPS):
            x = F.gelu(self.up[step](x))
            level = step + 1
            if level < len(features):
                x = x + F.interpolate(
                    self.proj[level](features[level]), size=x.shape[-2:], mode="bilinear", align_corners=False
                )
            if step == UP_STEPS - 1:
                x = x + self.stem(image)
            x = self._step(step + 1, x, cond)
        return self.out(x)


def feature_indices(depth: int, levels: int) -> list[int]:
    """`levels` evenly spaced block indices ending at the last block, deepest first (12 blocks, 4 levels: 11, 8, 5,
    2)."""
    stride = max(1, depth // levels)
    return [depth - 1 - k * stride for k in range(levels)]


class Refiner(nn.Module):
    """opt_v1 (+ S1) + metadata -> opt_v2, all in reflectance x 10^4; NaN in, NaN out.

    The memory mode (`set_memory_mode`, on with activation checkpointing): the
    head's MLPs run in checkpointed bands (ConvNeXtBlock), a training forward
    first hands what the last step freed back to the OS, and backward does the
    same as it reaches the refiner, when the forward's freed temporaries are
    gone and the step's peak is still ahead.
    """

    def __init__(self, backbone: nn.Module, config: dict[str, Any], embed_dim: int, depth: int):
        super().__init__()
        self.backbone = backbone
        self.bands = list(config["bands"])
        self.use_sar = bool(config["use_sar"])
        self.channels = self.bands + (list(S1_BANDS) if self.use_sar else [])
        self.band_index = [S2_BANDS.index(b) for b in self.bands]
        self.features = feature_indices(depth, config["feature_levels"])
        self.metadata = bool(config["metadata"])
        mean, std = normalisation(self.channels)
        out_mean, out_std = normalisation(list(S2_BANDS))
        self.register_buffer("in_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("out_mean", torch.tensor(out_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("out_std", torch.tensor(out_std).view(1, -1, 1, 1), persistent=False)
        self.head = DenseHead(
            embed_dim, len(self.features), len(self.channels), config["head_channels"], len(S2_BANDS), self.metadata
        )
        self.memory_mode = False

    def set_memory_mode(self, on: bool) -> None:
        self.memory_mode = on
        for block in self.head.blocks:
            block.checkpoint_mlp = on

    def forward(
        self,
        opt_v1: Tensor,
        s1: Tensor | None = None,
        month: Tensor | None = None,
        lat: Tensor | None = None,
        lon: Tensor | None = None,
    ) -> Tensor:
        first_model_call("stage-2 refiner")
        size = opt_v1.shape[-1]
        if opt_v1.shape[-2] != size or size % PATCH:
            raise ValueError(
                f"tiles must be square with a side that is a multiple of {PATCH}, got {tuple(opt_v1.shape[-2:])}"
            )
        trim = self.memory_mode and self.training and torch.is_grad_enabled()
        if trim:
            backbone_module.return_freed_memory()
        image = opt_v1[:, self.band_index]
        if self.use_sar:
            if s1 is None:
                raise ValueError("this refiner was trained with S1 channels (use_sar); pass s1")
            image = torch.cat([image, s1], dim=1)
        image = standardised_filled(image, self.in_mean, self.in_std)  # nodata reads as the band mean (gac.nodata)
        tokens = self.backbone(image)
        grid = size // PATCH
        maps = [
            tokens[i][:, -grid * grid :].transpose(1, 2).reshape(image.shape[0], -1, grid, grid) for i in self.features
        ]
        cond = encode_metadata(month, lat, lon) if self.metadata and month is not None else None
        if self.metadata and cond is None:
            raise ValueError("this refiner is conditioned on metadata; pass month, lat, lon")
        delta = self.head(maps, image, cond.to(image.dtype) if cond is not None else None)
        out = filled_with_mean(opt_v1, self.out_mean) + delta * self.out_std  # finite everywhere, as losses need
        if trim and out.requires_grad:
            out.register_hook(_trim_before_backward)
        return out


def _trim_before_backward(grad: Tensor) -> None:
    """A gradient hook on the refiner's output: runs as backward reaches the refiner, leaving the gradient as is."""
    backbone_module.return_freed_memory()
