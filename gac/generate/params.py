"""Stage 1 params (section `stage1`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gac.params import StrictModel, check_weights_source


class Stage1Params(StrictModel):
    model: Literal[
        "terramind_v1_tiny_generate",
        "terramind_v1_small_generate",
        "terramind_v1_base_generate",
        "terramind_v1_large_generate",
    ] = "terramind_v1_tiny_generate"
    input: Literal["S1GRD", "S1RTC"] = "S1RTC"
    weights: str = "random"
    timesteps: int = Field(2, ge=1, description="diffusion (DDIM) steps of the S2L2A tokenizer's decoder")
    decoding_steps: int = Field(1, ge=1, description="iterative (MaskGIT-style) token decoding steps")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    batch_size: int = Field(4, ge=1)
    finetune: bool = Field(False, description="fine-tune the generator through stage 3's differentiable path")

    _weights = field_validator("weights")(classmethod(lambda cls, v: check_weights_source(v)))
