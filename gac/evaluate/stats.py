"""How sure the numbers are: bootstrap intervals over test tiles, and paired comparisons between variants.

Eight test tiles cannot tell a 0.3 dB gain from noise by their means alone.
Metrics are per tile (pixels of one tile are not independent), but tiles are
not independent either: tiles of one map block (gac.data.splits), every date
of that ground, share land cover, and overlap when stride < size. So the unit
of resampling is the cluster (`evaluate.bootstrap_unit`: the block by default,
or the scene; `tile` is the naive bootstrap, intervals too narrow where tiles
are correlated): a cluster bootstrap of the mean draws whole clusters with
replacement. It is the percentile bootstrap, seeded so the same per-tile values
give the same interval. A paired comparison resamples the per-tile
*differences* (both variants scored on the same tiles) the same way, with the
Wilcoxon signed-rank test's two-sided p-value beside it, computed on the
per-cluster mean differences (exact for small samples without ties, as scipy
computes it; with 2 clusters no p-value can fall below 0.5, which is the honest
answer of 2 independent samples). Tiles where a value is missing (PSNR of an
identical image, LPIPS off) are left out of both.
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


def _cluster_labels(clusters: Sequence[Any] | None, n: int) -> np.ndarray:
    """Integer cluster ids of n values: each value its own cluster when `clusters` is None (the tile bootstrap)."""
    if clusters is None:
        return np.arange(n)
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster labels for {n} values")
    return np.unique(np.asarray([str(c) for c in clusters], dtype=object), return_inverse=True)[1].reshape(-1)


def _finite_with(values: Sequence[Any], clusters: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """The values that are numbers and the cluster id of each (see finite)."""
    labels = _cluster_labels(clusters, len(values))
    keep = [i for i, v in enumerate(values) if v is not None and math.isfinite(float(v))]
    return np.asarray([float(values[i]) for i in keep], dtype=np.float64), labels[keep]


def bootstrap_interval(
    values: Sequence[float],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    clusters: Sequence[Any] | None = None,
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the mean of `values`; None when there is no value.

    `clusters` (a label per value, e.g. the tiles' map blocks) makes it a cluster bootstrap: whole clusters are
    drawn with replacement, as many as there are, and each draw's mean is over all the tiles it holds, so tiles
    that move together (one block, one footprint) count as the one observation they are. None: each tile its own.
    """
    x, labels = _finite_with(list(values), clusters)
    if x.size == 0:
        return None
    ids, labels = np.unique(labels, return_inverse=True)
    sums = np.bincount(labels, weights=x, minlength=ids.size)
    counts = np.bincount(labels, minlength=ids.size).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, ids.size, size=(resamples, ids.size))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def cluster_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The mean of the values of each cluster (in order of the sorted labels)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    return np.bincount(inverse, weights=values, minlength=ids.size) / np.bincount(inverse, minlength=ids.size)


def signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is zero (nothing to test)."""
    from scipy.stats import wilcoxon

    if differences.size == 0 or not np.any(differences != 0):
        return 1.0
    return float(wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_difference(
    a: Sequence[Any],
    b: Sequence[Any],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    clusters: Sequence[Any] | None = None,
) -> dict[str, Any] | None:
    """Mean of a - b over the tiles where both have a value, its bootstrap interval, the signed-rank p-value and the
    tile count `n`.

    With `clusters` the interval is the cluster bootstrap's and the signed-rank test runs on each cluster's mean
    difference (`clusters` of them), since tiles of one cluster are not independent samples.
    """
    labels = _cluster_labels(clusters, len(a))
    kept = [
        (float(x), float(y), c)
        for x, y, c in zip(a, b, labels)
        if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
    ]
    if not kept:
        return None
    d = np.array([x - y for x, y, _ in kept])
    groups = np.array([c for _, _, c in kept])
    low, high = bootstrap_interval(d, resamples, seed, level, clusters=None if clusters is None else groups)
    out = {"diff": float(d.mean()), "lo": low, "hi": high, "n": int(d.size)}
    if clusters is None:
        return {**out, "p": signed_rank_p(d)}
    per_cluster = cluster_means(d, groups)
    return {**out, "p": signed_rank_p(per_cluster), "clusters": int(per_cluster.size)}


def with_intervals(
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    resamples: int,
    seed: int,
    level: float,
    clusters: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """A variant's split-level metrics plus `<metric>_lo` / `<metric>_hi` for every metric with per-tile values."""
    out = dict(summary)
    for name in CI_METRICS:
        interval = bootstrap_interval([r.get(name) for r in rows], resamples, seed, level, clusters)
        if interval is not None:
            out[f"{name}_lo"], out[f"{name}_hi"] = interval
    return out


def paired_comparisons(
    rows: dict[str, list[dict[str, Any]]],
    resamples: int,
    seed: int,
    level: float,
    clusters: Sequence[Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every pair of PAIRS whose two variants were evaluated: {pair key: {metric: paired_difference}}."""
    out: dict[str, dict[str, Any]] = {}
    for key, a, b in PAIRS:
        if a not in rows or b not in rows:
            continue
        per_metric = {
            m: paired_difference(
                [r.get(m) for r in rows[a]], [r.get(m) for r in rows[b]], resamples, seed, level, clusters
            )
            for m in CI_METRICS
        }
        out[key] = {m: v for m, v in per_metric.items() if v is not None}
    return out
