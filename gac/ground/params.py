"""Stage 3 params (section `stage3`).

Training, LoRA and selection knobs come from the shared `TuningParams`; the
rest say which TerraMind to ground and what the loss is made of (`loss`). How `gac
ground` generates is `infer`, which only `ground` / `ground-on-v1` read
(dvc.yaml lists train-stage3's keys one by one, without it), so changing a
sampling setting never retrains. Which S1 product the tiles hold (`S1RTC`/`S1GRD`) is a
property of the data and is read from `stage1.input`, not repeated here.
"""

from __future__ import annotations

from pydantic import Field

from gac.device import DeviceChoice, Precision
from gac.schema import StrictModel, TerraMindGenerator, Weights
from gac.tuning.params import Stage3Loss, TuningParams


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


class Stage3Params(TuningParams):
    model: TerraMindGenerator = "terramind_v1_tiny_generate"
    weights: Weights = "random"
    loss: Stage3Loss = Field(Stage3Loss(), description="the training objective's term weights and pixel-path settings (gac.tuning.objective)")
    infer: Stage3InferParams = Stage3InferParams()

    def training_dict(self) -> dict:
        """The keys that shape the trained adapter (all but `infer`)."""
        return self.model_dump(mode="json", exclude={"infer"})
