"""The building blocks of every params section: strict models, shared field types, the training knobs.

The per-stage schemas (gac/<stage>/params.py) import from here and gac.params
imports them, so the dependency runs one way and there is no import cycle.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gac.device import DeviceChoice, Precision


class StrictModel(BaseModel):
    """Rejects unknown keys; params are values, so they are frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_weights_source(value: str) -> str:
    """`random`, `hf` (local Hugging Face cache, hub offline) or a path to local files."""
    if value in ("random", "hf"):
        return value
    if not value or value.strip() != value:
        raise ValueError("weights must be 'random', 'hf' or a path to local weight files")
    return value


def check_regex(value: str) -> str:
    """A regex param (LoRA targets) must compile: peft's own error for a bad one is obscure."""
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression ({exc})") from None
    return value


def check_tile_side(value: int) -> int:
    """A tile side the models take: TerraMind and Prithvi cut images into 16 px patches."""
    if value % 16:
        raise ValueError(
            f"{value} is not a multiple of 16 (TerraMind and Prithvi use 16 px patches); try "
            f"{max(16, value // 16 * 16)}"
        )
    return value


Weights = Annotated[str, AfterValidator(check_weights_source)]
TileSide = Annotated[int, AfterValidator(check_tile_side)]
Regex = Annotated[str, AfterValidator(check_regex)]
TerraMindGenerator = Literal[
    "terramind_v1_tiny_generate",
    "terramind_v1_small_generate",
    "terramind_v1_base_generate",
    "terramind_v1_large_generate",
]


class TrainingParams(StrictModel):
    """Knobs shared by the trainable stages; Lightning's Trainer acts on them."""

    batch_size: int = Field(4, ge=1)
    accumulate_grad_batches: int = Field(1, ge=1)
    max_epochs: int = Field(5, ge=1)
    max_steps: int = Field(-1, ge=-1, description="-1: no step limit, max_epochs decides")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(5, ge=0)
    early_stopping_patience: int = Field(3, ge=1)
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true"] = "32-true"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    strategy: str = "auto"
    num_workers: int = Field(0, ge=0)


class SamplingParams(StrictModel):
    """How TerraMind samples S2L2A tokens and decodes them to pixels (gac.terramind.Decoding); shared by every section
    that generates."""

    timesteps: int = Field(2, ge=1, le=1000, description="diffusion (DDIM) steps of the S2L2A tokenizer's decoder")
    decoding_steps: int = Field(1, ge=1, description="iterative (MaskGIT-style) token decoding steps")
    temperature: float = Field(1.0, ge=0, description="token sampling temperature; 0 = most likely token")
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = no top-k filter")

    def sampling(self) -> dict:
        """These keys as gac.terramind.Decoding takes them."""
        return {name: getattr(self, name) for name in SamplingParams.model_fields}


class InferParams(StrictModel):
    """How a model is applied (never how it is trained): the one inference block of every section that runs a model
    (`stage1.infer`, `stage2.infer`, `stage3.infer`, `baseline.infer`, `translate.infer`). Sections subclass it for
    their own default batch size."""

    batch_size: int = Field(4, ge=1, description="tiles per forward pass")
    device: DeviceChoice = Field(
        "auto", description="auto: this rank's CUDA GPU when present, else Apple MPS, else CPU (gac.device)"
    )
    precision: Precision = Field(
        "auto",
        description="autocast dtype: bf16, 16, 32 or auto. CUDA: as named (auto = bf16). CPU: bf16 only where the CPU "
        "has native bf16 (AVX512-BF16/AMX), else float32 with one log line (emulated bf16 is many times slower); auto "
        "= bf16 there only within gac.device's measured quality bound; 16 runs float32. MPS: float32 (gac.device)",
    )


# Validation numbers a training stage can select its checkpoint and stop early on, and which way is better: every
# stage logs these (gac.metrics.validation_scores: gac evaluate's own definitions, per tile, averaged); a stage may add
# the terms of its own loss.
VALIDATION_MONITORS = {"loss": "min", "gac_score": "max", "psnr": "max", "sar_edge": "max", "sam_deg": "min"}
