"""Params blocks shared by the two TerraMind tuning jobs (`stage3`, `stage1_finetune`).

`TuningParams` holds what both sections have (LoRA, the selection monitor, the
training knobs); each section adds its own `loss` block. The loss blocks
differ in their defaults (stage 3 grounds in the radar; stage-1 fine-tuning
keeps the original project's image loss) and in one term: `identity` needs an
optical input, which only stage 3 has.

Every weight is a term of gac.tuning.objective.TuningObjective; its
docstring defines them. All terms but `ce` go through the pixel path (soft
codes -> one x0 call of the tokenizer's diffusion UNet), which `pixel_crop`
and `pixel_every` make affordable on a CPU.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gac.schema import VALIDATION_MONITORS, Regex, StrictModel, TrainingParams
from gac.tuning.lora import TERRAMIND_LORA_TARGETS

# What a tuning job can select its checkpoint on: the shared validation numbers (on the one-step decode of every
# val tile), and its token cross-entropy.
TUNING_MONITORS = {**VALIDATION_MONITORS, "ce": "min"}
# Weights of terms computed on the decoded image (the pixel path); `ce` works on tokens.
PIXEL_TERMS = ("sar", "identity", "l1", "ms_ssim", "spectral", "lpips", "colour")
# The UNet decodes whole 16 px tokens; the SAR term drops 7 px at each border (gac.sar_edges.margin), so 32 is the
# least.
MIN_PIXEL_CROP = 32


class PixelLossParams(StrictModel):
    """The loss of a tuning job: term weights (0 = off) and where and how often the pixel path runs."""

    ce: float = Field(
        1.0, ge=0, description="masked-token cross-entropy against the frozen tokenizer's codes of the truth"
    )
    sar: float = Field(
        0.0,
        ge=0,
        description="SAR consistency of the decoded image: 1 - mean of its SAR-edge and SAR-texture agreement "
        "(gac.sar_edges)",
    )
    l1: float = Field(0.0, ge=0, description="L1 to the truth, reflectance 0-1")
    ms_ssim: float = Field(0.0, ge=0, description="1 - MS-SSIM against the truth")
    spectral: float = Field(
        0.0,
        ge=0,
        description="spectral coherence: spectral angle + |NDVI error| + |NDWI error| (gac.losses.spectral_coherence)",
    )
    lpips: float = Field(
        0.0,
        ge=0,
        description="true-colour LPIPS; only where its trunk weights are cached, else off with the reason logged",
    )
    colour: float = Field(
        0.0, ge=0, description="colour consistency: per image and band, |mean gap| + |std gap| to the truth"
    )
    pixel_crop: int = Field(
        32, ge=0, description="side in px of the random token-aligned crop the pixel path decodes; 0 = the whole tile"
    )
    pixel_every: int = Field(
        1, ge=1, description="run the pixel path on every k-th training batch (validation always runs it)"
    )
    soft_temperature: float = Field(1.0, gt=0, description="softmax temperature of the soft FSQ codes the UNet decodes")

    @field_validator("pixel_crop")
    @classmethod
    def _crop_fits_tokens(cls, value: int) -> int:
        if value and (value % 16 or value < MIN_PIXEL_CROP):
            fix = max(MIN_PIXEL_CROP, -(-value // 16) * 16)
            raise ValueError(
                f"pixel_crop must be 0 (whole tile) or a multiple of 16 of at least {MIN_PIXEL_CROP} px; try {fix}"
            )
        return value

    @model_validator(mode="after")
    def _something_trains(self):
        if self.ce == 0 and not self.pixel_weights():
            raise ValueError("every loss weight is 0; give ce or a pixel term a positive weight")
        return self

    def pixel_weights(self) -> dict[str, float]:
        """The pixel-path terms with a positive weight."""
        return {name: getattr(self, name) for name in PIXEL_TERMS if getattr(self, name, 0.0) > 0}


class Stage3Loss(PixelLossParams):
    """Stage 3's default objective grounds in the radar: cross-entropy + SAR consistency + identity + L1."""

    sar: float = Field(1.0, ge=0, description=PixelLossParams.model_fields["sar"].description)
    identity: float = Field(
        0.5,
        ge=0,
        description="L1 to the input opt_v2, each pixel weighted by how well opt_v2 already agrees with the radar "
        "there (gac.sar_edges.agreement_map)",
    )
    l1: float = Field(1.0, ge=0, description=PixelLossParams.model_fields["l1"].description)
    spectral: float = Field(0.1, ge=0, description=PixelLossParams.model_fields["spectral"].description)
    pixel_every: int = Field(2, ge=1, description=PixelLossParams.model_fields["pixel_every"].description)


class Stage1FinetuneLoss(PixelLossParams):
    """The original project's stage-1 fine-tuning loss (L1 1, MS-SSIM 0.5, LPIPS 0.1, colour 0.5), beside the
    cross-entropy."""

    l1: float = Field(1.0, ge=0, description=PixelLossParams.model_fields["l1"].description)
    ms_ssim: float = Field(0.5, ge=0, description=PixelLossParams.model_fields["ms_ssim"].description)
    lpips: float = Field(0.1, ge=0, description=PixelLossParams.model_fields["lpips"].description)
    colour: float = Field(0.5, ge=0, description=PixelLossParams.model_fields["colour"].description)


class TuningParams(TrainingParams):
    """LoRA and selection knobs of a TerraMind tuning job, on top of the shared training knobs."""

    lr: float = Field(5e-4, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: Regex = Field(
        TERRAMIND_LORA_TARGETS, description="regex (full match) over TerraMind module names that get LoRA"
    )
    monitor: Literal[tuple(TUNING_MONITORS)] = Field(
        "gac_score",
        description="validation number for early stopping and the best checkpoint (gac_score: 0.5 SAR-edge + 0.5 "
        "PSNR/40 dB)",
    )
