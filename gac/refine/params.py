"""Stage 2 params (section `stage2`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from gac.params import TrainingParams, check_weights_source


class Stage2Params(TrainingParams):
    backbone: str = "prithvi_eo_v2_tiny_tl"
    weights: str = "random"
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)

    _weights = field_validator("weights")(classmethod(lambda cls, v: check_weights_source(v)))
