"""Image losses shared by the trainable stages and the evaluation.

Every function takes (B, C, H, W) tensors of surface reflectance on a 0-1 scale
(Sentinel-2 L2A values / 10^4), prediction first, target second. Pixels without
data (NaN in the target) must be handled by the caller: `fill_missing` gives the
prediction's own (detached) value there, so they add no error and no gradient.

MS-SSIM: pytorch-msssim's `ms_ssim` refuses images under 161 px (five scales of
an 11 px window); our tiles are 32-64 px. `ms_ssim` here keeps as many scales as
the tile allows (the window must fit at the coarsest one), renormalises the
standard scale weights over them, and shrinks the window itself for tiles
smaller than it. At >= 161 px it equals pytorch-msssim's value exactly.

Spectral coherence and colour consistency (definitions in their docstrings)
compare what a per-pixel error misses: the shape of each spectrum, the
vegetation and water indices users compute from it, and each band's overall
level and contrast.

LPIPS: its trunk needs torchvision's ImageNet AlexNet/VGG/SqueezeNet weights,
which cannot be downloaded offline. `lpips_available` says whether they are in
the torch hub cache and, if not, why; callers turn LPIPS off and log that reason
instead of failing or reaching for the network.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Wang et al. 2003 scale weights, finest scale first (pytorch-msssim's default).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# The trunk weights `lpips` asks torchvision for, as files in the torch hub cache.
LPIPS_TRUNK_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
# True colour = B04, B03, B02; reflectance 0.3 maps to white, a usual display stretch.
TRUE_COLOUR_BANDS = ("B04", "B03", "B02")
TRUE_COLOUR_WHITE = 0.3
# Normalised-difference indices in spectral coherence: (a - b) / (a + b).
SPECTRAL_INDICES = {"ndvi": ("B08", "B04"), "ndwi": ("B03", "B08")}  # NDVI (Rouse 1974); NDWI (McFeeters 1996)
LOSS_TERMS = ("l1", "ms_ssim", "sam", "lpips", "spectral", "colour")


def fill_missing(pred: Tensor, target: Tensor) -> Tensor:
    """The target with its NaNs replaced by the (detached) prediction: no error, no gradient there."""
    missing = torch.isnan(target)
    if not missing.any():
        return target
    return torch.where(missing, pred.detach(), target)


def l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all pixels and bands."""
    return (pred - target).abs().mean()


def _gauss_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).view(1, 1, 1, size).repeat(channels, 1, 1, 1)


def _ssim_and_cs(x: Tensor, y: Tensor, win: Tensor, data_range: float, k: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Per-(image, band) SSIM and contrast-structure term with a separable Gaussian window ('valid' filtering)."""
    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    channels = x.shape[1]

    def blur(t: Tensor) -> Tensor:
        t = F.conv2d(t, win, groups=channels)
        return F.conv2d(t, win.transpose(2, 3), groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def ms_ssim_scales(side: int, win_size: int = 11) -> tuple[int, int]:
    """(scales, window) usable on a `side` px image: the window must fit at the coarsest scale."""
    win = min(win_size, side if side % 2 else side - 1)
    win = max(win, 1)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2**scales >= win:
        scales += 1
    # pytorch-msssim's rule at full size (side > 16 * (win - 1)) gives five scales too.
    return scales, win


def ms_ssim(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    win_sigma: float = 1.5,
    k: tuple[float, float] = (0.01, 0.03),
) -> Tensor:
    """Multi-scale SSIM averaged over images and bands, with as many scales as the tile size allows."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"ms_ssim needs two (B, C, H, W) tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    scales, win_len = ms_ssim_scales(min(pred.shape[-2:]), win_size)
    weights = pred.new_tensor(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    win = _gauss_window(win_len, win_sigma, pred.shape[1], pred)
    x, y = pred, target
    terms = []
    for scale in range(scales):
        ssim, cs = _ssim_and_cs(x, y, win, data_range, k)
        if scale < scales - 1:
            terms.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms.append(torch.relu(ssim))
    stacked = torch.stack(terms)  # (scale, B, C)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean()


def ms_ssim_loss(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    return 1.0 - ms_ssim(pred, target, data_range=data_range)


def sam(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean spectral angle (radians) between predicted and true per-pixel spectra (band axis 1).

    The cosine is clamped just inside [-1, 1] so acos keeps a finite gradient
    where prediction and target are parallel.
    """
    dot = (pred * target).sum(1)
    norms = pred.norm(dim=1) * target.norm(dim=1)
    cos = dot / (norms + eps)
    return torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6)).mean()


def normalized_difference(a: Tensor, b: Tensor, eps: float = 1e-3) -> Tensor:
    """(a - b) / (a + b) on reflectance, with `eps` keeping dark pixels (a + b near 0) finite and their gradient
    bounded."""
    return (a - b) / (a + b).abs().clamp_min(eps)


def spectral_coherence(pred: Tensor, target: Tensor, band_index: dict[str, int]) -> Tensor:
    """Spectral angle (radians) + mean |NDVI error| + mean |NDWI error|, each a mean over pixels.

    SAM scores the shape of each pixel's spectrum whatever its brightness; the
    two indices score the band ratios users read vegetation and water from
    (NDVI = (B08 - B04) / (B08 + B04), NDWI = (B03 - B08) / (B03 + B08)), which
    a small L1 error in one band can still overturn on dark pixels.
    """
    total = sam(pred, target)
    for a, b in SPECTRAL_INDICES.values():
        ia, ib = band_index[a], band_index[b]
        total = total + l1(
            normalized_difference(pred[:, ia], pred[:, ib]), normalized_difference(target[:, ia], target[:, ib])
        )
    return total


def colour_consistency(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over images and bands of |mean_p - mean_t| + |std_p - std_t|, the statistics taken per image and band.

    Blind to where things are, it scores only each band's overall level
    (brightness, colour cast) and spread (contrast): the "colour" of the
    output next to the truth's, which per-pixel losses trade away for blur.
    """
    dims = (-2, -1)
    mean_gap = (pred.mean(dims) - target.mean(dims)).abs()
    std_gap = (pred.std(dims, unbiased=False) - target.std(dims, unbiased=False)).abs()
    return (mean_gap + std_gap).mean()


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB over the whole batch."""
    mse = ((pred - target) ** 2).mean().clamp_min(1e-12)
    return 10 * torch.log10(torch.tensor(data_range**2, dtype=mse.dtype, device=mse.device) / mse)


def lpips_available(net: str = "alex") -> tuple[bool, str]:
    """Whether LPIPS can run offline with `net`; the reason is meant for the log and the metrics JSON."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return False, "LPIPS off: the lpips package is not installed"
    if net not in LPIPS_TRUNK_FILES:
        return False, f"LPIPS off: unknown lpips net '{net}' (use one of {', '.join(LPIPS_TRUNK_FILES)})"
    trunk = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_TRUNK_FILES[net]
    if not trunk.is_file():
        return False, (
            f"LPIPS off: torchvision's ImageNet weights for its '{net}' trunk are not at {trunk} "
            "and cannot be downloaded offline; copy that file there to turn LPIPS on"
        )
    return True, f"LPIPS on: '{net}' trunk from {trunk}"


def true_colour(x: Tensor, band_index: dict[str, int]) -> Tensor:
    """(B, 3, H, W) true colour in [-1, 1], the range LPIPS expects."""
    rgb = x[:, [band_index[b] for b in TRUE_COLOUR_BANDS]]
    return (rgb / TRUE_COLOUR_WHITE).clamp(0, 1) * 2 - 1


class TrueColourLPIPS(nn.Module):
    """LPIPS on the true-colour composite of 12-band (or any named-band) reflectance; a frozen critic."""

    def __init__(self, bands: tuple[str, ...] | list[str], net: str = "alex"):
        super().__init__()
        import lpips

        ok, reason = lpips_available(net)
        if not ok:
            raise RuntimeError(reason)
        self.band_index = {b: i for i, b in enumerate(bands)}
        missing = [b for b in TRUE_COLOUR_BANDS if b not in self.band_index]
        if missing:
            raise ValueError(f"true colour needs bands {', '.join(missing)}")
        with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=` API
            warnings.simplefilter("ignore", UserWarning)
            self.metric = lpips.LPIPS(net=net, verbose=False).eval()
        for p in self.metric.parameters():
            p.requires_grad_(False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.metric(true_colour(pred, self.band_index), true_colour(target, self.band_index)).mean()


class WeightedLoss(nn.Module):
    """The weighted sum of the loss terms whose weight is > 0; returns the total and each term (for logging).

    LPIPS is dropped (weight treated as 0) when `lpips_available` says no; the
    reason is kept in `self.lpips_status` for the caller to log and record.
    """

    def __init__(self, weights: dict[str, float], bands: tuple[str, ...] | list[str], lpips_net: str = "alex"):
        super().__init__()
        unknown = sorted(set(weights) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; use {', '.join(LOSS_TERMS)}")
        self.band_index = {b: i for i, b in enumerate(bands)}
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        self.lpips: TrueColourLPIPS | None = None
        self.lpips_status = "LPIPS off: weight 0"
        if "lpips" in self.weights:
            ok, self.lpips_status = lpips_available(lpips_net)
            if ok:
                self.lpips = TrueColourLPIPS(bands, lpips_net)
            else:
                del self.weights["lpips"]

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        target = fill_missing(pred, target)
        terms: dict[str, Tensor] = {}
        if "l1" in self.weights:
            terms["l1"] = l1(pred, target)
        if "ms_ssim" in self.weights:
            terms["ms_ssim"] = ms_ssim_loss(pred, target)
        if "sam" in self.weights:
            terms["sam"] = sam(pred, target)
        if "spectral" in self.weights:
            terms["spectral"] = spectral_coherence(pred, target, self.band_index)
        if "colour" in self.weights:
            terms["colour"] = colour_consistency(pred, target)
        if self.lpips is not None:
            terms["lpips"] = self.lpips(pred, target)
        if not terms:
            raise ValueError("every loss weight is 0; give at least one term a positive weight")
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms

    def describe(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "lpips": self.lpips_status}


__all__ = [
    "LOSS_TERMS",
    "MS_SSIM_WEIGHTS",
    "SPECTRAL_INDICES",
    "TRUE_COLOUR_BANDS",
    "TrueColourLPIPS",
    "colour_consistency",
    "WeightedLoss",
    "fill_missing",
    "l1",
    "lpips_available",
    "ms_ssim",
    "ms_ssim_loss",
    "ms_ssim_scales",
    "normalized_difference",
    "psnr",
    "sam",
    "spectral_coherence",
    "true_colour",
]
