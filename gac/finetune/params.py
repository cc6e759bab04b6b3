"""Stage-1 fine-tuning params (section `stage1_finetune`).

Which generator is tuned (model, weights, S1 input) is stage 1's (`stage1`);
this section says whether it is tuned and how: LoRA, loss, training knobs.
"""

from __future__ import annotations

from pydantic import Field

from gac.schema import Regex, TrainingParams
from gac.tuning.lora import TERRAMIND_LORA_TARGETS
from gac.tuning.params import PixelTerms


class Stage1FinetuneParams(TrainingParams):
    enabled: bool = Field(False, description="fine-tune stage 1's generator before `gac generate` uses it")
    max_epochs: int = Field(3, ge=1)
    lr: float = Field(5e-4, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: Regex = Field(TERRAMIND_LORA_TARGETS, description="regex (full match) over TerraMind module names that get LoRA")
    pixel_weight: float = Field(0.0, ge=0, description="weight of the differentiable pixel loss next to the cross-entropy; 0 = cross-entropy only")
    pixel_terms: PixelTerms = Field(default_factory=lambda: {"l1": 1.0, "ms_ssim": 0.5}, description="pixel loss term weights (gac.losses)")
    sar_weight: float = Field(0.0, ge=0, description="SAR-consistency term (gac.sar_edges) inside the pixel loss")
    soft_temperature: float = Field(1.0, gt=0, description="softmax temperature of the soft FSQ codes in the pixel path")

    def training_dict(self) -> dict:
        """The keys that shape the fine-tuned adapter (all but `enabled`)."""
        return self.model_dump(mode="json", exclude={"enabled"})
