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

from gac.schema import InferParams, SamplingParams, TerraMindGenerator, Weights
from gac.tuning.params import Stage3Loss, TuningParams


class Stage3InferParams(SamplingParams, InferParams):
    """How `gac ground` generates opt_v3 (stage 1's engine, gac.terramind): sampling and the inference block; none of
    it changes the adapter."""


class Stage3Params(TuningParams):
    model: TerraMindGenerator = "terramind_v1_tiny_generate"
    weights: Weights = "random"
    loss: Stage3Loss = Field(
        Stage3Loss(), description="the training objective's term weights and pixel-path settings (gac.tuning.objective)"
    )
    infer: Stage3InferParams = Stage3InferParams()

    def training_dict(self) -> dict:
        """The keys that shape the trained adapter (all but `infer`)."""
        return self.model_dump(mode="json", exclude={"infer"})
