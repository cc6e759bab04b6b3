"""Stage 3's loss: masked-token cross-entropy, plus an optional loss in pixels.

The cross-entropy is TerraMind's own pre-training objective with teacher
forcing: every S2L2A token is masked and predicted from S1 (+ opt_v2), against
the frozen tokenizer's encoding of the ground truth. It is cheap (no diffusion
UNet) and trains the LoRA from the first step.

The pixel loss (`pixel_weight > 0`) decodes soft FSQ codes with one x0 call of
the tokenizer's UNet and compares reflectance with the ground truth (gac.losses
terms) and the output's edges with the speckle-filtered S1's (gac.sar_edges,
the definition the evaluation scores). With random tokenizer weights the UNet's
zero-initialised output layer makes that loss constant (zero gradient); it
starts to act once real weights are loaded.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from gac.data.store import S2_BANDS
from gac.tuning import differentiable as D


def model_inputs(batch: Mapping[str, torch.Tensor], s1_name: str, optical_key: str | None) -> dict[str, torch.Tensor]:
    """Standardised image inputs keyed by modality name; pixels without data sit at the band mean (0)."""
    valid = batch["valid"][:, None].to(batch["s1"].dtype)
    inputs = {s1_name: D.standardized(s1_name, batch["s1"]) * valid}
    if optical_key is not None:
        inputs[D.S2L2A] = D.standardized(D.S2L2A, batch[optical_key]) * valid
    return inputs


def _with_nodata(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid[:, None], x, torch.full_like(x, float("nan")))


class GroundingObjective(nn.Module):
    """Loss and logged terms for one batch; the model is passed in (it lives in the LightningModule)."""

    def __init__(self, s1_name: str, optical_key: str | None, pixel_weight: float = 0.0,
                 pixel_terms: Mapping[str, float] | None = None, sar_weight: float = 0.0, soft_temperature: float = 1.0,
                 ce_weight: float = 1.0):
        super().__init__()
        from gac.losses import WeightedLoss

        self.s1_name = s1_name
        self.optical_key = optical_key
        self.ce_weight = float(ce_weight)
        self.pixel_weight = float(pixel_weight)
        self.sar_weight = float(sar_weight)
        self.soft_temperature = float(soft_temperature)
        terms = dict(pixel_terms if pixel_terms is not None else {"l1": 1.0})
        self.pixel = WeightedLoss(terms, S2_BANDS) if self.pixel_weight > 0 and any(v > 0 for v in terms.values()) else None
        # Ground-truth tokens per tile index: the tokenizer is frozen, so they never change, and its
        # 92M-parameter encoder would otherwise run on every tile at every step.
        self._tokens: dict[int, torch.Tensor] = {}

    @property
    def uses_pixels(self) -> bool:
        return self.pixel_weight > 0 and (self.pixel is not None or self.sar_weight > 0)

    def target_tokens(self, model, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The frozen tokenizer's encoding of the ground truth, cached by tile index when the batch has one."""
        keys = batch["index"].tolist() if "index" in batch else None
        if keys is not None and all(k in self._tokens for k in keys):
            return torch.stack([self._tokens[k] for k in keys]).to(batch["s2"].device)
        truth_std = D.standardized(D.S2L2A, batch["s2"]) * batch["valid"][:, None].to(batch["s2"].dtype)
        tokens = D.target_tokens(model, truth_std)
        if keys is not None:
            self._tokens.update({k: t.cpu() for k, t in zip(keys, tokens)})
        return tokens

    def forward(self, model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        valid = batch["valid"].bool()
        tokens = self.target_tokens(model, batch)
        logits = D.token_logits(model, model_inputs(batch, self.s1_name, self.optical_key))
        ce = D.token_cross_entropy(logits, tokens)
        logs: dict[str, Any] = {"ce": ce.detach(), "token_acc": (logits.argmax(-1) == tokens).float().mean()}
        loss = self.ce_weight * ce
        if self.uses_pixels:
            size = tuple(batch["s2"].shape[-2:])
            pred = D.destandardize_s2(D.soft_decode(model, logits, size, self.soft_temperature))
            pixel = pred.new_zeros(())
            if self.pixel is not None:
                pixel, terms = self.pixel(pred / 1e4, _with_nodata(batch["s2"], valid) / 1e4)
                logs.update({f"pixel_{name}": value.detach() for name, value in terms.items()})
            if self.sar_weight > 0:
                from gac.sar_edges import sar_edge_loss

                sar = sar_edge_loss(pred, _with_nodata(batch["s1"], valid))
                logs["sar_edge_loss"] = sar.detach()
                pixel = pixel + self.sar_weight * sar
            logs["pixel"] = pixel.detach()
            loss = loss + self.pixel_weight * pixel
        logs["loss"] = loss.detach()
        return loss, logs
