"""The tuning jobs' loss (stage 3, stage-1 fine-tuning) and their validation numbers.

Terms (weights in the job's `loss` params block, gac.tuning.params; 0 = off):

- `ce`: masked-token cross-entropy. TerraMind's own pre-training objective
  with teacher forcing: every S2L2A token is masked and predicted from the
  inputs, against the frozen tokenizer's encoding of the ground truth. Cheap
  (no diffusion UNet) and it trains the LoRA from the first step.
- The pixel path: the logits become soft FSQ codes (softmax @ codebook) and
  one x0 call of the tokenizer's diffusion UNet decodes them to reflectance,
  differentiably. On it:
  - `sar`: SAR consistency, 1 - mean(SAR-edge agreement, SAR-texture
    agreement) of the decoded image with the speckle-filtered S1
    (gac.sar_edges.sar_consistency_loss): edges and local roughness where the
    radar has them. What stage 3 is for.
  - `identity` (stage 3 only, it needs the optical input): L1 to opt_v2
    weighted per pixel by how well opt_v2 already agrees with the radar
    there (gac.sar_edges.agreement_map, identity_loss): keep what stage 2 got
    right, free to change the rest.
  - `l1`, `ms_ssim`, `spectral` (spectral angle + NDVI/NDWI errors), `lpips`
    (true colour; only where its weights are cached), `colour` (per-band mean
    and std gaps): against the ground truth (gac.losses).

The UNet is what costs (bench/bench_stage3.py), so the training pixel path
decodes a random token-aligned crop of `pixel_crop` px and runs on every
`pixel_every`-th batch only; validation decodes whole tiles, every batch.

With random tokenizer weights the UNet's zero-initialised output layer makes
every decoded image the per-band mean, so the pixel terms send no gradient;
they start to act once real weights are loaded.

Validation also scores the whole-tile decode as `gac evaluate` scores
opt_v3 (gac.metrics: PSNR, SAM in degrees, SAR-edge agreement, GAC score)
so the checkpoint can be selected on what stage 3 is for (`monitor`).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn

from gac.data.store import S2_BANDS
from gac.tuning import differentiable as D
from gac.tuning.params import PIXEL_TERMS

log = logging.getLogger(__name__)
VALIDATION_SEED = 7_000_000  # + a tile's index in the store: the decoder noise of its validation decode
IMAGE_TERMS = tuple(
    t for t in PIXEL_TERMS if t not in ("sar", "identity")
)  # gac.losses.WeightedLoss terms against the truth


def model_inputs(batch: Mapping[str, torch.Tensor], s1_name: str, optical_key: str | None) -> dict[str, torch.Tensor]:
    """Standardised image inputs keyed by modality name; each input's own nodata at the band mean (gac.nodata), as in
    generation: a pixel the ground truth lacks keeps its radar, since inference never knows the ground truth."""
    inputs = {s1_name: D.standardized(s1_name, batch["s1"])}
    if optical_key is not None:
        inputs[D.S2L2A] = D.standardized(D.S2L2A, batch[optical_key])
    return inputs


def _with_nodata(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid[:, None], x, torch.full_like(x, float("nan")))


def _crop(x: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
    top, left, height, width = window
    return x[..., top : top + height, left : left + width]


def _weights(loss) -> dict[str, float]:
    """A loss params block (or a plain mapping, for tests and benchmarks) -> {term: weight}."""
    if isinstance(loss, Mapping):
        return {k: float(v) for k, v in loss.items()}
    return {"ce": float(loss.ce), **{k: float(v) for k, v in loss.pixel_weights().items()}}


class TuningObjective(nn.Module):
    """Loss and logged terms for one batch; the model is passed in (it lives in the LightningModule).

    `loss` is the job's loss params block (gac.tuning.params), or a mapping of
    term weights with `pixel_crop`, `pixel_every`, `soft_temperature` given
    as keywords.
    """

    def __init__(
        self,
        s1_name: str,
        optical_key: str | None,
        loss=None,
        pixel_crop: int | None = None,
        pixel_every: int | None = None,
        soft_temperature: float | None = None,
    ):
        super().__init__()
        from gac.losses import WeightedLoss

        weights = {"ce": 1.0, **_weights(loss if loss is not None else {})}
        unknown = sorted(set(weights) - {"ce", *PIXEL_TERMS})
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}")
        if weights.get("identity", 0) > 0 and optical_key is None:
            raise ValueError("the identity term needs an optical input; this job has S1 alone")
        self.s1_name = s1_name
        self.optical_key = optical_key
        self.ce_weight = weights["ce"]
        self.sar_weight = weights.get("sar", 0.0)
        self.identity_weight = weights.get("identity", 0.0)

        def setting(name: str, given, default):
            return given if given is not None else getattr(loss, name, default)

        self.pixel_crop = int(setting("pixel_crop", pixel_crop, 0))
        self.pixel_every = int(setting("pixel_every", pixel_every, 1))
        self.soft_temperature = float(setting("soft_temperature", soft_temperature, 1.0))
        image = {k: weights[k] for k in IMAGE_TERMS if weights.get(k, 0) > 0}
        self.image = WeightedLoss(image, S2_BANDS) if image else None
        if "lpips" in image:  # said once, when the job starts, not on every step
            log.warning("loss.lpips %s: %s", image["lpips"], self.image.lpips_status)
            if self.image.lpips is None and not self.image.weights:
                self.image = None
        if not self.uses_pixels:
            log.warning(
                "loss.pixel_crop, pixel_every and soft_temperature have no effect: every pixel-path term weight is 0"
            )
        # Ground-truth tokens per tile index: the tokenizer is frozen, so they never change, and its
        # 92M-parameter encoder would otherwise run on every tile at every step.
        self._tokens: dict[int, torch.Tensor] = {}

    @property
    def uses_pixels(self) -> bool:
        return self.image is not None or self.sar_weight > 0 or self.identity_weight > 0

    def describe(self) -> dict[str, Any]:
        """What the objective is made of, for the adapter record."""
        return {
            "ce": self.ce_weight,
            "sar": self.sar_weight,
            "identity": self.identity_weight,
            "image": self.image.describe() if self.image is not None else None,
            "pixel_crop": self.pixel_crop,
            "pixel_every": self.pixel_every,
            "soft_temperature": self.soft_temperature,
        }

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

    def _pixel_terms(
        self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor], window
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Weighted pixel-path loss of `pred` (reflectance x 10^4, the `window` of the tile) and its terms."""
        from gac.sar_edges import agreement_map, identity_loss, sar_consistency_loss

        valid = batch["valid"].bool()
        total = pred.new_zeros(())
        logs: dict[str, Any] = {}
        if self.image is not None:
            truth = _crop(_with_nodata(batch["s2"], valid), window)
            image, terms = self.image(pred / 1e4, truth / 1e4)
            total = total + image
            logs.update({f"pixel_{name}": value.detach() for name, value in terms.items()})
        s1 = _with_nodata(batch["s1"], valid)
        if self.sar_weight > 0:
            sar, scores = sar_consistency_loss(pred, _crop(s1, window))
            total = total + self.sar_weight * sar
            logs.update({"sar": sar.detach(), "sar_edge": scores["sar_edge"], "sar_texture": scores["sar_texture"]})
        if self.identity_weight > 0:
            reference = _with_nodata(batch[self.optical_key], valid)
            agree = _crop(
                agreement_map(reference, s1), window
            )  # on the whole tile: a crop's border would be all margin
            identity = identity_loss(pred, _crop(reference, window), agree)
            total = total + self.identity_weight * identity
            logs.update({"identity": identity.detach(), "input_agreement": agree.mean()})
        logs["pixel"] = total.detach()
        return total, logs

    def _token_terms(
        self, model, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(logits, weighted cross-entropy, its logs): the token part, the same in training and validation."""
        tokens = self.target_tokens(model, batch)
        logits = D.token_logits(model, model_inputs(batch, self.s1_name, self.optical_key))
        ce = D.token_cross_entropy(logits, tokens)
        logs: dict[str, Any] = {"ce": ce.detach(), "token_acc": (logits.argmax(-1) == tokens).float().mean()}
        return logits, self.ce_weight * ce, logs

    def _decode(
        self, model, logits: torch.Tensor, batch: Mapping[str, torch.Tensor], window, seeds=None
    ) -> torch.Tensor:
        """The `window` of the tile decoded from the logits' soft codes, reflectance x 10^4 (noise per tile with
        `seeds`)."""
        size = tuple(batch["s2"].shape[-2:])
        return D.destandardize_s2(D.soft_decode(model, logits, size, self.soft_temperature, window=window, seeds=seeds))

    def forward(
        self, model, batch: Mapping[str, torch.Tensor], batch_idx: int | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Training loss: the pixel path on a random crop, on every `pixel_every`-th batch (`batch_idx` None:
        always)."""
        logits, loss, logs = self._token_terms(model, batch)
        if self.uses_pixels and (batch_idx is None or batch_idx % self.pixel_every == 0):
            window = D.random_window(tuple(batch["s2"].shape[-2:]), self.pixel_crop)
            pixel, terms = self._pixel_terms(self._decode(model, logits, batch, window), batch, window)
            logs.update(terms)
            loss = loss + pixel
        logs["loss"] = loss.detach()
        return loss, logs

    @torch.no_grad()
    def validate(self, model, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Validation numbers for one batch: the loss on whole tiles, and evaluate's metrics of their one-step decode.

        `psnr`, `sam_deg`, `sar_edge` and `gac_score` are gac.metrics' own
        functions (the definitions `gac evaluate` reports), per tile, averaged
        over the batch; the decode is the soft codes' x0 estimate, not the
        sampled generation `gac ground` writes.
        """
        from gac.metrics import validation_scores

        logits, loss, logs = self._token_terms(model, batch)
        whole = (0, 0, *batch["s2"].shape[-2:])
        # Each tile's decoder noise is its own (seeded by its index in the store), not the global stream's next draw:
        # a tile scores the same in every epoch and batch, so the validation score and the checkpoint it selects
        # follow the adapter, not the noise.
        seeds = [VALIDATION_SEED + int(index) for index in batch["index"]]
        pred = self._decode(model, logits, batch, whole, seeds)
        if self.uses_pixels:
            pixel, terms = self._pixel_terms(pred, batch, whole)
            logs.update(terms)
            loss = loss + pixel
        logs["loss"] = loss
        valid = batch["valid"].bool()
        as_array = lambda x: _with_nodata(x, valid).double().cpu().numpy()  # noqa: E731
        scores = validation_scores(as_array(pred), as_array(batch["s2"]), as_array(batch["s1"]))
        logs.update({name: torch.tensor(value, dtype=torch.float32) for name, value in scores.items()})
        return logs
