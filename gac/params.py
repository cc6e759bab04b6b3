"""Typed, strict params: every knob of the pipeline, validated before any work starts.

DVC accepts any key `dvc exp run -S` is given, so a typo such as
`stage2.lora_rnak=16` would silently train with the default rank. Loading
through these schemas (unknown keys are errors, types are checked) turns that
into one line naming the key and the keys allowed there.

This module is only the root: each section's schema lives with the code that
reads it (gac/<stage>/params.py, gac/data/params.py), built from the blocks in
gac.schema; digests of params are gac.digest's. Nothing below imports this
module, so the dependencies run one way.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gac.baseline.params import BaselineParams
from gac.data.params import DataParams, TileParams
from gac.errors import GacError
from gac.evaluate.params import EvaluateParams
from gac.finetune.params import Stage1FinetuneParams
from gac.generate.params import Stage1Params
from gac.ground.params import Stage3Params
from gac.refine.params import Stage2Params
from gac.schema import StrictModel
from gac.translate.params import TranslateParams

DEFAULT_PARAMS = Path("params.yaml")


def _stage_schemas() -> dict[str, type[StrictModel]]:
    return {
        "stage1": Stage1Params,
        "stage1_finetune": Stage1FinetuneParams,
        "stage2": Stage2Params,
        "stage3": Stage3Params,
        "baseline": BaselineParams,
        "evaluate": EvaluateParams,
        "translate": TranslateParams,
    }


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


# Keys that moved (old -> new): refused with a line naming the new key, not a bare "unknown key".
RENAMED = {
    **{f"stage1.{k}": f"stage1.infer.{k}" for k in ("batch_size", "device", "precision")},
    **{f"translate.{k}": f"translate.infer.{k}" for k in ("batch_size", "device", "precision")},
    "stage2.infer.accelerator": "stage2.infer.device",
    "baseline.infer.accelerator": "baseline.infer.device",
    **{f"stage2.loss_{k}": f"stage2.loss.{k}" for k in ("l1", "ms_ssim", "sam", "lpips")},
    "stage2.lpips_net": "stage2.loss.lpips_net",
}
# Values that were renamed: (key, old value) -> new value.
RENAMED_VALUES = {("stage2.monitor", "sam"): "sam_deg"}


def _at(raw: Any, key: str) -> tuple[bool, Any]:
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return False, None
        raw = raw[part]
    return True, raw


def _refuse_renamed(raw: dict[str, Any], source: Path) -> None:
    for old, new in RENAMED.items():
        if _at(raw, old)[0]:
            raise GacError(f"{source}: '{old}' is now '{new}'; move its value there")
    for (key, old), new in RENAMED_VALUES.items():
        found, value = _at(raw, key)
        if found and value == old:
            raise GacError(
                f"{source}: {key}: '{old}' is now '{new}' (degrees, as every stage and gac evaluate log it); set "
                f"{key}: {new}"
            )


def validate_params(raw: dict[str, Any], source: Path = DEFAULT_PARAMS):
    _refuse_renamed(raw or {}, source)
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
