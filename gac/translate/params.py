"""`translate` params: how whole scenes are cut, run and stitched; read by `gac translate` only.

Nothing here changes a trained model, so `dvc exp run -S translate.overlap=32`
re-runs the translate stage and nothing upstream. The sampling settings are
the translation's own (stage 1 and stage 3 generate with them), as
`stage3.infer` is for `gac ground`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gac.schema import InferParams, SamplingParams, TileSide

# What `until` runs: the stages up to it, in order (the one list of them; gac.translate.chain builds these).
STAGES = {
    "v1": ("stage1",),
    "v2": ("stage1", "stage2"),
    "v3": ("stage1", "stage2", "stage3"),
    "baseline": ("baseline",),
}
Until = Literal[tuple(STAGES)]
SCL_CLOUD_CLASSES = (
    3,
    8,
    9,
    10,
)  # Sentinel-2 scene classification: cloud shadow, cloud medium / high probability, thin cirrus


class TranslateParams(SamplingParams):
    """The sampling keys (timesteps, decoding_steps, temperature, top_p, top_k) come from SamplingParams;
    temperature 0 also means no spread between uncertainty samples."""

    scenes: list[str] | None = Field(
        None,
        description="S1 GeoTIFFs (or directories of them) the DVC stage "
        "translates; null: the data source's test-split scenes (the demo: its first)",
    )
    until: Until = Field(
        "v3",
        description="last stage run: v1 (stage 1), v2 (+ refiner), v3 (+ grounding, the full pipeline), or baseline "
        "(the supervised U-Net alone)",
    )
    tile_size: TileSide | None = Field(
        None,
        ge=16,
        description="model tile side in px, a multiple of 16; null = tile.size (what the models were trained on)",
    )
    overlap: int = Field(16, ge=0, description="px shared by neighbouring tiles, blended across")
    blend: Literal["cosine", "linear"] = Field("cosine", description="weight ramp across an overlap")
    block_size: int = Field(
        1024,
        ge=16,
        description="output px per side processed (and held in memory) at once; peak memory follows it, not the scene",
    )
    infer: InferParams = InferParams()
    uncertainty: int = Field(
        1, ge=1, description="token-sampling runs per tile; >= 2 writes <stem>_uncertainty.tif (per-band std)"
    )
    reproject: bool = Field(
        False, description="an S1 scene not on a 10 m grid is reprojected to 10 m in its own UTM zone (else: an error)"
    )
    cloud_classes: list[int] = Field(
        list(SCL_CLOUD_CLASSES), description="SCL classes gap-filling replaces (a 0/1 mask: 1 is replaced)"
    )
    feather: int = Field(
        3,
        ge=0,
        description="px outside a cloud mask's edge over which the translation fades "
        "into the S2 scene (masked pixels take it whole)",
    )

    @model_validator(mode="after")
    def _overlap_fits(self) -> "TranslateParams":
        if self.tile_size is not None and self.overlap * 2 > self.tile_size:
            raise ValueError(
                f"overlap {self.overlap} is more than half of tile_size {self.tile_size}; use at most "
                f"{self.tile_size // 2}"
            )
        return self
