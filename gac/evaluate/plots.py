"""Distributions people read: a box plot per metric, one box per variant, every test tile drawn as a point on it.

A mean and its interval hide a variant that fails badly on one tile; the
per-tile spread shows it. Written as one PNG (data/eval/distributions.png,
declared as a DVC plot), with the Agg backend so no display is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gac.evaluate.stats import finite

PANELS = (
    ("psnr", "PSNR (dB) ↑"),
    ("ssim", "SSIM ↑"),
    ("ms_ssim", "MS-SSIM ↑"),
    ("sam_deg", "SAM (°) ↓"),
    ("sar_edge", "SAR-edge ↑"),
    ("lpips", "LPIPS ↓"),
)


def distribution_plot(path: Path, rows: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "") -> Path:
    """Box plots of every metric with per-tile values, a box per variant; metrics with no value at all are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    panels = [(key, label) for key, label in PANELS if any(finite(r.get(key) for r in rows[n]).size for n in names)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(1.2 * len(names) + 3, 2.2 * len(panels)), squeeze=False)
    for ax, (key, label) in zip(axes[:, 0], panels):
        values = [finite(r.get(key) for r in rows[n]) for n in names]
        ax.boxplot([v if v.size else [np.nan] for v in values], showmeans=True, widths=0.5)
        for i, v in enumerate(values, start=1):
            jitter = np.linspace(-0.12, 0.12, v.size) if v.size > 1 else np.zeros(v.size)
            ax.plot(i + jitter, v, "o", markersize=3, alpha=0.6, color="tab:blue")
        ax.set_ylabel(label)
        ax.set_xticks(range(1, len(names) + 1), names if ax is axes[-1, 0] else [""] * len(names))
        ax.grid(axis="y", alpha=0.3)
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp, dpi=90, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)
    return path
