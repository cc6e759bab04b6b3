"""The one place that knows where model weights come from: random, the HF cache, or local files.

Upstream loaders fail silently in two ways this module refuses: loading a
checkpoint whose keys do not match (terratorch's `ckpt_path` on the generate
models loads nothing) and reaching for the network. Loading is strict: a
missing or unexpected key is an error naming the file and a few of the keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gac.errors import GacError

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = (
    "RANDOM WEIGHTS: %s is randomly initialised (weights: random). Outputs and metrics show the "
    "pipeline working, not the models' skill; set weights to 'hf' or a local path for real results."
)


@dataclass(frozen=True)
class WeightsSource:
    """What `weights:` in params means for one model."""

    kind: str  # "random" | "hf" | "local"
    path: Path | None = None

    @property
    def is_random(self) -> bool:
        return self.kind == "random"

    def describe(self) -> str:
        return str(self.path) if self.kind == "local" else self.kind

    def provenance(self) -> dict[str, Any]:
        """What every output records about the weights that made it."""
        return {"weights": self.describe(), "random_weights": self.is_random}


def resolve_weights(value: str, model_name: str, key: str) -> WeightsSource:
    """Interpret a `weights` param; warn loudly for random weights, check local paths exist."""
    if value == "random":
        log.warning(RANDOM_WEIGHTS_WARNING, model_name)
        return WeightsSource("random")
    if value == "hf":
        # Never download at run time: the files are looked up on disk only (hf_cached_file).
        return WeightsSource("hf")
    path = Path(value).expanduser()
    if not path.exists():
        raise GacError(
            f"{path}: weights for {model_name} not found ({key}); give an existing file or directory, 'hf' or 'random'"
        )
    return WeightsSource("local", path)


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """The file's path in the local Hugging Face cache, or None: a lookup on disk, never a request.

    Not `hf_hub_download(local_files_only=True)`: that still builds request
    headers, and huggingface_hub's agent detection fetches a registry from the
    hub while doing so unless HF_HUB_OFFLINE was set before it was imported.
    """
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    return Path(found) if isinstance(found, str) else None


def read_state_dict(path: Path) -> dict[str, Any]:
    """Read a .safetensors, .pt/.pth/.ckpt file into a flat state dict (a Lightning checkpoint's `state_dict` too)."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise GacError(
            f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); is the file "
            "complete?"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise GacError(f"{path}: holds no state dict; give a .safetensors or a torch checkpoint of the model")
    return dict(state)


def load_strict(module, state: Mapping[str, Any], source: Path | str, what: str) -> None:
    """Load every key or none: a partial load is the silent failure this project exists to avoid."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} shape mismatch(es), e.g. {k}: file {tuple(state[k].shape)} vs model "
                f"{tuple(own[k].shape)}"
            )
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise GacError(f"{source}: weights do not fit {what}: {'; '.join(parts)}; check the model size/name in params")
    module.load_state_dict(state, strict=True)
