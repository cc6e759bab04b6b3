"""SAR-edge agreement: do the edges of an optical image sit where the radar sees edges?

Stage 3 exists to pull stage 2's output back to what the radar shows, so the
pipeline needs a number for that, usable both as a metric (`gac evaluate`) and
as a training loss (stage 3). Everything here is plain torch on (B, C, H, W)
tensors, differentiable with respect to the optical input, batched, and free of
learned weights.

Definition (the docs and metrics.json refer to this):

1. Speckle filter. S1 backscatter in dB (channels VV, VH) goes to linear power
   I = 10^(dB/10) and through a Lee filter (Lee 1980) in a `window` x `window`
   box (reflect padding): with local mean m and variance v of I, and speckle
   coefficient of variation Cu^2 = 1/`looks`,
   var_x = max(0, (v - m^2 Cu^2) / (1 + Cu^2)),  k = var_x / v,
   I' = m + k (I - m); then back to dB. Flat areas are smoothed, edges kept.
2. Edge maps. Sobel gradients gx, gy per channel (3x3, [1 2 1] x [-1 0 1],
   unnormalised since only the correlation matters; reflect padding), and a
   multi-channel magnitude E = sqrt(mean_c (gx_c^2 + gy_c^2)). For S1 the
   channels are the filtered VV and VH in dB; for the optical image they are
   `optical_bands` (default the four native 10 m bands B02 B03 B04 B08, the
   resolution of S1; the 20/60 m bands are resampled and would add grid edges)
   as reflectance (store units x 10^4 divided by 10^4). Magnitudes ignore the
   sign of a contrast: water is dark in VV and bright in blue, the edge is the same.
3. Tolerance. Both edge maps are smoothed by a Gaussian of `sigma` px, so
   edges one or two pixels apart still agree (S1 and S2 are co-registered to
   about a pixel, and the speckle filter moves edges slightly).
4. Score. The Pearson correlation between the two smoothed edge maps over the
   valid pixels: those at least `margin` px (window//2 + 1 + ceil(3 sigma))
   from the tile border and from any non-finite input pixel.

The score lies in [-1, 1]: 1 when the optical edge map is an affine copy of
the SAR edge map (an image against its own edges), about 0 when unrelated, 0
for a flat image (no edges at all, e.g. stage 1 on random weights). It does
not depend on the brightness or contrast of the whole optical image (a
per-image affine change of reflectance leaves it unchanged). The ground truth's
own score is the reference a prediction is read against: optical and radar
edges differ physically (shadows, colour boundaries SAR cannot see), so even
the truth scores well below 1. As a loss use `sar_edge_loss` (1 - mean score).

`sar_texture_agreement` applies the same score to local texture (local
standard deviation) instead of edges; stage 3 trains on both
(`sar_consistency_loss`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

S2_TEN_M_BANDS = (1, 2, 3, 7)  # B02 B03 B04 B08 in the 12-band S2L2A order of gac.data.store.S2_BANDS
DEFAULT_WINDOW = 7
DEFAULT_LOOKS = 4.4  # equivalent number of looks of Sentinel-1 IW GRD high resolution
DEFAULT_SIGMA = 1.0
_EPS = 1e-12


def margin(window: int = DEFAULT_WINDOW, sigma: float = DEFAULT_SIGMA) -> int:
    """Pixels dropped at the tile border and around nodata: the reach of filter + Sobel + tolerance blur."""
    return window // 2 + 1 + math.ceil(3 * sigma)


def _box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    pad = window // 2
    return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), window, stride=1)


def _fill_invalid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace non-finite values by the image's finite mean (per image and channel) so filters stay finite."""
    finite = torch.isfinite(x)
    safe = torch.where(finite, x, torch.zeros_like(x))
    count = finite.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
    fill = (safe.sum(dim=(-2, -1), keepdim=True) / count).detach()
    return torch.where(finite, x, fill.expand_as(x)), finite.all(dim=1, keepdim=True)


def lee_filter(s1_db: torch.Tensor, window: int = DEFAULT_WINDOW, looks: float = DEFAULT_LOOKS) -> torch.Tensor:
    """Lee speckle filter of S1 backscatter in dB (B, C, H, W) -> dB, computed in linear power."""
    if window < 3 or window % 2 == 0:
        raise ValueError(f"Lee window must be odd and >= 3, got {window}")
    power = torch.pow(10.0, s1_db / 10.0)
    mean = _box_mean(power, window)
    var = (_box_mean(power * power, window) - mean * mean).clamp(min=0)
    cu2 = 1.0 / looks
    var_x = ((var - mean * mean * cu2) / (1.0 + cu2)).clamp(min=0)
    k = var_x / (var + _EPS)
    filtered = mean + k * (power - mean)
    return 10.0 * torch.log10(filtered.clamp(min=1e-10))


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude pooled over channels: (B, C, H, W) -> (B, 1, H, W)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3)
    b, c, h, w = x.shape
    padded = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="reflect")
    grads = F.conv2d(padded, kernels).reshape(b, c, 2, h, w)
    return torch.sqrt((grads * grads).sum(dim=2).mean(dim=1, keepdim=True) + _EPS)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def sar_edge_map(
    s1_db: torch.Tensor, window: int = DEFAULT_WINDOW, looks: float = DEFAULT_LOOKS, sigma: float = DEFAULT_SIGMA
) -> torch.Tensor:
    """Smoothed edge map of speckle-filtered S1 (B, 2, H, W) in dB -> (B, 1, H, W)."""
    filled, _ = _fill_invalid(s1_db)
    return gaussian_blur(gradient_magnitude(lee_filter(filled, window, looks)), sigma)


def optical_edge_map(
    optical: torch.Tensor, bands: Sequence[int] | None = S2_TEN_M_BANDS, sigma: float = DEFAULT_SIGMA
) -> torch.Tensor:
    """Smoothed edge map of an optical image in reflectance x 10^4 (B, C, H, W) -> (B, 1, H, W); `bands=None` uses
    all."""
    x = optical if bands is None else optical[:, list(bands)]
    filled, _ = _fill_invalid(x / 1e4)
    return gaussian_blur(gradient_magnitude(filled), sigma)


def valid_mask(*images: torch.Tensor, reach: int) -> torch.Tensor:
    """(B, 1, H, W) float weights: 1 where every input is finite within `reach` px and the pixel is `reach` px inside
    the tile."""
    ok = torch.ones_like(images[0][:, :1], dtype=torch.bool)
    for image in images:
        ok = ok & torch.isfinite(image).all(dim=1, keepdim=True)
    bad = (~ok).to(images[0].dtype)
    if reach > 0:
        bad = F.max_pool2d(bad, 2 * reach + 1, stride=1, padding=reach)
    weights = 1.0 - bad
    if reach > 0:
        weights[..., :reach, :] = 0
        weights[..., -reach:, :] = 0
        weights[..., :, :reach] = 0
        weights[..., :, -reach:] = 0
    return weights


def edge_agreement(edges_a: torch.Tensor, edges_b: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted Pearson correlation of two (B, 1, H, W) edge maps -> (B,); 0 where either map is flat."""
    if weights is None:
        weights = torch.ones_like(edges_a)
    total = weights.sum(dim=(1, 2, 3)).clamp(min=_EPS)

    def centred(e: torch.Tensor) -> torch.Tensor:
        mean = (weights * e).sum(dim=(1, 2, 3)) / total
        return e - mean.view(-1, 1, 1, 1)

    a, b = centred(edges_a), centred(edges_b)
    cov = (weights * a * b).sum(dim=(1, 2, 3)) / total
    var_a = (weights * a * a).sum(dim=(1, 2, 3)) / total
    var_b = (weights * b * b).sum(dim=(1, 2, 3)) / total
    return cov / (torch.sqrt(var_a + _EPS) * torch.sqrt(var_b + _EPS))


def _checked(
    optical: torch.Tensor, s1_db: torch.Tensor, window: int, sigma: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    if optical.shape[0] != s1_db.shape[0] or optical.shape[-2:] != s1_db.shape[-2:]:
        raise ValueError(
            f"optical {tuple(optical.shape)} and S1 {tuple(s1_db.shape)} must share batch and spatial size"
        )
    # Half precision cannot hold 10^(dB/10) and squared gradients accurately; compute in at least float32.
    optical = optical.float() if optical.dtype in (torch.float16, torch.bfloat16) else optical
    s1_db = s1_db.to(optical.dtype)
    reach = margin(window, sigma)
    if min(optical.shape[-2:]) <= 2 * reach:
        raise ValueError(
            f"tiles of {tuple(optical.shape[-2:])} px leave no pixel {reach} px from the border; use larger tiles"
        )
    return optical, s1_db, reach


def sar_edge_agreement(
    optical: torch.Tensor,
    s1_db: torch.Tensor,
    window: int = DEFAULT_WINDOW,
    looks: float = DEFAULT_LOOKS,
    sigma: float = DEFAULT_SIGMA,
    optical_bands: Sequence[int] | None = S2_TEN_M_BANDS,
) -> torch.Tensor:
    """The SAR-edge agreement score (module docstring) per image: optical (B, 12, H, W) x 10^4, S1 (B, 2, H, W) dB ->
    (B,)."""
    optical, s1_db, reach = _checked(optical, s1_db, window, sigma)
    selected = optical if optical_bands is None else optical[:, list(optical_bands)]
    weights = valid_mask(selected, s1_db, reach=reach)
    return edge_agreement(
        optical_edge_map(optical, optical_bands, sigma), sar_edge_map(s1_db, window, looks, sigma), weights
    )


def local_std(x: torch.Tensor, window: int) -> torch.Tensor:
    """Local standard deviation in a `window` box, pooled over channels: (B, C, H, W) -> (B, 1, H, W)."""
    mean = _box_mean(x, window)
    var = (_box_mean(x * x, window) - mean * mean).clamp(min=0)
    return torch.sqrt(var.mean(dim=1, keepdim=True) + _EPS)


def sar_texture_agreement(
    optical: torch.Tensor,
    s1_db: torch.Tensor,
    window: int = DEFAULT_WINDOW,
    looks: float = DEFAULT_LOOKS,
    sigma: float = DEFAULT_SIGMA,
    optical_bands: Sequence[int] | None = S2_TEN_M_BANDS,
) -> torch.Tensor:
    """Texture agreement per image, the counterpart of edge agreement for local statistics -> (B,).

    Texture here is the local standard deviation in a `window` box: of the
    Lee-filtered S1 in dB (so speckle, which the filter removes, does not
    count as texture) and of the optical `optical_bands` in reflectance. The
    score is the Pearson correlation of the two texture maps over the same
    valid pixels as the edge score: rough where the radar is rough (forest,
    town), smooth where it is smooth (water, bare fields). Edges alone would
    reward a flat image with the right outlines.
    """
    optical, s1_db, reach = _checked(optical, s1_db, window, sigma)
    selected = optical if optical_bands is None else optical[:, list(optical_bands)]
    weights = valid_mask(selected, s1_db, reach=reach)
    sar_filled, _ = _fill_invalid(s1_db)
    optical_filled, _ = _fill_invalid(selected / 1e4)
    return edge_agreement(
        local_std(optical_filled, window), local_std(lee_filter(sar_filled, window, looks), window), weights
    )


def agreement_map(
    optical: torch.Tensor,
    s1_db: torch.Tensor,
    window: int = DEFAULT_WINDOW,
    looks: float = DEFAULT_LOOKS,
    sigma: float = DEFAULT_SIGMA,
    optical_bands: Sequence[int] | None = S2_TEN_M_BANDS,
) -> torch.Tensor:
    """Where an optical image already agrees with the radar, per pixel: (B, 1, H, W) in [0, 1], no gradient.

    The local version of the agreement score: the Pearson correlation of the
    two smoothed edge maps in a box of 2 * margin + 1 px around each pixel,
    clipped at 0. Near 1 where the optical edges in that neighbourhood sit
    where the radar's do (whatever their relative strength), 0 where they are
    unrelated, or where the radar sees an edge the optical image lacks (a
    locally flat image correlates with nothing). 0 on pixels that are not
    valid (border margin, nodata).
    """
    with torch.no_grad():
        optical, s1_db, reach = _checked(optical, s1_db, window, sigma)
        selected = optical if optical_bands is None else optical[:, list(optical_bands)]
        weights = valid_mask(selected, s1_db, reach=reach)
        a = optical_edge_map(optical, optical_bands, sigma)
        b = sar_edge_map(s1_db, window, looks, sigma)
        box = 2 * reach + 1
        mean_a, mean_b = _box_mean(a, box), _box_mean(b, box)
        cov = _box_mean(a * b, box) - mean_a * mean_b
        var_a = (_box_mean(a * a, box) - mean_a**2).clamp(min=0)
        var_b = (_box_mean(b * b, box) - mean_b**2).clamp(min=0)
        local = cov / (torch.sqrt(var_a + _EPS) * torch.sqrt(var_b + _EPS))
        return local.clamp(0.0, 1.0) * weights


def identity_loss(optical: torch.Tensor, reference: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Stage 3's identity term: L1 (reflectance 0-1, mean over bands) to `reference`, each pixel weighted by `weights`.

    `weights` is `agreement_map(reference, s1_db)`: where the input optical
    image (opt_v2) already agrees with the radar, the output should keep it;
    where it does not, the term leaves the output free to move. Averaged over
    all pixels, so it is 0 where nothing agrees and an L1 where everything
    does. Both images in reflectance x 10^4; NaN in `reference` adds nothing.
    """
    from gac.losses import fill_missing

    gap = (optical - fill_missing(optical, reference)).abs() / 1e4
    return (weights * gap.mean(dim=1, keepdim=True)).mean()


def sar_consistency_loss(
    optical: torch.Tensor, s1_db: torch.Tensor, **kwargs
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 3's SAR term: mean of (1 - edge agreement) and (1 - texture agreement) over the batch, and both scores.

    0 when the optical image's edges and local texture both follow the
    radar's exactly; about 1 when unrelated; 1 for a flat image.
    """
    edges = sar_edge_agreement(optical, s1_db, **kwargs).mean()
    texture = sar_texture_agreement(optical, s1_db, **kwargs).mean()
    return 1.0 - 0.5 * (edges + texture), {"sar_edge": edges.detach(), "sar_texture": texture.detach()}


def sar_edge_loss(optical: torch.Tensor, s1_db: torch.Tensor, **kwargs) -> torch.Tensor:
    """1 - mean SAR-edge agreement over the batch: 0 at perfect agreement, a scalar to minimise."""
    return 1.0 - sar_edge_agreement(optical, s1_db, **kwargs).mean()
