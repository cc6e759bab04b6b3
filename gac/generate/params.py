"""Stage 1 params (section `stage1`).

The defaults are sized for the CPU demo, not for quality: 2 DDIM steps and
one decoding step keep it within minutes. With real weights on a GPU, 10-50
DDIM steps and 4-8 decoding steps are the usual range (profiles/gpu.yaml).
What is never traded away: the diffusion decoder is uncapped
(`capped_decoder: false`) and decoding is iterative when `decoding_steps > 1`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gac.schema import InferParams, SamplingParams, TerraMindGenerator, Weights


class Stage1Params(SamplingParams):
    model: TerraMindGenerator = "terramind_v1_tiny_generate"
    input: Literal["S1GRD", "S1RTC"] = "S1RTC"
    weights: Weights = Field(
        "random", description="'random' (demo), 'hf' (local HF cache, offline) or a directory with the hub's .pt files"
    )
    capped_decoder: bool = Field(
        False,
        description="upstream's diffusion thresholding (output capped at band mean +/- 1 std); false removes the cap",
    )
    infer: InferParams = InferParams()
