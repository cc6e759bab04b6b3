"""Stage 3 params (section `stage3`).

Training knobs come from the shared `TrainingParams`; the rest say which
TerraMind to ground, where LoRA goes and what the loss is made of. How `gac
ground` generates is `infer`, which only `ground` / `ground-on-v1` read
(dvc.yaml lists train-stage3's keys one by one, without it), so changing a
sampling setting never retrains. Which S1 product the tiles hold (`S1RTC`/`S1GRD`) is a
property of the data and is read from `stage1.input`, not repeated here.
"""

from __future__ import annotations


from pydantic import Field

from gac.device import DeviceChoice, Precision
from gac.schema import Regex, StrictModel, TerraMindGenerator, TrainingParams, Weights
from gac.tuning.lora import TERRAMIND_LORA_TARGETS
from gac.tuning.params import PixelTerms

# peft matches `target_modules` as a full-match regex against module names of
# the bare TerraMindGeneration. Anchored on `sampler.model` so the S2L2A
# tokenizer's own attention layers (`tokenizer.*.attn.*`) are never adapted.
DEFAULT_LORA_TARGETS = TERRAMIND_LORA_TARGETS


class Stage3InferParams(StrictModel):
    """How `gac ground` generates opt_v3 (stage 1's engine, gac.terramind.generate); none of it changes the adapter."""

    timesteps: int = Field(2, ge=1, le=1000, description="diffusion (DDIM) steps of the S2L2A tokenizer's decoder")
    decoding_steps: int = Field(1, ge=1, description="iterative (MaskGIT-style) token decoding steps")
    temperature: float = Field(1.0, ge=0, description="token sampling temperature; 0 = most likely token")
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = no top-k filter")
    batch_size: int = Field(4, ge=1)
    device: DeviceChoice = Field("auto", description="auto: CUDA when present, else CPU (gac.device)")
    precision: Precision = Field("bf16", description="autocast dtype on CUDA; CPU always runs float32")


class Stage3Params(TrainingParams):
    model: TerraMindGenerator = "terramind_v1_tiny_generate"
    weights: Weights = "random"
    lr: float = Field(5e-4, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: Regex = Field(DEFAULT_LORA_TARGETS, description="regex (full match) over TerraMind module names that get LoRA")
    pixel_weight: float = Field(
        0.0, ge=0, description="weight of the differentiable pixel loss next to the cross-entropy; 0 = cross-entropy only; >0 makes a step several times slower (bench/bench_stage3.py)"
    )
    pixel_terms: PixelTerms = Field(
        default_factory=lambda: {"l1": 1.0, "ms_ssim": 0.5}, description="weights of the pixel loss terms (gac.losses), reflectance 0-1"
    )
    sar_weight: float = Field(0.1, ge=0, description="SAR-consistency term (gac.sar_edges) inside the pixel loss")
    soft_temperature: float = Field(1.0, gt=0, description="softmax temperature of the soft FSQ codes in the pixel path")
    infer: Stage3InferParams = Stage3InferParams()

    def training_dict(self) -> dict:
        """The keys that shape the trained adapter (all but `infer`)."""
        return self.model_dump(mode="json", exclude={"infer"})
