"""The one nodata rule of every model input, in training and in inference alike.

A pixel without data is NaN from the moment it is read (gac.data.readers: non-finite S1, S1's nodata value, S2
pixels 0 in every band) and stays NaN on its way to a model: in the tile stores, in the training items
(gac.data.dataset passes NaN and a `valid` mask) and in the batches the predictors get (gac.runner.Batch, from a
store or from a scene's crops in `gac translate`). Each model standardises its inputs with its own per-band mean and
std and reads NaN there as that mean, i.e. 0 in standardised units (`standardised_filled`). Training and inference
call the same model forward, so a nodata pixel feeds the same numbers into attention and convolutions in both;
losses count only `valid` pixels, and every output is NaN wherever the radar has no data
(gac.runner.no_radar_no_prediction).

Filling with the mean rather than 0 dB / 0 reflectance: 0 is an extreme value in both units (0 dB is bright urban
backscatter, 0 reflectance is darker than water), which a transformer's attention spreads over the whole tile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def standardised_filled(x: "torch.Tensor", mean: "torch.Tensor", std: "torch.Tensor") -> "torch.Tensor":
    """(x - mean) / std, with every non-finite result (a NaN pixel) at 0: the band mean."""
    import torch

    z = (x - mean) / std
    return torch.where(torch.isfinite(z), z, torch.zeros_like(z))


def filled_with_mean(x: "torch.Tensor", mean: "torch.Tensor") -> "torch.Tensor":
    """`x` in physical units with its non-finite values at the band `mean` (what `standardised_filled` reads them
    as)."""
    import torch

    return torch.where(torch.isfinite(x), x, mean.to(x.dtype).expand_as(x))
