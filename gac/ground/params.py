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
from gac.schema import SamplingParams, TerraMindGenerator, Weights
from gac.tuning.params import Stage3Loss, TuningParams


class Stage3InferParams(SamplingParams):
    """How `gac ground` generates opt_v3 (stage 1's engine, gac.terramind.generate); none of it changes the adapter."""

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
