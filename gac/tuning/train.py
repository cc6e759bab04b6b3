"""Training TerraMind's LoRA through the differentiable path, on Lightning.

One function serves two jobs:

- stage 3 (gac.ground.job.stage3_job, params `stage3`): inputs S1 + opt_v2
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

import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gac.errors import GacError

log = logging.getLogger(__name__)

OPTICAL_KEY = "opt"
EVERY_STEP = ("ce", "token_acc", "loss")  # logged on every training batch; the pixel-path terms only where it ran


@dataclass(frozen=True)
class GroundingJob:
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

    from gac.tuning import differentiable as D
    from gac.training import adamw_with_schedule

    class GroundingModule(pl.LightningModule):
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
                self.log_dict({f"train/{k}_epoch": v for k, v in logs.items()}, batch_size=size, on_step=False, on_epoch=True)
                if self.logger is not None:
                    self.logger.log_metrics({f"train/{k}_step": float(v) for k, v in logs.items()}, step=self.global_step)
            return loss

        def validation_step(self, batch, batch_idx):
            logs = self.objective.validate(self.bare, batch)
            self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=batch["s1"].shape[0], on_step=False, on_epoch=True,
                          sync_dist=True)

        def on_after_backward(self):
            grads = [p.grad.detach().float().norm() for p in self.parameters() if p.requires_grad and p.grad is not None]
            norm = torch.stack(grads).norm() if grads else torch.zeros(())
            self.log("train/lora_grad_norm", norm, on_step=True, on_epoch=False)

        def configure_optimizers(self):
            return adamw_with_schedule(self, self.train_params)

        def on_save_checkpoint(self, checkpoint):
            keep = self.trainable_names()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    return GroundingModule


def build_grounding_model(job: GroundingJob, train, tile_size: int, seed: int, lora_key: str = "stage3.lora_targets"):
    """TerraMind for the job's inputs with LoRA from `train` (Stage3Params); returns (peft model, parameter counts)."""
    from gac.tuning.lora import apply_lora
    from gac.terramind import TARGET, build_generator
    from gac.training import count_parameters

    inputs = [job.s1_input] + ([TARGET] if job.optical is not None else [])
    bare = build_generator(job.model, inputs=inputs, weights=job.weights, tile_size=tile_size, seed=seed, key=job.weights_key)
    net = apply_lora(bare, train.lora_targets, train.lora_rank, train.lora_alpha, train.lora_dropout, job.model, lora_key)
    counts = count_parameters(net)
    counts["lora_modules"] = sum(1 for name, _ in net.named_modules() if name.endswith(".lora_A"))
    log.info("%s: LoRA on %d modules, %d trainable of %d parameters (%.4f%%)", job.stage, counts["lora_modules"],
             counts["trainable"], counts["total"], 100 * counts["trainable_share"])
    return net, counts


def check_s1_product(tiles_ds, tiles: Path, s1_input: str) -> None:
    """TerraMind standardises S1RTC and S1GRD differently: the tiles must hold the product `stage1.input` names."""
    product = tiles_ds.attrs.get("s1_product")
    if product and product != s1_input:
        raise GacError(f"{tiles}: tiles hold {product} but stage1.input is {s1_input}; set stage1.input: {product}")


def _datasets(job: GroundingJob, tiles: Path):
    from gac.data.dataset import TileDataset
    from gac.data.store import open_store

    check_s1_product(open_store(tiles, need=("s1", "s2"), what="tiles store"), tiles, job.s1_input)

    inputs = {OPTICAL_KEY: job.optical} if job.optical is not None else None
    train = TileDataset(tiles, split="train", inputs=inputs)
    val = TileDataset(tiles, split="val", inputs=inputs)
    if len(train) == 0:
        raise GacError(f"{tiles}: no 'train' tiles to train {job.stage} on; lower tile.val_fraction/test_fraction or add scenes")
    if len(val) == 0:
        raise GacError(f"{tiles}: no 'val' tiles for {job.stage}'s early stopping; raise tile.val_fraction or add scenes")
    return train, val


def data_fingerprint(*stores: Path | None) -> str:
    """What the training data is, for resuming: each store's metadata (attrs with its params hash, provenance, shapes).

    DVC re-runs stage 3 when opt_v2 changes (new params or new stage-2 code);
    a checkpoint of the old data must then not be resumed as if nothing had
    changed. The fingerprint is recorded in the adapter, so it must not depend
    on when a store was written: same params and seed, same bytes out.
    """
    import hashlib

    parts = []
    for store in stores:
        if store is None:
            continue
        meta = Path(store) / "zarr.json"
        if meta.is_file():
            parts.append(f"{store}:{hashlib.sha256(meta.read_bytes()).hexdigest()}")
        else:
            parts.append(str(store))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _tile_size(tiles: Path) -> int:
    from gac.data.store import open_store

    ds = open_store(tiles, need=("s1", "s2"), what="tiles store")
    return int(ds.sizes["y"])


def run_training(job: GroundingJob, params, tiles: Path, out_dir: Path, live_dir: Path,
                 checkpoint_root: Path) -> dict[str, Any]:
    """Train the job's LoRA; write `out_dir/adapter` (peft) + `out_dir/adapter.json`, whole or not at all."""
    train = getattr(params, job.stage)  # the job's own section: LoRA, loss and training knobs
    tiles, out_dir, live_dir = Path(tiles), Path(out_dir), Path(live_dir)
    # Checks opt_v2 against tiles.zarr first: a mistake there costs no torch import, no model build.
    train_ds, val_ds = _datasets(job, tiles)

    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from gac.data.store import partial_path, replace_dir
    from gac.tuning.lora import save_adapter
    from gac.tuning.objective import GroundingObjective
    from gac.tuning.params import TUNING_MONITORS
    from gac.params import json_digest
    from gac.training import ResumeState, build_trainer, restore_best

    pl.seed_everything(params.seed, workers=True)
    net, counts = build_grounding_model(job, train, _tile_size(tiles), params.seed, f"{job.stage}.lora_targets")
    objective = GroundingObjective(job.s1_input, OPTICAL_KEY if job.optical is not None else None, train.loss)
    module = _lightning_module()(net, objective, train)

    run_hash = (f"{json_digest({'seed': params.seed, job.stage: train.training_dict()})}-{job.model}-{job.weights}-{job.s1_input}-"
                f"{data_fingerprint(tiles, job.optical)}")
    resume = ResumeState(job.stage, run_hash, Path(checkpoint_root))
    ckpt = resume.prepare()
    trainer = build_trainer(train, resume.dir, live_dir, monitor=f"val/{train.monitor}", mode=TUNING_MONITORS[train.monitor],
                            batches_per_epoch=max(1, math.ceil(len(train_ds) / train.batch_size)))  # drop_last=False below
    loader = dict(batch_size=train.batch_size, num_workers=train.num_workers, persistent_workers=train.num_workers > 0)
    with warnings.catch_warnings():  # the frozen tokenizer is kept in eval mode on purpose (GroundingModule.train)
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(module, DataLoader(train_ds, shuffle=True, drop_last=False, **loader), DataLoader(val_ds, **loader),
                     ckpt_path=str(ckpt) if ckpt else None)


    def load(state):
        lacking = module.trainable_names() - set(state)
        if lacking:  # a checkpoint of this very run: anything missing is a bug, not a user mistake
            raise RuntimeError(f"best checkpoint lacks {len(lacking)} trainable tensor(s), e.g. {sorted(lacking)[0]}")
        module.load_state_dict(state, strict=False)

    selected = restore_best(trainer, module, load, f"val/{train.monitor}", TUNING_MONITORS[train.monitor])
    record = {
        "stage": job.stage,
        "model": job.model,
        "inputs": [job.s1_input] + (["S2L2A"] if job.optical is not None else []),
        "optical_store": str(job.optical) if job.optical is not None else None,
        **net.get_base_model().gac_weights.provenance(),
        "lora": {"targets": train.lora_targets, "rank": train.lora_rank, "alpha": train.lora_alpha, "dropout": train.lora_dropout},
        "parameters": counts,
        "loss": objective.describe(),
        "selected_by": selected,
        "best_val_loss": selected["best"] if train.monitor == "loss" else None,
        "global_steps": int(trainer.global_step),
        "params_hash": run_hash,
        "tile_size": _tile_size(tiles),
    }
    if trainer.is_global_zero:
        tmp = partial_path(out_dir)
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_adapter(module.net, tmp, record)
        replace_dir(tmp, out_dir)
        resume.finish()
        log.info("%s: adapter written to %s (%s)", job.stage, out_dir, json.dumps(counts))
    return record

