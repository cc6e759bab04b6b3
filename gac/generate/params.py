"""Stage 1 params (section `stage1`).

Defaults give the best results the models allow: the diffusion decoder is
uncapped (`capped_decoder: false`), decoding is iterative when
`decoding_steps > 1`. `timesteps` and `decoding_steps` are small because the
demo runs on CPU; with real weights on a GPU, 10-50 DDIM steps and 4-8
decoding steps are the usual range.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gac.schema import StrictModel, TerraMindGenerator, Weights


class Stage1Params(StrictModel):
    model: TerraMindGenerator = "terramind_v1_tiny_generate"
    input: Literal["S1GRD", "S1RTC"] = "S1RTC"
    weights: Weights = Field("random", description="'random' (demo), 'hf' (local HF cache, offline) or a directory with the hub's .pt files")
    timesteps: int = Field(2, ge=1, le=1000, description="diffusion (DDIM) steps of the S2L2A tokenizer's decoder")
    decoding_steps: int = Field(1, ge=1, description="iterative (MaskGIT-style) token decoding steps")
    temperature: float = Field(1.0, ge=0, description="token sampling temperature; 0 = most likely token")
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = no top-k filter")
    capped_decoder: bool = Field(False, description="upstream's diffusion thresholding (output capped at band mean +/- 1 std); false removes the cap")
    batch_size: int = Field(4, ge=1)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    precision: Literal["32", "bf16", "16"] = Field("bf16", description="autocast dtype on CUDA; CPU always runs float32")
    finetune: bool = Field(False, description="fine-tune the generator through stage 3's differentiable path")
