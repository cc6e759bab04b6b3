"""Stage 3 params (section `stage3`).

Training knobs come from the shared `TrainingParams`; the rest say which
TerraMind to ground, where LoRA goes, what the loss is made of, and how
`gac ground` generates. Which S1 product the tiles hold (`S1RTC`/`S1GRD`) is a
property of the data and is read from `stage1.input`, not repeated here.
"""

from __future__ import annotations


from pydantic import Field, field_validator

from gac.schema import Regex, TerraMindGenerator, TrainingParams, Weights

# peft matches `target_modules` as a full-match regex against module names of
# the bare TerraMindGeneration. Anchored on `sampler.model` so the S2L2A
# tokenizer's own attention layers (`tokenizer.*.attn.*`) are never adapted.
DEFAULT_LORA_TARGETS = r"sampler\.model\.decoder\.\d+\.cross_attn\.(q|kv|proj)"
PIXEL_TERMS = ("l1", "ms_ssim", "sam", "lpips")


class Stage3Params(TrainingParams):
    model: TerraMindGenerator = "terramind_v1_tiny_generate"
    weights: Weights = "random"
    lr: float = Field(5e-4, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: Regex = Field(DEFAULT_LORA_TARGETS, description="regex (full match) over TerraMind module names that get LoRA")
    pixel_weight: float = Field(
        0.0, ge=0, description="weight of the differentiable pixel loss next to the cross-entropy; 0 = cross-entropy only (~10x cheaper)"
    )
    pixel_terms: dict[str, float] = Field(
        default_factory=lambda: {"l1": 1.0, "ms_ssim": 0.5}, description="weights of the pixel loss terms (gac.losses), reflectance 0-1"
    )
    sar_weight: float = Field(0.1, ge=0, description="SAR-consistency term (gac.sar_edges) inside the pixel loss")
    soft_temperature: float = Field(1.0, gt=0, description="softmax temperature of the soft FSQ codes in the pixel path")
    timesteps: int = Field(2, ge=1, description="diffusion (DDIM) steps when `gac ground` detokenises")
    decoding_steps: int = Field(1, ge=1, description="iterative token decoding steps in `gac ground`")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(0, ge=0)

    @field_validator("pixel_terms")
    @classmethod
    def _terms(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(PIXEL_TERMS))
        if unknown:
            raise ValueError(f"unknown pixel loss term(s) {unknown}; use {', '.join(PIXEL_TERMS)}")
        if any(v < 0 for v in value.values()):
            raise ValueError("pixel loss weights must be >= 0")
        return value
