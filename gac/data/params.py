"""Params of the data the pipeline starts from (section `data`) and of how it is cut into tiles (section `tile`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from gac.schema import StrictModel, TileSide

S1_UNITS = ("db", "linear", "amplitude")  # what S1 files may hold; GAC converts each to dB


class DataParams(StrictModel):
    source: str = Field(
        "demo",
        description="'demo' (synthetic scenes), a directory of paired S1*/ S2*/ GeoTIFFs, or "
        "bigearthnet:<root> (BigEarthNet v1 or v2 in its own layout, read where it lies)",
    )
    demo_scenes: int = Field(3, ge=1)
    demo_size: int = Field(256, ge=32, description="demo scene side in pixels (10 m)")
    landcover: str | None = Field(
        None,
        description="a land-cover raster (integer classes, any CRS) resampled nearest onto every S2 scene; null: none (the demo has its own)",
    )
    landcover_classes: dict[int, str] = Field(
        default_factory=dict, description="names of data.landcover's class codes, e.g. {10: tree cover, 80: water}"
    )
    split: Literal["blocks", "official"] = Field(
        "blocks",
        description="blocks: train/val/test drawn per block of the map (tile.split_block, tile.split_gap); "
        "official: the archive's own split (bigearthnet: v2), comparable with published results",
    )

    @field_validator("split")
    @classmethod
    def _official_needs_an_archive(cls, value: str, info: ValidationInfo) -> str:
        if value == "official" and not str(info.data.get("source", "")).startswith("bigearthnet:"):
            raise ValueError(
                "official needs an archive that ships its split (data.source: bigearthnet:<root>, v2); "
                "use split: blocks"
            )
        return value

    max_tiles: int | None = Field(
        None, ge=3, description="keep at most this many tiles, a fixed subset drawn per split (quick runs); null = all"
    )
    s1_units: Literal[S1_UNITS] = Field(
        "db",
        description="units of the S1 files: dB, linear power or amplitude; GAC converts to dB "
        "(10*log10(power) = 20*log10(amplitude)); `gac translate --s1-units` overrides it for one run",
    )
    s1_nodata: float | Literal["auto"] = Field(
        "auto",
        description="an S1 value that means nodata, in the files' units; auto: the file's declared nodata, "
        "0 in linear/amplitude, 0 dB in both bands (non-finite values are nodata whatever this says)",
    )
    s2_offset: Literal["auto", 0, 1000] = Field(
        "auto",
        description="S2 L2A DN offset removed per scene: auto reads it from the scene's metadata "
        "(BOA_ADD_OFFSET, processing baseline N0400+ in the product name), else from its values; 0 or 1000 forces "
        "it (and a scene whose values show no offset is refused with 1000)",
    )


class TileParams(StrictModel):
    size: TileSide = Field(64, ge=16, description="tile side in px, a multiple of 16")
    stride: int = Field(64, ge=1)
    max_nodata: float = Field(0.05, ge=0, le=1, description="largest nodata/NaN share a kept tile may have")
    reproject: bool = Field(False, description="reproject S1 onto the S2 grid when they differ")
    split_block: int = Field(
        128,
        ge=16,
        description="side in px of the square blocks of the map (CRS + grid cell: "
        "every date of one place in one split) that train/val/test are drawn by",
    )
    val_fraction: float = Field(0.2, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    split_gap: int = Field(
        0,
        ge=0,
        description="blocks left out as a buffer between splits: a train or val block within this many "
        "blocks of a val or test block (test > val > train) is dropped with its tiles; 0 = none",
    )
    shard_tiles: int = Field(64, ge=1, description="tiles per Zarr v3 shard (one file on disk)")
    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="processes reading an archive (data.source: bigearthnet:...) in parallel; auto: "
        "min(4, CPUs), 0 or 1: in the stage's own process. Only speed: the tile store's bytes are the same for any "
        "count, so dvc.yaml leaves it out of the tile stage's params and changing it re-runs nothing",
    )

    def worker_count(self) -> int:
        """`workers` as a number of processes (1: in process)."""
        if self.workers != "auto":
            return max(1, self.workers)
        import os

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(4, cpus)
