"""Train the supervised baseline on tiles.zarr's train split (val split for checkpoints), export to data/baseline/.

It sees exactly the tiles stages 2 and 3 train on, S1 in and ground truth out,
with no foundation model: the comparison a reviewer asks for first. Resumes an
interrupted run with the same params and data (gac.training.ResumeState).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from gac.baseline.params import BaselineParams
from gac.errors import GacError
from gac.training import TrainingJob, count_parameters, fit_and_export

log = logging.getLogger(__name__)

STAGE = "baseline"


def split_statistics(dataset) -> dict[str, list[float]]:
    """Per-channel mean and std of S1 (dB) and S2 (x 10^4) over the valid pixels of a TileDataset, one tile at a
    time."""
    sums = {"s1": np.zeros(2), "s2": np.zeros(12)}
    squares = {"s1": np.zeros(2), "s2": np.zeros(12)}
    count = 0
    for i in range(len(dataset)):
        item = dataset[i]
        valid = item["valid"].numpy()
        count += int(valid.sum())
        for key in sums:
            values = item[key].numpy().astype(np.float64)[:, valid]
            sums[key] += values.sum(axis=1)
            squares[key] += (values * values).sum(axis=1)
    if count == 0:
        raise GacError(f"{dataset.tiles_path}: the train split has no valid pixel; check the scenes' nodata")
    stats = {}
    for key in sums:
        mean = sums[key] / count
        std = np.sqrt(np.maximum(squares[key] / count - mean * mean, 0.0))
        stats[f"{key}_mean"] = [float(v) for v in mean]
        stats[f"{key}_std"] = [float(max(v, 1e-3)) for v in std]
    return stats


def _datasets(tiles: Path, size_divisor: int):
    from gac.data.dataset import train_val_datasets

    train, val = train_val_datasets(tiles, STAGE)
    side = train[0]["s1"].shape[-1]
    if side % size_divisor:
        raise GacError(
            f"baseline.depth: tiles are {side} px, not divisible by 2^depth = {size_divisor}; lower baseline.depth"
        )
    return train, val


def train_baseline(
    p: BaselineParams,
    seed: int,
    tiles: Path,
    out_dir: Path,
    live_dir: Path,
    checkpoint_root: Path,
    extra_callbacks: Iterable = (),
) -> dict[str, Any]:
    """Fit the U-Net through the one training driver (gac.training), export the best checkpoint; returns the record."""
    tiles = Path(tiles)
    train_ds, val_ds = _datasets(tiles, 2**p.depth)
    from gac.baseline.module import BaselineModule
    from gac.baseline.saved import build_net, save_baseline

    stats = split_statistics(train_ds)
    config = p.training_dict()

    def build():
        net = build_net({"config": config, "statistics": stats})
        counts = count_parameters(net)
        log.info(
            "baseline U-Net: %d parameters, %d train / %d val tiles; trained from scratch (no pre-trained weights)",
            counts["total"],
            len(train_ds),
            len(val_ds),
        )
        model = f"pix2pix-style U-Net, {p.channels} channels, depth {p.depth}" + (
            f", PatchGAN weight {p.gan_weight}" if p.gan_weight else ", L1 only"
        )
        own = {
            "enabled": True,
            "model": model,
            "statistics": stats,
            "parameters": counts,
            "weights": "trained from scratch on the train split (no pre-trained weights)",
            "random_weights": False,
            "loss": {"l1": 1.0, "gan": p.gan_weight},
        }
        return BaselineModule(net, p), own

    job = TrainingJob(STAGE, p, config, seed, {"tiles": tiles})
    return fit_and_export(
        job,
        build,
        (train_ds, val_ds),
        lambda module, out, record: save_baseline(module.net, out, record),
        out_dir,
        live_dir,
        checkpoint_root,
        hyperparams={"gan_weight": p.gan_weight},
        extra_callbacks=extra_callbacks,
    )
