"""Ready-made params profiles: a YAML file of overrides, turned into `dvc exp run -S` arguments.

A profile is applied as an experiment, so DVC records exactly which keys it
changed and re-runs only what depends on them; nothing is copied by hand.
`gac profile NAME` prints the arguments after checking that the project's
params with the profile on top still validate, so a stale profile fails in
one line before DVC starts anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gac.errors import GacError


def read_profile(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise GacError(f"{path}: no such profile; known profiles: {', '.join(known) or 'none'}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise GacError(f"{path}: a profile is a mapping of params sections to overrides")
    return data


def flatten(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'stage3': {'infer': {'timesteps': 10}}} -> {'stage3.infer.timesteps': 10}."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied key by key (nested mappings merged, not replaced)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def apply_profile(params_path: Path, profile_path: Path):
    """The validated params `params_path` would hold with the profile applied (what `dvc exp run -S ...` writes)."""
    from gac.params import validate_params

    base = yaml.safe_load(Path(params_path).read_text()) or {}
    profile = read_profile(profile_path)
    missing = [key for key in flatten(profile) if not _has(base, key)]
    if missing:  # DVC's -S refuses a key params.yaml lacks; say so before DVC does, naming the key
        raise GacError(
            f"{profile_path}: '{missing[0]}' is not in {params_path}; add it there or drop it from the profile"
        )
    return validate_params(merged(base, profile), Path(profile_path))


def _has(raw: dict[str, Any], dotted: str) -> bool:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def set_param_args(profile_path: Path) -> list[str]:
    """`-S key=value` pairs for `dvc exp run`, one per overridden key (values in YAML's spelling)."""
    args = []
    for key, value in flatten(read_profile(profile_path)).items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        args += ["-S", f"{key}={text}"]
    return args
