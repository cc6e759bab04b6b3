"""Image-quality metrics for one predicted tile against its ground truth, and their aggregation.

Conventions (recorded in report.md by `gac evaluate`, see `CONVENTIONS`):

- Scaling: stores hold reflectance x 10^4; every metric except SAR-edge reads
  reflectance = value / 10^4 clipped to [0, 1], data range 1.
- Nodata: pixels where the prediction or the ground truth has a NaN in any band
  are left out of PSNR, RMSE and SAM; for SSIM and MS-SSIM (windowed) both
  images take the ground truth's band mean there, so they add no difference.
- PSNR is infinite for identical images (MSE 0); JSON has no infinity, so the
  writers put null there and say why. The split's PSNR is the mean of the
  tiles' PSNR. Per-band RMSE over the split pools squared errors of all pixels.
- SSIM: Gaussian window 11 px, sigma 1.5, K = (0.01, 0.03), mean over bands
  (pytorch-msssim). MS-SSIM: gac.losses.ms_ssim, as many of Wang et al.'s five
  scales as the tile allows (3 at 64 px), weights renormalised over them.
- SAM: mean per-pixel angle between spectra, in degrees (float64, arccos of the
  cosine clipped to [-1, 1]; pixels where either spectrum is all zero are skipped).
- LPIPS: gac.losses.TrueColourLPIPS (AlexNet trunk, B04 B03 B02, reflectance 0.3
  = white, mapped to [-1, 1]) where its trunk weights are cached; else null and
  the reason.
- SAR-edge agreement: gac.sar_edges (the definition is in that module).
- GAC score: `gac_score` below, per tile; the split's value is the mean over tiles.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from gac.data.store import S2_BANDS

REFLECTANCE_SCALE = 1e4
SCALAR_METRICS = ("psnr", "ssim", "ms_ssim", "sam_deg", "sar_edge", "lpips", "gac_score")
GAC_SCORE_PSNR_DB = 40.0  # PSNR that counts as perfect in the GAC score
CONVENTIONS = {
    "scaling": "reflectance = store value / 10^4, clipped to [0, 1]; data range 1 (all but sar_edge)",
    "psnr": "dB, 10 log10(1 / MSE) over bands and valid pixels; infinite (JSON null) for identical images; split "
    "value = mean over tiles",
    "ssim": "Gaussian window 11 px, sigma 1.5, K1 0.01, K2 0.03, mean over the 12 bands",
    "ms_ssim": "gac.losses.ms_ssim: Wang et al. scale weights, as many scales as the tile allows (renormalised), "
    "window 11",
    "sam_deg": "mean per-pixel spectral angle in degrees over the 12 bands",
    "rmse": "per band, reflectance units (0-1); split value pools all pixels (details.json rmse_per_band)",
    "lpips": "AlexNet LPIPS on true colour B04 B03 B02, reflectance/0.3 clipped to [0, 1] then mapped to [-1, 1]",
    "sar_edge": "gac.sar_edges.sar_edge_agreement: Pearson correlation of Lee-filtered S1 edges and optical (B02 B03 "
    "B04 B08) edges; ground_truth.sar_edge is the reference",
    "gac_score": "0.5 * sar_edge + 0.5 * clip(psnr / 40 dB, 0, 1) per tile (range -0.5 to 1, higher is better); split "
    "value = mean over tiles; stage 3 selects its checkpoint on it",
    "nodata": "pixels with NaN in prediction or truth are left out (PSNR, RMSE, SAM) or neutralised (SSIM, MS-SSIM)",
    "intervals": "details.json <variant>.<metric>_lo / _hi: percentile bootstrap of the mean over test tiles (tiles "
    "resampled with replacement, seeded by `seed`, evaluate.bootstrap_resamples times)",
    "paired": "details.json paired.<a>_vs_<b>.<metric> (metrics.json: diff and p of a few): mean per-tile difference "
    "a - b, its bootstrap interval (lo, hi), two-sided Wilcoxon signed-rank p-value (p) and tile count (n)",
    "landcover": "landcover.json: per class, PSNR/RMSE/SAM over the split's pixels of that class (tiles.zarr's "
    "landcover layer)",
}


def gac_score(psnr_db, sar_edge):
    """What stage 3 is for, in one number: radar structure (SAR-edge agreement) and fidelity to the truth (PSNR), half
    each.

    PSNR is scaled by 40 dB (infinite PSNR counts as 40) so both halves span
    about the same range: 0.5 * sar_edge + 0.5 * clip(psnr / 40, 0, 1).
    Works on floats and on torch tensors; None when either input is.
    """
    if psnr_db is None or sar_edge is None:
        return None
    scaled = psnr_db / GAC_SCORE_PSNR_DB
    scaled = scaled.clamp(0.0, 1.0) if hasattr(scaled, "clamp") else min(max(float(scaled), 0.0), 1.0)
    return 0.5 * sar_edge + 0.5 * scaled


def unit_reflectance(values: np.ndarray) -> np.ndarray:
    """Store units (reflectance x 10^4) -> reflectance clipped to [0, 1], float64, NaN kept."""
    return np.clip(np.asarray(values, dtype=np.float64) / REFLECTANCE_SCALE, 0.0, 1.0)


def _valid(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(H, W) mask of pixels where both images have every band."""
    return np.isfinite(pred).all(axis=0) & np.isfinite(target).all(axis=0)


def band_mse(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean squared error per band over valid pixels of (C, H, W) unit reflectance; NaN if no pixel is valid."""
    valid = _valid(pred, target)
    if not valid.any():
        return np.full(pred.shape[0], np.nan)
    diff = pred[:, valid] - target[:, valid]
    return (diff * diff).mean(axis=1)


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB of (C, H, W) images over all bands and valid pixels; inf when they are identical."""
    mse = float(np.mean(band_mse(pred, target)))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def sam_degrees(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean spectral angle in degrees between (C, H, W) images; 0 for identical spectra."""
    valid = _valid(pred, target)
    p, t = pred[:, valid], target[:, valid]
    norms = np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0)
    usable = norms > 0
    if not usable.any():
        return math.nan
    cos = (p[:, usable] * t[:, usable]).sum(axis=0) / norms[usable]
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())


def _neutralise_nodata(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    valid = _valid(pred, target)
    if valid.all():
        return pred, target
    fill = np.nanmean(np.where(valid, target, np.nan), axis=(1, 2), keepdims=True)
    fill = np.nan_to_num(fill, nan=0.0)
    return np.where(valid, pred, fill), np.where(valid, target, fill)


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM (pytorch-msssim, window 11, sigma 1.5) of (C, H, W) unit reflectance, mean over bands."""
    import torch
    from pytorch_msssim import ssim as _ssim

    p, t = _neutralise_nodata(pred, target)
    return float(_ssim(torch.from_numpy(p)[None], torch.from_numpy(t)[None], data_range=1.0, size_average=True))


def ms_ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """MS-SSIM of (C, H, W) unit reflectance with as many scales as the tile allows (gac.losses.ms_ssim)."""
    import torch

    from gac.losses import ms_ssim as _ms_ssim

    p, t = _neutralise_nodata(pred, target)
    return float(_ms_ssim(torch.from_numpy(p)[None], torch.from_numpy(t)[None], data_range=1.0))


def sar_edge(optical: np.ndarray, s1_db: np.ndarray, **options: Any) -> float:
    """SAR-edge agreement of a (12, H, W) image in store units with its (2, H, W) S1 in dB."""
    import torch

    from gac.sar_edges import sar_edge_agreement

    score = sar_edge_agreement(
        torch.from_numpy(np.asarray(optical, dtype=np.float64))[None],
        torch.from_numpy(np.asarray(s1_db, dtype=np.float64))[None],
        **options,
    )
    return float(score[0])


class LpipsMetric:
    """True-colour LPIPS when its trunk weights are cached; otherwise `available` is False and `reason` says why."""

    def __init__(self, enabled: bool = True, bands: Sequence[str] = S2_BANDS, net: str = "alex"):
        self.model = None
        if not enabled:
            self.available, self.reason = False, "LPIPS off: evaluate.lpips is false"
            return
        from gac.losses import TrueColourLPIPS, lpips_available

        self.available, self.reason = lpips_available(net)
        if self.available:
            self.model = TrueColourLPIPS(tuple(bands), net)

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float | None:
        if self.model is None:
            return None
        import torch

        p, t = _neutralise_nodata(pred, target)
        with torch.no_grad():
            return float(self.model(torch.from_numpy(p).float()[None], torch.from_numpy(t).float()[None]))


def tile_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    s1_db: np.ndarray | None = None,
    lpips: LpipsMetric | None = None,
    sar_edge_options: dict[str, Any] | None = None,
    bands: Sequence[str] = S2_BANDS,
) -> dict[str, Any]:
    """Every metric of one (C, H, W) prediction in store units against its ground truth (same units)."""
    p, t = unit_reflectance(pred), unit_reflectance(target)
    mse = band_mse(p, t)
    row: dict[str, Any] = {
        "psnr": psnr(p, t),
        "ssim": ssim(p, t),
        "ms_ssim": ms_ssim(p, t),
        "sam_deg": sam_degrees(p, t),
        "mse": {band: float(v) for band, v in zip(bands, mse)},
        "sar_edge": sar_edge(pred, s1_db, **(sar_edge_options or {})) if s1_db is not None else None,
        "lpips": lpips(p, t) if lpips is not None else None,
    }
    row["gac_score"] = gac_score(row["psnr"], row["sar_edge"])
    return row


def validation_scores(pred: np.ndarray, truth: np.ndarray, s1_db: np.ndarray) -> dict[str, float]:
    """The numbers every training stage validates on: `gac evaluate`'s own PSNR, SAM, SAR-edge and GAC score per tile
    (NaN = nodata), averaged over the tiles of a batch that have any; (B, 12, H, W) reflectance x 10^4 and (B, 2, H, W)
    dB in. Identical images have infinite PSNR: capped at 100 dB for the mean (the GAC score caps it at 40 anyway)."""
    import warnings

    rows = []
    for p, t, s in zip(pred, truth, s1_db):
        with warnings.catch_warnings():  # a tile with no valid pixel gives NaN, which the mean below skips
            warnings.simplefilter("ignore", RuntimeWarning)
            pu, tu = unit_reflectance(p), unit_reflectance(t)
            row = {"psnr": min(psnr(pu, tu), 100.0), "sam_deg": sam_degrees(pu, tu), "sar_edge": sar_edge(p, s)}
        row["gac_score"] = gac_score(row["psnr"], row["sar_edge"])
        rows.append(row)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            name: float(np.nanmean([r[name] for r in rows])) for name in ("psnr", "sam_deg", "sar_edge", "gac_score")
        }


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Split-level metrics from per-tile rows: means of the scalars, pooled per-band RMSE."""
    out: dict[str, Any] = {"tiles": len(rows)}
    for name in SCALAR_METRICS:
        values = [
            r[name]
            for r in rows
            if r.get(name) is not None and not (isinstance(r[name], float) and math.isnan(r[name]))
        ]
        out[name] = float(np.mean(values)) if values else None
    if rows and "mse" in rows[0]:
        bands = list(rows[0]["mse"])
        out["rmse"] = {b: float(math.sqrt(np.nanmean([r["mse"][b] for r in rows]))) for b in bands}
    return out


def json_safe(value: Any) -> Any:
    """Floats that JSON can hold: inf and NaN become None (the conventions say what null means)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
