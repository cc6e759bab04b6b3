"""Train the stage-2 refiner on tiles.zarr + opt_v1.zarr and export adapter, head and record to data/stage2/.

Order matters for "nothing half-written": stores are checked (aligned tiles,
non-empty splits) and the model is built (band names, LoRA targets, weights)
before any checkpoint directory or output is touched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from gac.data.store import S2_BANDS
from gac.refine.params import STAGE2_MONITORS, Stage2Params
from gac.training import TrainingJob, fit_and_export

log = logging.getLogger(__name__)

STAGE = "stage2"


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
    """Fit through the one training driver (gac.training), export the best checkpoint; returns the record."""
    from gac.data.dataset import train_val_datasets

    datasets = train_val_datasets(
        Path(tiles), STAGE, {"opt_v1": Path(opt_v1)}
    )  # before torch is imported: bad stores fail fast
    from gac.losses import WeightedLoss
    from gac.refine.build import build_refiner, save_refiner
    from gac.refine.module import RefinerModule

    def build():
        refiner, info = build_refiner(p.training_dict())
        counts = info["parameters"]
        log.info(
            "stage 2 trainable parameters: %d of %d (%.2f%%): LoRA on %d modules, head, %d unfrozen block(s)",
            counts["trainable"],
            counts["total"],
            100 * counts["trainable_share"],
            info["lora_modules"],
            p.unfreeze_last_blocks,
        )
        loss = WeightedLoss(p.loss.weights(), S2_BANDS, p.loss.lpips_net)
        log.info("%s", loss.lpips_status)
        own = {
            k: info[k]
            for k in ("weights", "random_weights", "backbone_fingerprint", "quantized_linears", "lora_modules")
        }
        return RefinerModule(refiner, loss, p), {**own, "parameters": counts, "loss": loss.describe()}

    def load_best(module, state):
        module.on_load_checkpoint({"state_dict": state})  # every trained tensor must be there
        module.load_state_dict(state, strict=False)

    job = TrainingJob(
        STAGE,
        p,
        p.training_dict(),
        seed,
        {"tiles": Path(tiles), "opt_v1": Path(opt_v1)},
        p.monitor,
        STAGE2_MONITORS[p.monitor],
    )
    return fit_and_export(
        job,
        build,
        datasets,
        lambda module, out, record: save_refiner(module.refiner, out, record),
        out_dir,
        live_dir,
        checkpoint_root,
        load_best=load_best,
        extra_callbacks=extra_callbacks,
    )
