"""Stage 3 params (section `stage3`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from gac.params import TrainingParams, check_weights_source


class Stage3Params(TrainingParams):
    model: str = "terramind_v1_tiny_generate"
    weights: str = "random"
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)

    _weights = field_validator("weights")(classmethod(lambda cls, v: check_weights_source(v)))
