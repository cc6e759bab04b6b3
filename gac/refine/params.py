"""Stage 2 params (section `stage2`).

Everything but `infer` shapes the trained model, so `train-stage2` depends on
those keys and `refine` on `infer` alone (plus the trained model's own JSON):
changing how inference runs never retrains.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gac.data.store import PRITHVI_BANDS, S2_BANDS
from gac.schema import VALIDATION_MONITORS, InferParams, Regex, StrictModel, TrainingParams, Weights


class Stage2InferParams(InferParams):
    """How `gac refine` runs; none of it changes the trained model."""

    batch_size: int = Field(8, ge=1, description=InferParams.model_fields["batch_size"].description)


class Stage2Loss(StrictModel):
    """Stage 2's loss: term weights (0 = off) against the truth, reflectance 0-1."""

    l1: float = Field(1.0, ge=0)
    ms_ssim: float = Field(0.2, ge=0, description="1 - MS-SSIM")
    sam: float = Field(0.1, ge=0, description="spectral angle, radians")
    lpips: float = Field(
        0.1, ge=0, description="true-colour LPIPS; used only where its trunk weights are cached (logged otherwise)"
    )
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"

    def weights(self) -> dict[str, float]:
        return {"l1": self.l1, "ms_ssim": self.ms_ssim, "sam": self.sam, "lpips": self.lpips}


# What stage 2 can select its checkpoint on: the shared validation numbers, and its own loss terms.
STAGE2_MONITORS = {**VALIDATION_MONITORS, "l1": "min", "ms_ssim": "min"}


class Stage2Params(TrainingParams):
    backbone: str = Field("prithvi_eo_v2_tiny_tl", description="a Prithvi-EO-2.0 backbone in terratorch's registry")
    weights: Weights = "random"
    bands: tuple[str, ...] = Field(PRITHVI_BANDS, description="opt_v1 bands fed to the backbone, by Sentinel-2 name")
    use_sar: bool = Field(False, description="add S1 VV, VH as extra input channels")
    backbone_8bit: bool = Field(False, description="frozen backbone Linear layers as bitsandbytes Linear8bitLt")
    activation_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="the memory mode: recompute each backbone block's activations, and the head's MLPs in bands of "
        "rows, in "
        "backward instead of keeping them, and hand the heap each training step frees back to the OS; auto: on with "
        "backbone_8bit",
    )
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: Regex = Field(
        r"blocks\.\d+\.attn\.(qkv|proj)", description="regex matched in full against backbone module names"
    )
    unfreeze_last_blocks: int = Field(0, ge=0, description="train the last N transformer blocks fully (kept fp32)")
    feature_levels: int = Field(4, ge=1, le=4, description="evenly spaced blocks (ending at the last) feeding the head")
    head_channels: int = Field(64, ge=8)
    metadata: bool = Field(True, description="FiLM-condition the head on month and location")
    loss: Stage2Loss = Stage2Loss()
    monitor: Literal[tuple(STAGE2_MONITORS)] = Field(
        "loss", description="validation metric for early stopping and the best checkpoint"
    )
    infer: Stage2InferParams = Stage2InferParams()

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [b for b in value if b not in S2_BANDS]
        if unknown:
            raise ValueError(f"band {unknown[0]!r} does not exist; use Sentinel-2 names from {', '.join(S2_BANDS)}")
        if len(set(value)) != len(value) or not value:
            raise ValueError("give each band once, at least one")
        return tuple(value)

    @model_validator(mode="after")
    def _monitor_is_logged(self):
        if self.monitor in ("l1", "ms_ssim") and getattr(self.loss, self.monitor) == 0:
            raise ValueError(
                f"monitor '{self.monitor}' is a loss term with weight 0, so it is never logged; "
                f"give loss.{self.monitor} a weight or monitor loss or psnr"
            )
        return self

    def training_dict(self) -> dict:
        """The keys that shape the trained model (all but `infer`), as recorded beside it."""
        return self.model_dump(mode="json", exclude={"infer"})
