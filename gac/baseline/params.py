"""Baseline params (section `baseline`).

Every key but `enabled` and `infer` shapes the trained network; `infer` only
changes how `gac predict-baseline` runs. `enabled: false` skips the baseline:
both stages then write a small record saying so, and evaluate leaves the
variant out.
"""

from __future__ import annotations

from pydantic import Field

from gac.schema import InferParams, TrainingParams


class BaselineInferParams(InferParams):
    batch_size: int = Field(16, ge=1, description=InferParams.model_fields["batch_size"].description)


class BaselineParams(TrainingParams):
    enabled: bool = Field(True, description="false: train and predict nothing; evaluate skips the baseline")
    channels: int = Field(16, ge=4, description="feature maps at full resolution; doubled at each level down")
    depth: int = Field(
        3, ge=1, le=6, description="down-sampling levels of the U-Net (tile size must divide by 2^depth)"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the decoder (pix2pix uses 0.5 as its noise)")
    gan_weight: float = Field(
        0.0, ge=0, description="weight of the PatchGAN term beside L1 (pix2pix: 1 vs L1 100); 0 = pure L1"
    )
    disc_channels: int = Field(32, ge=4, description="PatchGAN discriminator width (used when gan_weight > 0)")
    infer: BaselineInferParams = BaselineInferParams()

    def training_dict(self) -> dict:
        """The keys that shape the trained network, as recorded beside it."""
        return self.model_dump(mode="json", exclude={"infer", "enabled"})
