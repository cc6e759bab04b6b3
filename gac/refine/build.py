"""Assemble the refiner from its config, and save / load what training produced.

`data/stage2/` holds:
- `adapter/`            the LoRA adapter in peft's own format (save_pretrained)
- `head.safetensors`    the head (and the unfrozen backbone blocks, if any): every trained non-LoRA tensor
- `stage2.json`         the config the model was built from, weights provenance, trainable counts, backbone fingerprint

`refine` rebuilds the model from `stage2.json` alone, so the refine stage never
depends on training params, and a changed inference setting never retrains.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from gac.data.store import write_whole
from gac.errors import GacError
from gac.refine.backbone import (
    add_lora,
    build_backbone,
    checkpoint_blocks,
    fingerprint,
    quantize_frozen_linears,
    unfreeze_last_blocks,
)
from gac.refine.model import Refiner
from gac.training import count_parameters
from gac.weights import load_strict, read_state_dict

ADAPTER_DIR = "adapter"
HEAD_FILE = "head.safetensors"
RECORD_FILE = "stage2.json"


def input_channels(config: dict[str, Any]) -> list[str]:
    return list(config["bands"]) + (["VV", "VH"] if config["use_sar"] else [])


def checkpointing(config: dict[str, Any]) -> bool:
    """stage2.activation_checkpointing resolved: 'auto' follows the 8-bit backbone, where memory is the point
    (a record written before the key existed: off)."""
    choice = config.get("activation_checkpointing", False)
    return bool(config["backbone_8bit"]) if choice == "auto" else bool(choice)


def build_refiner(config: dict[str, Any], adapter_dir: Path | None = None) -> tuple[Refiner, dict[str, Any]]:
    """The refiner for `config` (Stage2Params.training_dict()); with `adapter_dir`, the LoRA adapter is loaded from
    there."""
    backbone, source = build_backbone(config["backbone"], config["weights"], input_channels(config))
    depth, embed_dim = len(backbone.blocks), int(backbone.embed_dim)
    unfrozen = config["unfreeze_last_blocks"]
    if unfrozen > depth:
        raise GacError(
            f"stage2.unfreeze_last_blocks: {unfrozen} but {config['backbone']} has {depth} blocks; use 0..{depth}"
        )
    if config["feature_levels"] > depth:
        raise GacError(f"stage2.feature_levels: {config['feature_levels']} but {config['backbone']} has {depth} blocks")
    info: dict[str, Any] = {
        **source.provenance(),
        "backbone_fingerprint": fingerprint(backbone),
        "depth": depth,
        "embed_dim": embed_dim,
    }
    keep = set(range(depth - unfrozen, depth))
    info["quantized_linears"] = quantize_frozen_linears(backbone, keep) if config["backbone_8bit"] else 0
    info["checkpointed_blocks"] = checkpoint_blocks(backbone) if checkpointing(config) else 0
    if adapter_dir is None:
        backbone, info["lora_modules"] = add_lora(
            backbone, config["lora_targets"], config["lora_rank"], config["lora_alpha"], config["lora_dropout"]
        )
    else:
        from peft import PeftModel

        backbone = PeftModel.from_pretrained(backbone, str(adapter_dir), is_trainable=True)
        info["lora_modules"] = sum(1 for n, _ in backbone.named_modules() if n.endswith("lora_A"))
    unfreeze_last_blocks(backbone, unfrozen, depth)
    refiner = Refiner(backbone, config, embed_dim, depth)
    refiner.set_memory_mode(bool(info["checkpointed_blocks"]))
    info["parameters"] = count_parameters(refiner)
    return refiner, info


def trained_state(refiner: Refiner) -> dict[str, torch.Tensor]:
    """Every trainable tensor that is not LoRA (peft saves those): the head and any unfrozen blocks."""
    trainable = {n for n, p in refiner.named_parameters() if p.requires_grad and "lora_" not in n}
    return {n: t.detach().cpu().contiguous() for n, t in refiner.state_dict().items() if n in trainable}


def save_refiner(refiner: Refiner, out_dir: Path, record: dict[str, Any]) -> Path:
    """Write adapter, head weights and the JSON record under a temporary name, then rename into place."""
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        refiner.backbone.save_pretrained(str(tmp / ADAPTER_DIR))
        save_file(trained_state(refiner), str(tmp / HEAD_FILE))
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")

    return write_whole(out_dir, fill)


def read_record(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / RECORD_FILE
    if not path.is_file():
        raise GacError(
            f"{model_dir}: no trained stage-2 model here ({RECORD_FILE} missing); run `gac train-stage2` (dvc repro "
            "train-stage2)"
        )
    return json.loads(path.read_text())


def load_refiner(model_dir: Path) -> tuple[Refiner, dict[str, Any]]:
    """Rebuild the trained refiner from `data/stage2/`; refuses a backbone that differs from the one trained on."""
    model_dir = Path(model_dir)
    record = read_record(model_dir)
    refiner, info = build_refiner(record["config"], adapter_dir=model_dir / ADAPTER_DIR)
    expected = record["backbone_fingerprint"]
    if not math.isclose(info["backbone_fingerprint"], expected, rel_tol=1e-9, abs_tol=1e-6):
        raise GacError(
            f"{model_dir}: the {record['config']['backbone']} backbone built now (weights: {info['weights']}) differs "
            "from the one "
            f"this adapter was trained on; use the same weights or re-run train-stage2"
        )
    state = read_state_dict(model_dir / HEAD_FILE)
    load_strict(_TrainedView(refiner), state, model_dir / HEAD_FILE, "the stage-2 head")
    refiner.eval()
    return refiner, {**record, **{k: info[k] for k in ("weights", "random_weights")}}


class _TrainedView(torch.nn.Module):
    """Presents only the refiner's trained non-LoRA tensors, so the head file loads strictly (no missing, no extra)."""

    def __init__(self, refiner: Refiner):
        super().__init__()
        self._refiner = [refiner]
        self._keys = set(trained_state(refiner))

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return {k: v for k, v in self._refiner[0].state_dict().items() if k in self._keys}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):  # noqa: D102
        result = self._refiner[0].load_state_dict(dict(state), strict=False)
        if any(k in self._keys for k in result.missing_keys) or result.unexpected_keys:
            raise RuntimeError(f"head weights did not load: {result}")
        return result
