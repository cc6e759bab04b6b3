"""Stage-1 fine-tuning params (section `stage1_finetune`).

Which generator is tuned (model, weights, S1 input) is stage 1's (`stage1`);
this section says whether it is tuned and how: LoRA, loss, training knobs.
Its loss defaults are the original project's for this job (L1 1, MS-SSIM
0.5, LPIPS 0.1, colour consistency 0.5, beside the token cross-entropy); it
has no `identity` term, since stage 1 takes S1 alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gac.tuning.params import TUNING_MONITORS, Stage1FinetuneLoss, TuningParams


class Stage1FinetuneParams(TuningParams):
    enabled: bool = Field(False, description="fine-tune stage 1's generator before `gac generate` uses it")
    max_epochs: int = Field(3, ge=1)
    loss: Stage1FinetuneLoss = Field(
        Stage1FinetuneLoss(),
        description="the training objective's term weights and pixel-path settings (gac.tuning.objective)",
    )
    monitor: Literal[tuple(TUNING_MONITORS)] = Field(
        "loss", description="validation number for early stopping and the best checkpoint"
    )

    def training_dict(self) -> dict:
        """The keys that shape the fine-tuned adapter (all but `enabled`)."""
        return self.model_dump(mode="json", exclude={"enabled"})
