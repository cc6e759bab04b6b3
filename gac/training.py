"""The one training driver of every trainable stage: the baseline, stage 2, stage-3 grounding, stage-1 fine-tuning.

A stage brings a `TrainingJob` (its section's knobs, config, seed, the stores it trains on, the validation monitor),
a builder for its LightningModule, its datasets and its saver; `fit_and_export` does the rest the same way for all:
seed, resume from the last checkpoint of an identical run, fit, reload the best checkpoint (or say it could not),
export on rank 0 and write one record schema. The Trainer owns precision, accumulation, checkpointing and the
distributed strategy (DDP).

Checkpoints live outside DVC's outs (`<checkpoint root>/<stage>/`, the stage
commands' `--checkpoints`, data/checkpoints in dvc.yaml): DVC deletes a stage's
outs before re-running it, which would make resume impossible. A
checkpoint is resumed only when it was written with the same params hash.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gac.schema import TrainingParams

log = logging.getLogger(__name__)


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up to the base LR, then cosine decay to zero at `total_steps` (optimizer steps)."""
    from torch.optim.lr_scheduler import LambdaLR

    total_steps = max(total_steps, warmup_steps + 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


def adamw_with_schedule(module, train: TrainingParams, part=None) -> dict[str, Any]:
    """`configure_optimizers` for a trainable stage: AdamW on what requires grad, warm-up then cosine per optimizer
    step.

    `part` (a submodule) limits the optimizer to it, for modules with two optimizers (a GAN's generator and critic).
    """
    import torch

    params = [p for p in (part or module).parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    scheduler = cosine_with_warmup(optimizer, train.warmup_steps, int(module.trainer.estimated_stepping_batches))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def count_parameters(model) -> dict[str, Any]:
    """Trainable and total parameter counts and the trainable share (recorded by every trainable stage)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_share": trainable / total if total else 0.0}


class ResumeState:
    """Where a stage keeps its checkpoints, and whether the last one may be resumed."""

    def __init__(self, stage: str, params_hash: str, root: Path):
        self.dir = Path(root) / stage
        self.params_hash = params_hash
        self._stamp = self.dir / "params_hash.json"

    def last_checkpoint(self) -> Path | None:
        last = self.dir / "last.ckpt"
        if not last.is_file():
            return None
        stamp = json.loads(self._stamp.read_text()) if self._stamp.is_file() else {}
        if stamp.get("params_hash") != self.params_hash:
            log.info("checkpoints in %s were made with other params; starting fresh", self.dir)
            return None
        if stamp.get("finished"):
            # a forced re-run (dvc repro -f) trains again from scratch, to the same result, instead of doing nothing
            log.info("the run in %s finished; training again from the start", self.dir)
            return None
        log.info("resuming from %s", last)
        return last

    def prepare(self) -> Path | None:
        """Return the checkpoint to resume from, clearing checkpoints of other params."""
        resume = self.last_checkpoint()
        if resume is None and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stamp.write_text(json.dumps({"params_hash": self.params_hash}))
        return resume

    def finish(self) -> None:
        """Mark the run complete once its outputs are written: its checkpoints stay for inspection, never for
        resuming."""
        self._stamp.write_text(json.dumps({"params_hash": self.params_hash, "finished": True}))

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def restore_best(trainer, module, load: Callable[[dict], None], monitor: str, mode: str) -> dict[str, Any]:
    """Put the best checkpoint's weights back into `module` after `fit`; returns the record's `selected_by`.

    `load` takes the checkpoint's `state_dict`. When validation never gave `monitor` a finite value (it never ran,
    e.g. `max_steps` ended training before it, or every score was NaN) there is no best checkpoint to trust: the last
    weights are exported, and both the log and the record say so rather than pass them off as selected.
    """
    import torch

    callback = trainer.checkpoint_callback
    path = Path(callback.best_model_path) if callback is not None and callback.best_model_path else None
    score = callback.best_model_score if callback is not None else None
    score = float(score) if score is not None and math.isfinite(float(score)) else None
    if path is not None and path.is_file() and score is not None:
        load(
            torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        )  # our own checkpoint: Lightning's metadata too
        return {"monitor": monitor, "mode": mode, "best": score}
    reason = "validation never ran" if path is None else f"validation never gave {monitor} a finite value"
    log.warning(
        "no best checkpoint (%s): exporting the weights of the last step (%d); the record says so",
        reason,
        trainer.global_step,
    )
    return {"monitor": monitor, "mode": mode, "best": None, "checkpoint": "last", "why": reason}


def data_fingerprint(*stores: Path | None) -> str:
    """What the training data is, for resuming and the record: each store's metadata (its attrs, with the params hash
    and provenance of what made it, and its shapes).

    DVC re-runs a training stage when an input store changes (new params or new upstream code); a checkpoint of the
    old data must then not be resumed as if nothing had changed. It must not depend on when a store was written:
    same params and seed, same fingerprint.
    """
    import hashlib

    parts = []
    for store in stores:
        if store is None:
            continue
        meta = Path(store) / "zarr.json"
        parts.append(f"{store}:{hashlib.sha256(meta.read_bytes()).hexdigest()}" if meta.is_file() else str(store))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TrainingJob:
    """What one trainable stage brings to `fit_and_export`."""

    stage: str  # checkpoint directory under the checkpoint root, and the record's "stage"
    train: TrainingParams  # the section's knobs
    config: dict[str, Any]  # what shapes the trained model (the section's training_dict()), recorded beside it
    seed: int
    stores: dict[str, Path | None]  # the stores it trains on: recorded and fingerprinted
    monitor: str = "loss"  # validation metric (logged as val/<monitor>) that picks the best checkpoint
    mode: str = "min"  # "min": lower is better; "max": higher
    drop_last: bool = True  # drop a last partial training batch (when there is more than one batch)

    def run_hash(self) -> str:
        """What a checkpoint must match to be resumed: the model/training keys, the seed and the data."""
        from gac.digest import json_digest

        return json_digest(
            {
                "stage": self.stage,
                "config": self.config,
                "seed": self.seed,
                "data": data_fingerprint(*self.stores.values()),
            }
        )


def fit_and_export(
    job: TrainingJob,
    build: Callable[[], tuple[Any, dict[str, Any]]],
    datasets,
    export: Callable[[Any, Path, dict], Any],
    out_dir: Path,
    live_dir: Path,
    checkpoint_root: Path,
    load_best: Callable[[Any, dict], None] | None = None,
    hyperparams: dict[str, Any] | None = None,
    extra_callbacks=(),
) -> dict[str, Any]:
    """Seed, build, fit (resuming an interrupted identical run), reload the best weights, export; returns the record.

    `build()` returns (LightningModule, record fields of the stage's own); it runs after seeding, so the model's
    initialisation is the seed's; its `parameters` (gac.training.count_parameters) are logged as hyperparameters with
    `hyperparams`. `load_best(module, state_dict)` puts the best checkpoint's tensors back (default: strict
    load_state_dict). `export(module, out_dir, record)` writes the model whole or not at all, on rank 0 only.
    """
    import warnings

    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    train_ds, val_ds = datasets
    pl.seed_everything(job.seed, workers=True, verbose=False)
    module, own = build()
    run_hash = job.run_hash()
    resume = ResumeState(job.stage, run_hash, Path(checkpoint_root))
    ckpt = resume.prepare()
    t = job.train
    drop_last = job.drop_last and len(train_ds) > t.batch_size
    per_epoch = len(train_ds) // t.batch_size if drop_last else math.ceil(len(train_ds) / t.batch_size)
    trainer = build_trainer(
        t,
        resume.dir,
        Path(live_dir),
        monitor=f"val/{job.monitor}",
        mode=job.mode,
        extra_callbacks=list(extra_callbacks),
        batches_per_epoch=max(1, per_epoch),
    )
    counts = own.get("parameters", {})
    trainer.logger.log_hyperparams(
        {
            "trainable_parameters": counts.get("trainable"),
            "total_parameters": counts.get("total"),
            "trainable_share": counts.get("trainable_share"),
            **(hyperparams or {}),
        }
    )
    loader = dict(batch_size=t.batch_size, num_workers=t.num_workers, persistent_workers=t.num_workers > 0)
    with warnings.catch_warnings():  # frozen parts (TerraMind's tokenizer) are kept in eval mode on purpose
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(
            module,
            DataLoader(train_ds, shuffle=True, drop_last=drop_last, **loader),
            DataLoader(val_ds, shuffle=False, **loader),
            ckpt_path=str(ckpt) if ckpt else None,
        )
    load = (
        (lambda state: load_best(module, state))
        if load_best
        else (lambda state: module.load_state_dict(state, strict=True))
    )
    selected = restore_best(trainer, module, load, f"val/{job.monitor}", job.mode)
    record = {
        "stage": job.stage,
        "config": job.config,
        "seed": job.seed,
        "params_hash": run_hash,
        "data": {
            "stores": {name: str(path) for name, path in job.stores.items() if path is not None},
            "fingerprint": data_fingerprint(*job.stores.values()),
            "train_tiles": len(train_ds),
            "val_tiles": len(val_ds),
        },
        **own,
        "selected_by": selected,
        "best_val_loss": selected["best"] if job.monitor == "loss" else None,
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "resumed_from": str(ckpt) if ckpt else None,
    }
    if trainer.is_global_zero:  # under DDP every rank trains, rank 0 alone exports
        export(module, Path(out_dir), record)
        resume.finish()
        log.info("%s: exported to %s", job.stage, out_dir)
    return {**record, "exported": trainer.is_global_zero}


def step_logger(live_dir: Path):
    """DVCLive's Lightning logger, with step plots that count from 0.

    dvclive 3.49's `log_metrics` tests `if step:`, so Lightning's step 0 reads
    as "no step" and becomes the logger's last step + 1: the learning-rate row
    takes step 1 and the first training row step 2, before step 1 proper
    (a plot read 2, 1, 2, 3, ...). Step 0 is passed as "next after -1" instead.
    """
    from dvclive.lightning import DVCLiveLogger
    from lightning.pytorch.utilities import rank_zero_only

    class StepLogger(DVCLiveLogger):
        @rank_zero_only
        def log_metrics(self, metrics, step=None, sync=False):
            if step == 0:
                self.experiment.step = -1
                step = None
            super().log_metrics(metrics, step, sync)

    return StepLogger(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None)


def build_trainer(
    train: TrainingParams,
    checkpoint_dir: Path,
    live_dir: Path,
    monitor: str = "val/loss",
    extra_callbacks=(),
    batches_per_epoch: int | None = None,
    mode: str = "min",
):
    """A Lightning Trainer for `train`: best + last checkpoints, early stopping, DVCLive metrics and plots.

    The best checkpoint and early stopping follow the logged `monitor`,
    lower is better with `mode="min"`, higher with `"max"`.

    When `max_steps` ends training inside the first epoch, validation is moved to
    that last step (given `batches_per_epoch`), so a short run still has a
    validation loss to pick its best checkpoint by.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    best = ModelCheckpoint(
        dirpath=checkpoint_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1, save_last=True
    )
    stop = EarlyStopping(monitor=monitor, mode=mode, patience=train.early_stopping_patience, strict=False)
    last_batch = train.max_steps * train.accumulate_grad_batches
    single = train.devices == 1  # per-rank batch counts under DDP are not known here
    validate_at = (
        last_batch if single and train.max_steps > 0 and batches_per_epoch and last_batch < batches_per_epoch else None
    )
    logger = step_logger(live_dir)
    return pl.Trainer(
        max_epochs=train.max_epochs,
        max_steps=train.max_steps,
        accumulate_grad_batches=train.accumulate_grad_batches,
        precision=train.precision,
        accelerator=train.accelerator,
        devices=train.devices,
        strategy=train.strategy,
        callbacks=[best, stop, LearningRateMonitor(logging_interval="step"), *extra_callbacks],
        logger=logger,
        log_every_n_steps=1,
        val_check_interval=validate_at,
        deterministic=None,  # the stage command set the `deterministic` params switch process-wide (gac.device)
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
