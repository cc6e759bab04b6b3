"""Train the supervised baseline on tiles.zarr's train split (val split for checkpoints), export to data/baseline/.

It sees exactly the tiles stages 2 and 3 train on, S1 in and ground truth out,
with no foundation model: the comparison a reviewer asks for first. Resumes an
interrupted run with the same params and data (gac.training.ResumeState).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from gac.baseline.params import BaselineParams
from gac.errors import GacError
from gac.training import ResumeState, build_trainer, count_parameters, restore_best

log = logging.getLogger(__name__)

STAGE = "baseline"


def split_statistics(dataset) -> dict[str, list[float]]:
    """Per-channel mean and std of S1 (dB) and S2 (x 10^4) over the valid pixels of a TileDataset, one tile at a time."""
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


def _store_hash(path: Path) -> str:
    from gac.data.store import open_store

    ds = open_store(path, need=())
    return str(ds.attrs.get("params_hash", "")) + ":" + str(ds.sizes.get("tile"))


def training_hash(p: BaselineParams, seed: int, tiles: Path) -> str:
    payload = {"baseline": p.training_dict(), "seed": seed, "tiles": _store_hash(tiles)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _datasets(tiles: Path, size_divisor: int):
    from gac.data.dataset import TileDataset

    train = TileDataset(tiles, "train")
    val = TileDataset(tiles, "val")
    for name, ds in (("train", train), ("val", val)):
        if len(ds) == 0:
            raise GacError(f"{tiles}: no '{name}' tiles; make more tiles or raise tile.val_fraction so both splits hold some")
    side = train[0]["s1"].shape[-1]
    if side % size_divisor:
        raise GacError(f"baseline.depth: tiles are {side} px, not divisible by 2^depth = {size_divisor}; lower baseline.depth")
    return train, val


def train_baseline(p: BaselineParams, seed: int, tiles: Path, out_dir: Path, live_dir: Path, checkpoint_root: Path,
                   extra_callbacks: Iterable = ()) -> dict[str, Any]:
    """Fit the U-Net (resuming an interrupted run), export the best checkpoint; returns the record."""
    tiles = Path(tiles)
    train_ds, val_ds = _datasets(tiles, 2**p.depth)
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from gac.baseline.module import BaselineModule
    from gac.baseline.saved import build_net, save_baseline

    pl.seed_everything(seed, workers=True, verbose=False)
    stats = split_statistics(train_ds)
    config = p.training_dict()
    net = build_net({"config": config, "statistics": stats})
    counts = count_parameters(net)
    log.info("baseline U-Net: %d parameters, %d train / %d val tiles; trained from scratch (no pre-trained weights)",
             counts["total"], len(train_ds), len(val_ds))

    resume = ResumeState(STAGE, training_hash(p, seed, tiles), Path(checkpoint_root))
    ckpt = resume.prepare()
    trainer = build_trainer(p, resume.dir, Path(live_dir), extra_callbacks=list(extra_callbacks),
                            batches_per_epoch=max(1, len(train_ds) // p.batch_size))
    trainer.logger.log_hyperparams({"parameters": counts["total"], "gan_weight": p.gan_weight})
    module = BaselineModule(net, p)
    loader = dict(batch_size=p.batch_size, num_workers=p.num_workers, persistent_workers=p.num_workers > 0)
    trainer.fit(
        module,
        DataLoader(train_ds, shuffle=True, drop_last=len(train_ds) > p.batch_size, **loader),
        DataLoader(val_ds, shuffle=False, **loader),
        ckpt_path=str(ckpt) if ckpt else None,
    )
    selected = restore_best(trainer, module, lambda state: module.load_state_dict(state, strict=True), "val/loss", "min")
    record = {
        "stage": STAGE,
        "enabled": True,
        "model": f"pix2pix-style U-Net, {p.channels} channels, depth {p.depth}" + (f", PatchGAN weight {p.gan_weight}" if p.gan_weight else ", L1 only"),
        "config": config,
        "seed": seed,
        "statistics": stats,
        "weights": "trained from scratch on the train split (no pre-trained weights)",
        "random_weights": False,
        "parameters": counts,
        "best_val_loss": selected["best"],
        "selected_by": selected,
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "resumed_from": str(ckpt) if ckpt else None,
        "inputs": {"tiles": str(tiles), "train_tiles": len(train_ds), "val_tiles": len(val_ds)},
    }
    if trainer.is_global_zero:
        save_baseline(net, Path(out_dir), record)
        resume.finish()
    return {**record, "exported": trainer.is_global_zero}
