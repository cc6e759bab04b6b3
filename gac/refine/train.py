"""Train the stage-2 refiner on tiles.zarr + opt_v1.zarr and export adapter, head and record to data/stage2/.

Order matters for "nothing half-written": stores are checked (aligned tiles,
non-empty splits) and the model is built (band names, LoRA targets, weights)
before any checkpoint directory or output is touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable

from gac.data.store import S2_BANDS
from gac.errors import GacError
from gac.refine.params import STAGE2_MONITORS, Stage2Params
from gac.training import ResumeState, build_trainer, restore_best

log = logging.getLogger(__name__)

STAGE = "stage2"


def _datasets(tiles: Path, opt_v1: Path):
    from gac.data.dataset import TileDataset

    train = TileDataset(tiles, "train", {"opt_v1": opt_v1})
    val = TileDataset(tiles, "val", {"opt_v1": opt_v1})
    for name, ds in (("train", train), ("val", val)):
        if len(ds) == 0:
            raise GacError(f"{tiles}: no '{name}' tiles; make more tiles or raise tile.val_fraction so both splits hold some")
    return train, val


def _store_hash(path: Path) -> str:
    from gac.data.store import open_store

    ds = open_store(path, need=())
    return str(ds.attrs.get("params_hash", "")) + ":" + str(ds.sizes.get("tile"))


def training_hash(p: Stage2Params, seed: int, tiles: Path, opt_v1: Path) -> str:
    """What a checkpoint must match to be resumed: the model/training keys, the seed and the input stores' provenance."""
    payload = {"stage2": p.training_dict(), "seed": seed, "tiles": _store_hash(tiles), "opt_v1": _store_hash(opt_v1)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_stage2(
    p: Stage2Params,
    seed: int,
    tiles: Path,
    opt_v1: Path,
    out_dir: Path,
    live_dir: Path,
    checkpoint_root: Path,
    extra_callbacks: Iterable = (),
) -> dict[str, Any]:
    """Fit (resuming an interrupted run with the same params), then export the best checkpoint. Returns the record."""
    train_ds, val_ds = _datasets(Path(tiles), Path(opt_v1))  # before torch is even imported: bad stores fail fast
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from gac.losses import WeightedLoss
    from gac.refine.build import build_refiner, save_refiner
    from gac.refine.module import RefinerModule

    pl.seed_everything(seed, workers=True, verbose=False)
    refiner, info = build_refiner(p.training_dict())
    counts = info["parameters"]
    log.info(
        "stage 2 trainable parameters: %d of %d (%.2f%%): LoRA on %d modules, head, %d unfrozen block(s)",
        counts["trainable"], counts["total"], 100 * counts["trainable_share"], info["lora_modules"], p.unfreeze_last_blocks,
    )
    loss = WeightedLoss(p.loss_weights(), S2_BANDS, p.lpips_net)
    log.info("%s", loss.lpips_status)

    resume = ResumeState(STAGE, training_hash(p, seed, Path(tiles), Path(opt_v1)), Path(checkpoint_root))
    ckpt = resume.prepare()
    trainer = build_trainer(p, resume.dir, Path(live_dir), extra_callbacks=list(extra_callbacks),
                            monitor=f"val/{p.monitor}", mode=STAGE2_MONITORS[p.monitor],
                            batches_per_epoch=max(1, len(train_ds) // p.batch_size))
    trainer.logger.log_hyperparams(
        {"trainable_parameters": counts["trainable"], "total_parameters": counts["total"], "trainable_share": counts["trainable_share"]}
    )
    module = RefinerModule(refiner, loss, p)
    loader = dict(batch_size=p.batch_size, num_workers=p.num_workers, persistent_workers=p.num_workers > 0)
    trainer.fit(
        module,
        DataLoader(train_ds, shuffle=True, drop_last=len(train_ds) > p.batch_size, **loader),
        DataLoader(val_ds, shuffle=False, **loader),
        ckpt_path=str(ckpt) if ckpt else None,
    )

    def load(state):
        module.on_load_checkpoint({"state_dict": state})  # every trained tensor must be there
        module.load_state_dict(state, strict=False)

    selected = restore_best(trainer, module, load, f"val/{p.monitor}", STAGE2_MONITORS[p.monitor])
    record = {
        "config": p.training_dict(),
        "seed": seed,
        **{k: info[k] for k in ("weights", "random_weights", "backbone_fingerprint", "quantized_linears", "lora_modules")},
        "parameters": counts,
        "losses": loss.describe(),
        "best_val_loss": selected["best"] if p.monitor == "loss" else None,
        "selected_by": selected,
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "resumed_from": str(ckpt) if ckpt else None,
        "inputs": {"tiles": str(tiles), "opt_v1": str(opt_v1)},
    }
    if trainer.is_global_zero:  # under DDP every rank trains, rank 0 alone exports
        save_refiner(refiner, Path(out_dir), record)
        resume.finish()
    return {**record, "exported": trainer.is_global_zero}
