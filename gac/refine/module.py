"""The LightningModule of stage 2: the Trainer owns precision, accumulation, checkpoints, resume and DDP.

Checkpoints hold only the trained tensors (LoRA, head, unfrozen blocks): the
frozen backbone is rebuilt from its weights source on resume, so a checkpoint
of a 300M backbone stays a few MB. `strict_loading = False` lets Lightning load
such a partial state; `on_load_checkpoint` still insists every trained tensor is there.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from gac.losses import WeightedLoss
from gac.metrics import validation_scores
from gac.refine.model import Refiner
from gac.schema import TrainingParams
from gac.training import adamw_with_schedule

REFLECTANCE_SCALE = 1e4  # stores hold reflectance x 10^4; losses take 0-1 reflectance


class RefinerModule(pl.LightningModule):
    def __init__(self, refiner: Refiner, loss: WeightedLoss, train: TrainingParams):
        super().__init__()
        self.refiner = refiner
        self.loss = loss
        self.train_params = train
        self.strict_loading = False

    def trained_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def predict_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) as 0-1 reflectance; target NaN where the tile has no data."""
        pred = self.refiner(batch["opt_v1"], batch["s1"], batch["month"], batch["lat"], batch["lon"])
        target = torch.where(batch["valid"][:, None], batch["s2"], torch.full_like(batch["s2"], float("nan")))
        return pred / REFLECTANCE_SCALE, target / REFLECTANCE_SCALE

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        pred, target = self.predict_batch(batch)
        total, terms = self.loss(pred, target)
        on_step = stage == "train"
        size = pred.shape[0]
        # sync_dist: under DDP the epoch values average over every rank's tiles, not rank 0's alone.
        self.log(f"{stage}/loss", total, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=size, sync_dist=True)
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, on_step=on_step, on_epoch=True, batch_size=size, sync_dist=True)
        if stage == "val":  # the numbers every training stage validates on (gac.metrics.validation_scores)
            valid = batch["valid"][:, None]
            as_array = lambda x: torch.where(valid, x, float("nan")).double().cpu().numpy()  # noqa: E731
            scores = validation_scores(
                as_array(pred.detach() * REFLECTANCE_SCALE), as_array(batch["s2"]), as_array(batch["s1"])
            )
            for name, value in scores.items():
                self.log(f"val/{name}", float(value), on_epoch=True, batch_size=size, sync_dist=True)
        return total

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return adamw_with_schedule(self, self.train_params)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self.trained_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = sorted(self.trained_names() - set(checkpoint["state_dict"]))
        if missing:
            raise RuntimeError(
                f"checkpoint lacks {len(missing)} trained tensor(s), e.g. {missing[0]}; it was made by another model "
                "config"
            )
