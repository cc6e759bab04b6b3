"""Metrics per land-cover class: every pixel of a class across the split, pooled, so small classes still get a number.

Only pixel-wise metrics split cleanly by class: PSNR and RMSE (squared errors
pooled over the class's pixels and all bands) and SAM (mean angle over the
class's pixels), with the conventions of gac.metrics (reflectance / 10^4
clipped to [0, 1], pixels with NaN left out). Windowed or image-level metrics
(SSIM, MS-SSIM, LPIPS, SAR-edge) would mix classes at every boundary, so they
are not split.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from gac.metrics import band_mse, psnr, sam_degrees, unit_reflectance


def class_pixels(images: np.ndarray, codes: np.ndarray, code: int) -> np.ndarray:
    """(N, C, H, W) images -> (C, P, 1): the spectra of every pixel whose code is `code`, as an image one pixel wide."""
    mask = codes == code
    return np.moveaxis(images, 1, 0)[:, mask][:, :, None]


def class_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Metrics of (C, P, 1) predicted spectra against the true ones (store units)."""
    p, t = unit_reflectance(pred), unit_reflectance(truth)
    valid = np.isfinite(p).all(axis=0) & np.isfinite(t).all(axis=0)
    mse = float(np.mean(band_mse(p, t))) if valid.any() else math.nan
    return {
        "pixels": int(valid.sum()),
        "psnr": psnr(p, t) if valid.any() else None,
        "rmse": math.sqrt(mse) if valid.any() else None,
        "sam_deg": sam_degrees(p, t) if valid.any() else None,
    }


def per_class(
    preds: Mapping[str, np.ndarray], truth: np.ndarray, codes: np.ndarray, names: Mapping[int, str]
) -> dict[str, dict[str, Any]]:
    """{class name: {variant: metrics}} for every class present in `codes` (N, H, W); unknown (-1) pixels are
    skipped."""
    out: dict[str, dict[str, Any]] = {}
    for code in sorted(int(c) for c in np.unique(codes) if c >= 0):
        target = class_pixels(truth, codes, code)
        name = names.get(code, f"class_{code}")
        out[name] = {
            variant: class_metrics(class_pixels(values, codes, code), target) for variant, values in preds.items()
        }
    return out


def per_label(
    preds: Mapping[str, np.ndarray], truth: np.ndarray, hot: np.ndarray, names: list[str]
) -> dict[str, dict[str, Any]]:
    """{label: {variant: metrics, `tiles`: count}} over every pixel of the tiles whose patch carries the label.

    An archive's labels (BigEarthNet's 19 classes) are per patch and several at once, so a label's pixels are those
    of every tile that has it, not pixels of that class alone: a forest patch with a lake counts for both.
    """
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        members = np.asarray(hot[:, j], dtype=bool)
        if not members.any():
            continue
        codes = np.broadcast_to(members[:, None, None], (truth.shape[0], *truth.shape[2:])).astype(np.int8)
        target = class_pixels(truth, codes, 1)
        out[name] = {
            variant: class_metrics(class_pixels(values, codes, 1), target) for variant, values in preds.items()
        }
        out[name]["tiles"] = int(members.sum())
    return out
