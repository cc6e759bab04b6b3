"""How sure the numbers are: bootstrap intervals over test tiles, and paired comparisons between variants.

Eight test tiles cannot tell a 0.3 dB gain from noise by their means alone.
The unit of resampling is the tile (pixels of one tile are not independent),
the bootstrap is the percentile bootstrap of the mean, seeded so the same
per-tile values give the same interval, and a paired comparison resamples the
per-tile *differences* (both variants scored on the same tiles), with the
Wilcoxon signed-rank test's two-sided p-value beside it (exact for small
samples without ties, as scipy computes it). Tiles where a value is missing
(PSNR of an identical image, LPIPS off) are left out of both.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

# The comparisons that answer the design's questions: (key under `paired`, variant a, variant b); difference = a - b.
PAIRS: tuple[tuple[str, str, str], ...] = (
    ("v2_vs_v1", "opt_v2", "opt_v1"),  # does the refiner improve stage 1?
    ("v3_vs_v2", "opt_v3", "opt_v2"),  # does grounding improve the refined image?
    ("v3_vs_v3_on_v1", "opt_v3", "opt_v3_on_v1"),  # does stage 2 help stage 3 (1+2+3 against 1+3)?
    ("v3_vs_baseline", "opt_v3", "baseline"),  # does the pipeline beat a plain supervised network?
)
CI_METRICS = ("psnr", "ssim", "ms_ssim", "sam_deg", "sar_edge", "lpips", "gac_score")


def finite(values: Iterable[Any]) -> np.ndarray:
    """The values that are numbers (None, NaN and inf dropped), as float64."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(kept, dtype=np.float64)


def bootstrap_interval(values: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the mean of `values` (tiles as the unit); None when there is no value."""
    x = finite(values)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is zero (nothing to test)."""
    from scipy.stats import wilcoxon

    if differences.size == 0 or not np.any(differences != 0):
        return 1.0
    return float(wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_difference(a: Sequence[Any], b: Sequence[Any], resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any] | None:
    """Mean of a - b over the tiles where both have a value, its bootstrap interval, the signed-rank p-value and the tile count."""
    pairs = [(float(x), float(y)) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    if not pairs:
        return None
    d = np.array([x - y for x, y in pairs])
    low, high = bootstrap_interval(d, resamples, seed, level)
    return {"diff": float(d.mean()), "lo": low, "hi": high, "p": signed_rank_p(d), "n": int(d.size)}


def with_intervals(summary: dict[str, Any], rows: list[dict[str, Any]], resamples: int, seed: int, level: float) -> dict[str, Any]:
    """A variant's split-level metrics plus `<metric>_lo` / `<metric>_hi` for every metric with per-tile values."""
    out = dict(summary)
    for name in CI_METRICS:
        interval = bootstrap_interval([r.get(name) for r in rows], resamples, seed, level)
        if interval is not None:
            out[f"{name}_lo"], out[f"{name}_hi"] = interval
    return out


def paired_comparisons(rows: dict[str, list[dict[str, Any]]], resamples: int, seed: int, level: float) -> dict[str, dict[str, Any]]:
    """Every pair of PAIRS whose two variants were evaluated: {pair key: {metric: paired_difference}}."""
    out: dict[str, dict[str, Any]] = {}
    for key, a, b in PAIRS:
        if a not in rows or b not in rows:
            continue
        per_metric = {m: paired_difference([r.get(m) for r in rows[a]], [r.get(m) for r in rows[b]], resamples, seed, level) for m in CI_METRICS}
        out[key] = {m: v for m, v in per_metric.items() if v is not None}
    return out
