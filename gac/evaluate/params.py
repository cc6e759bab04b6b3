"""Evaluation params (section `evaluate`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gac.schema import StrictModel

# Prediction stores evaluate knows, each read from data/<name>.zarr.
Variant = Literal["opt_v1", "opt_v2", "opt_v3", "opt_v3_on_v1", "baseline"]
ALL_VARIANTS: tuple[str, ...] = ("opt_v1", "opt_v2", "opt_v3", "opt_v3_on_v1", "baseline")


class SarEdgeParams(StrictModel):
    """The SAR-edge agreement's knobs (gac.sar_edges): Lee window and looks, edge tolerance blur."""

    window: int = Field(7, ge=3, description="Lee filter window, odd, px")
    looks: float = Field(4.4, gt=0, description="equivalent number of looks of the S1 product (speckle strength)")
    sigma: float = Field(1.0, ge=0, description="Gaussian tolerance blur of both edge maps, px")

    @field_validator("window")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"Lee window must be odd; try {value + 1}")
        return value


class EvaluateParams(StrictModel):
    split: Literal["train", "val", "test"] = "test"
    variants: list[Variant] = Field(default_factory=lambda: list(ALL_VARIANTS), min_length=1)
    allow_missing: bool = Field(False, description="skip variants whose store does not exist (else: an error)")
    tokenizer_ceiling: bool = Field(
        True,
        description="also score the ground truth encoded and decoded by the S2L2A tokenizer (stage1 model/weights)",
    )
    lpips: bool = Field(True, description="LPIPS where its trunk weights are cached (never downloaded)")
    sar_edge: SarEdgeParams = SarEdgeParams()
    quicklooks: int = Field(
        16, ge=1, description="tiles drawn as quicklook PNGs and on the contact sheet (the split's first N)"
    )
    bootstrap_resamples: int = Field(
        1000,
        ge=100,
        description="bootstrap resamples of the test tiles for intervals and paired differences (seeded by `seed`)",
    )
    bootstrap_unit: Literal["block", "scene", "tile"] = Field(
        "block",
        description="what the bootstrap and the paired tests resample: block (the tiles' map block, every "
        "date of that ground: tiles.zarr's `block`), scene, or tile (as if tiles were independent: too narrow)",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="level of the bootstrap intervals")
    cogs: bool = Field(
        True,
        description="write every variant's tiles of the split as Cloud-Optimized GeoTIFFs (false: cogs/ holds only a "
        "note)",
    )

    @field_validator("variants")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("variants are listed twice; list each once")
        return value
