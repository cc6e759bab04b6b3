"""LoRA on TerraMind, with the target regex checked against the real module names first (gac.lora).

Adapters are saved and loaded in peft's own format, beside a small JSON of
what they were trained with (`adapter.json`), which loading checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gac.errors import GacError

ADAPTER_DIR = "adapter"
# LoRA goes inside TerraMind proper; the S2L2A tokenizer (`tokenizer.*`) stays frozen.
TERRAMIND_PREFIX = "sampler.model."
# The default targets: the decoder's cross-attention, where the inputs condition the generated tokens.
TERRAMIND_LORA_TARGETS = r"sampler\.model\.decoder\.\d+\.cross_attn\.(q|kv|proj)"
ADAPTER_JSON = "adapter.json"


def apply_lora(
    model, pattern: str, rank: int, alpha: float, dropout: float, model_name: str, key: str = "stage3.lora_targets"
):
    """Wrap `model` in a peft LoRA model on the checked targets; everything else is frozen."""
    from peft import LoraConfig, get_peft_model

    from gac.lora import lora_target_names

    lora_target_names(model, pattern, key, model_name, within=TERRAMIND_PREFIX)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    return get_peft_model(model, config)


@dataclass(frozen=True)
class AdapterKind:
    """Which saved TerraMind adapter a caller expects (stage 3's, or stage 1's fine-tuned one), in a user's words."""

    missing: str  # what is missing, e.g. "no trained stage-3 adapter"
    command: str  # the `gac` command that trains it, e.g. "train-stage3"
    model_key: str  # the params key that names its TerraMind


STAGE3_ADAPTER = AdapterKind("no trained stage-3 adapter", "train-stage3", "stage3.model")
STAGE1_ADAPTER = AdapterKind(
    "stage1_finetune.enabled is true but no fine-tuned adapter", "finetune-stage1", "stage1.model"
)


def save_adapter(peft_model, out_dir: Path, record: dict[str, Any]) -> Path:
    """peft's own adapter files under `out_dir/adapter`, and what they were trained with in `out_dir/adapter.json`;
    written whole or not at all."""
    from gac.data.store import write_whole

    def fill(tmp: Path) -> None:
        peft_model.save_pretrained(str(tmp / ADAPTER_DIR))
        (tmp / ADAPTER_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    return write_whole(out_dir, fill)


def read_adapter_record(
    adapter_root: Path, kind: AdapterKind = STAGE3_ADAPTER, fix: str | None = None
) -> dict[str, Any]:
    """The record beside a saved adapter (peft's files present too); otherwise one line naming the command to run."""
    adapter_root = Path(adapter_root)
    record_path = adapter_root / ADAPTER_JSON
    if not (adapter_root / ADAPTER_DIR / "adapter_config.json").is_file() or not record_path.is_file():
        raise GacError(
            f"{adapter_root}: {kind.missing} there; "
            f"{fix or f'run `gac {kind.command}` (dvc repro {kind.command}) first'}"
        )
    return json.loads(record_path.read_text())


def checked_adapter_record(
    adapter_root: Path, kind: AdapterKind, model: str, inputs: list[str], fix: str | None = None
) -> dict[str, Any]:
    """The adapter's record, refused in one line unless it was trained for `model` on `inputs` (the one check every
    user of a saved adapter makes: ground, generate with a fine-tuned stage 1, translate)."""
    record = read_adapter_record(adapter_root, kind, fix)
    retrain = f"re-train it (dvc repro {kind.command})"
    if record.get("model") != model:
        raise GacError(
            f"{adapter_root}: adapter was trained for {record.get('model')} but {kind.model_key} is {model}; "
            f"set {kind.model_key}: {record.get('model')} or {retrain}"
        )
    if record.get("inputs") != list(inputs):
        raise GacError(
            f"{adapter_root}: adapter was trained on inputs {record.get('inputs')} but takes {list(inputs)} now "
            f"(stage1.input); set stage1.input back or {retrain}"
        )
    return record


def load_adapter(model, adapter_root: Path, kind: AdapterKind, inputs: list[str]):
    """Load a checked, saved adapter onto `model` (frozen, for inference)."""
    from peft import PeftModel

    adapter_root = Path(adapter_root)
    checked_adapter_record(adapter_root, kind, model.gac_name, inputs)
    try:
        return PeftModel.from_pretrained(model, str(adapter_root / ADAPTER_DIR), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise GacError(
            f"{adapter_root / ADAPTER_DIR}: adapter does not fit {model.gac_name} ({first}); "
            f"re-train it (dvc repro {kind.command})"
        ) from None
