"""Typed, strict params: every knob of the pipeline, validated before any work starts.

DVC accepts any key `dvc exp run -S` is given, so a typo such as
`stage2.lora_rnak=16` would silently train with the default rank. Loading
through these schemas (unknown keys are errors, types are checked) turns that
into one line naming the key and the keys allowed there.

Each stage owns its section's schema in its own subpackage, built from the
blocks in gac.schema; this module holds the root that ties them together.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from gac.baseline.params import BaselineParams
from gac.errors import GacError
from gac.evaluate.params import EvaluateParams
from gac.finetune.params import Stage1FinetuneParams
from gac.generate.params import Stage1Params
from gac.ground.params import Stage3Params
from gac.refine.params import Stage2Params
from gac.translate.params import TranslateParams
# The shared building blocks live in gac.schema (the stage schemas import them from there, so nothing
# imports back into this module); re-exported for callers that import them from here.
from gac.schema import Regex, StrictModel, TerraMindGenerator, TrainingParams, Weights, check_regex, check_weights_source  # noqa: F401

DEFAULT_PARAMS = Path("params.yaml")


class DataParams(StrictModel):
    source: str = Field("demo", description="'demo' (synthetic scenes) or a directory of paired S1*/ S2*/ GeoTIFFs")
    demo_scenes: int = Field(3, ge=1)
    demo_size: int = Field(256, ge=32, description="demo scene side in pixels (10 m)")
    landcover: str | None = Field(None, description="a land-cover raster (integer classes, any CRS) resampled nearest onto every S2 scene; null: none (the demo has its own)")
    landcover_classes: dict[int, str] = Field(default_factory=dict, description="names of data.landcover's class codes, e.g. {10: tree cover, 80: water}")
    max_tiles: int | None = Field(
        None, ge=3, description="keep at most this many tiles, a fixed subset drawn per split (quick runs); null = all"
    )
    s2_offset: int = Field(
        0, ge=0, description="subtracted from every S2 L2A DN before use: 1000 for products of processing baseline 04.00+ "
        "(January 2022 on) that still carry BOA_ADD_OFFSET; 0 for TerraMesh / harmonised data and the demo",
    )


class TileParams(StrictModel):
    size: int = Field(64, ge=16)
    stride: int = Field(64, ge=1)
    max_nodata: float = Field(0.05, ge=0, le=1, description="largest nodata/NaN share a kept tile may have")
    reproject: bool = Field(False, description="reproject S1 onto the S2 grid when they differ")
    split_block: int = Field(128, ge=16, description="side in px of the square blocks that train/val/test are drawn by")
    val_fraction: float = Field(0.2, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    shard_tiles: int = Field(64, ge=1, description="tiles per Zarr v3 shard (one file on disk)")

    @field_validator("size")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"tile size {value} is not a multiple of 16 (TerraMind and Prithvi use 16 px patches); try {max(16, value // 16 * 16)}")
        return value


def _stage_schemas() -> dict[str, type[StrictModel]]:
    return {"stage1": Stage1Params, "stage1_finetune": Stage1FinetuneParams, "stage2": Stage2Params, "stage3": Stage3Params,
            "baseline": BaselineParams, "evaluate": EvaluateParams, "translate": TranslateParams}


def _build_root() -> type[StrictModel]:
    from pydantic import create_model

    stages = _stage_schemas()
    fields: dict[str, Any] = {
        "seed": (int, 42),
        "deterministic": (bool, False),
        "data": (DataParams, DataParams()),
        "tile": (TileParams, TileParams()),
    }
    fields.update({name: (schema, schema()) for name, schema in stages.items()})
    return create_model("Params", __base__=StrictModel, **fields)


_ROOT: type[StrictModel] | None = None


def params_schema() -> type[StrictModel]:
    global _ROOT
    if _ROOT is None:
        _ROOT = _build_root()
    return _ROOT


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema class that owns the key at `loc` (for listing allowed keys)."""
    model: type[BaseModel] | None = params_schema()
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model else None
        annotation = getattr(field, "annotation", None)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _one_line(error: dict[str, Any], source: Path) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        owner = _model_at(loc)
        allowed = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        where = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"{source}: unknown key '{key}'; {hint}allowed in {where}: {', '.join(allowed)}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {key}: {message} (got {error.get('input')!r})"


def validate_params(raw: dict[str, Any], source: Path = DEFAULT_PARAMS):
    try:
        return params_schema().model_validate(raw or {})
    except ValidationError as exc:
        raise GacError(_one_line(exc.errors()[0], source)) from None


def load_params(path: Path | str = DEFAULT_PARAMS):
    """Read and validate params.yaml; every stage calls this, so a bad key stops any stage."""
    path = Path(path)
    if not path.is_file():
        raise GacError(f"{path}: params file not found; run from the project root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise GacError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if raw is not None and not isinstance(raw, dict):
        raise GacError(f"{path}: expected a mapping of sections (seed, data, tile, stage1, ...)")
    return validate_params(raw, path)


def params_hash(params: BaseModel, sections: list[str] | None = None) -> str:
    """A short, stable digest of the validated params (or some sections): outputs carry it."""
    dumped = params.model_dump(mode="json")
    if sections is not None:
        dumped = {name: dumped[name] for name in sections}
    return json_digest(dumped)


def json_digest(data: Any) -> str:
    """A short, stable digest of JSON-able params (keys sorted): the hash every output records."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
