"""Training TerraMind's LoRA through the differentiable path, on Lightning.

One function serves two jobs:

- stage 3 (gac.ground.job.stage3_target, params `stage3`): inputs S1 + opt_v2
  (as TerraMind's S2L2A input), target the ground-truth S2L2A; LoRA on the
  decoder's cross-attention.
- stage 1 fine-tuning (gac.finetune, params `stage1_finetune`): the same path
  with S1 alone as input, which is stage 1's generator. The original project
  could not fine-tune it because it trained through `generate()`.

Each job's training knobs, LoRA and loss come from the params section named
after it (`stage3` or `stage1_finetune`), so neither retrains the other.

The Trainer (gac.training) owns accumulation, precision, schedule, early
stopping, DDP and resume. Checkpoints hold only the trainable (LoRA) tensors
and the optimizer: the frozen TerraMind and its 289M-parameter tokenizer are
rebuilt from `weights`, so a checkpoint is megabytes, not a gigabyte.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OPTICAL_KEY = "opt"
EVERY_STEP = ("ce", "token_acc", "loss")  # logged on every training batch; the pixel-path terms only where it ran


@dataclass(frozen=True)
class TuningTarget:
    """What differs between stage 3 and stage 1 fine-tuning; the training knobs come from the section named `stage`."""

    stage: str  # params section, checkpoint and record name: "stage3" or "stage1_finetune"
    model: str
    weights: str
    weights_key: str  # the params key `weights` came from, for error messages
    s1_input: str
    optical: Path | None  # opt_v2 (or opt_v1) store: S2L2A conditioning; None = S1 alone


def _lightning_module():
    """The LightningModule class, defined on first use so importing this module stays light."""
    import lightning.pytorch as pl
    import torch

    from gac.training import adamw_with_schedule
    from gac.tuning import differentiable as D

    class TuningModule(pl.LightningModule):
        def __init__(self, net, objective, train):
            super().__init__()
            self.net = net
            self.objective = objective
            self.train_params = train
            # Checkpoints hold the trainable tensors only (see on_save_checkpoint).
            self.strict_loading = False

        @property
        def bare(self):
            return self.net.get_base_model()

        def trainable_names(self) -> set[str]:
            return {name for name, p in self.named_parameters() if p.requires_grad}

        def train(self, mode: bool = True):
            super().train(mode)
            D.s2_tokenizer(self.bare).eval()  # frozen: no dropout, no EMA/codebook updates
            return self

        def training_step(self, batch, batch_idx):
            loss, logs = self.objective(self.bare, batch, batch_idx)
            size = batch["s1"].shape[0]
            every = {k: logs.pop(k) for k in EVERY_STEP}
            self.log_dict({f"train/{k}": v for k, v in every.items()}, batch_size=size, on_step=True, on_epoch=True)
            if logs:  # pixel-path terms: this batch ran the pixel path (every `loss.pixel_every`-th)
                # Lightning would repeat their last value on the batches that skip it; the step plot gets real rows only
                self.log_dict(
                    {f"train/{k}_epoch": v for k, v in logs.items()}, batch_size=size, on_step=False, on_epoch=True
                )
                if self.logger is not None:
                    self.logger.log_metrics(
                        {f"train/{k}_step": float(v) for k, v in logs.items()}, step=self.global_step
                    )
            return loss

        def validation_step(self, batch, batch_idx):
            logs = self.objective.validate(self.bare, batch)
            self.log_dict(
                {f"val/{k}": v for k, v in logs.items()},
                batch_size=batch["s1"].shape[0],
                on_step=False,
                on_epoch=True,
                sync_dist=True,
            )

        def on_after_backward(self):
            grads = [
                p.grad.detach().float().norm() for p in self.parameters() if p.requires_grad and p.grad is not None
            ]
            norm = torch.stack(grads).norm() if grads else torch.zeros(())
            self.log("train/lora_grad_norm", norm, on_step=True, on_epoch=False)

        def configure_optimizers(self):
            return adamw_with_schedule(self, self.train_params)

        def on_save_checkpoint(self, checkpoint):
            keep = self.trainable_names()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    return TuningModule


def build_lora_generator(job: TuningTarget, train, tile_size: int, seed: int, lora_key: str = "stage3.lora_targets"):
    """TerraMind for the job's inputs with LoRA from `train` (Stage3Params); returns (peft model, parameter counts)."""
    from gac.terramind import TARGET, build_generator
    from gac.training import count_parameters
    from gac.tuning.lora import apply_lora

    inputs = [job.s1_input] + ([TARGET] if job.optical is not None else [])
    bare = build_generator(
        job.model, inputs=inputs, weights=job.weights, tile_size=tile_size, seed=seed, key=job.weights_key
    )
    net = apply_lora(
        bare, train.lora_targets, train.lora_rank, train.lora_alpha, train.lora_dropout, job.model, lora_key
    )
    counts = count_parameters(net)
    counts["lora_modules"] = sum(1 for name, _ in net.named_modules() if name.endswith(".lora_A"))
    log.info(
        "%s: LoRA on %d modules, %d trainable of %d parameters (%.4f%%)",
        job.stage,
        counts["lora_modules"],
        counts["trainable"],
        counts["total"],
        100 * counts["trainable_share"],
    )
    return net, counts


def _datasets(target: TuningTarget, tiles: Path):
    from gac.data.dataset import train_val_datasets
    from gac.data.store import open_store
    from gac.terramind import check_s1_product

    check_s1_product(open_store(tiles, need=("s1", "s2"), what="tiles store"), tiles, target.s1_input)
    return train_val_datasets(
        tiles, target.stage, {OPTICAL_KEY: target.optical} if target.optical is not None else None
    )


def _tile_size(tiles: Path) -> int:
    from gac.data.store import open_store

    ds = open_store(tiles, need=("s1", "s2"), what="tiles store")
    return int(ds.sizes["y"])


def train_adapter(
    target: TuningTarget, params, tiles: Path, out_dir: Path, live_dir: Path, checkpoint_root: Path
) -> dict[str, Any]:
    """Train the target's LoRA through the one training driver (gac.training); write `out_dir/adapter` (peft) and
    `out_dir/adapter.json`, whole or not at all. Returns the record."""
    train = getattr(params, target.stage)  # the target's own section: LoRA, loss and training knobs
    tiles = Path(tiles)
    # Checks the optical store against tiles.zarr first: a mistake there costs no torch import, no model build.
    datasets = _datasets(target, tiles)
    tile_size = _tile_size(tiles)

    from gac.training import TrainingJob, fit_and_export
    from gac.tuning.lora import save_adapter
    from gac.tuning.objective import TuningObjective
    from gac.tuning.params import TUNING_MONITORS

    def build():
        net, counts = build_lora_generator(target, train, tile_size, params.seed, f"{target.stage}.lora_targets")
        objective = TuningObjective(target.s1_input, OPTICAL_KEY if target.optical is not None else None, train.loss)
        own = {
            "model": target.model,
            "inputs": [target.s1_input] + (["S2L2A"] if target.optical is not None else []),
            **net.get_base_model().gac_weights.provenance(),
            "lora": {
                "targets": train.lora_targets,
                "rank": train.lora_rank,
                "alpha": train.lora_alpha,
                "dropout": train.lora_dropout,
            },
            "parameters": counts,
            "loss": objective.describe(),
            "tile_size": tile_size,
        }
        return _lightning_module()(net, objective, train), own

    def load_best(module, state):
        lacking = module.trainable_names() - set(state)
        if lacking:  # a checkpoint of this very run: anything missing is a bug, not a user mistake
            raise RuntimeError(f"best checkpoint lacks {len(lacking)} trainable tensor(s), e.g. {sorted(lacking)[0]}")
        module.load_state_dict(state, strict=False)

    config = {**train.training_dict(), "model": target.model, "weights": target.weights, "s1_input": target.s1_input}
    job = TrainingJob(
        target.stage,
        train,
        config,
        params.seed,
        {"tiles": tiles, "optical": target.optical},
        train.monitor,
        TUNING_MONITORS[train.monitor],
        drop_last=False,
    )
    return fit_and_export(
        job,
        build,
        datasets,
        lambda module, out, record: save_adapter(module.net, out, record),
        out_dir,
        live_dir,
        checkpoint_root,
        load_best=load_best,
    )
