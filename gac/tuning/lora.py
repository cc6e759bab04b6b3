"""LoRA on TerraMind, with the target regex checked against the real module names first (gac.lora).

Adapters are saved and loaded in peft's own format, beside a small JSON of
what they were trained with (`adapter.json`), which loading checks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from gac.errors import GacError

ADAPTER_DIR = "adapter"
# LoRA goes inside TerraMind proper; the S2L2A tokenizer (`tokenizer.*`) stays frozen.
TERRAMIND_PREFIX = "sampler.model."
# The default targets: the decoder's cross-attention, where the inputs condition the generated tokens.
TERRAMIND_LORA_TARGETS = r"sampler\.model\.decoder\.\d+\.cross_attn\.(q|kv|proj)"
ADAPTER_JSON = "adapter.json"


def apply_lora(model, pattern: str, rank: int, alpha: float, dropout: float, model_name: str, key: str = "stage3.lora_targets"):
    """Wrap `model` in a peft LoRA model on the checked targets; everything else is frozen."""
    from peft import LoraConfig, get_peft_model

    from gac.lora import lora_target_names

    lora_target_names(model, pattern, key, model_name, within=TERRAMIND_PREFIX)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    return get_peft_model(model, config)


def save_adapter(peft_model, out_dir: Path, record: dict[str, Any]) -> None:
    """peft's own adapter files under `out_dir/adapter`, and what they were trained with in `out_dir/adapter.json`."""
    out_dir = Path(out_dir)
    peft_model.save_pretrained(str(out_dir / ADAPTER_DIR))
    (out_dir / ADAPTER_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_adapter_record(adapter_root: Path, missing: str = "no trained stage-3 adapter there",
                        fix: str = "run `gac train-stage3` (dvc repro) first") -> dict[str, Any]:
    """The record beside a saved adapter (peft's files present too); otherwise one line: `{root}: {missing}; {fix}`.

    Stage 1's fine-tuned adapter and stage 3's share this format, so each caller names its own adapter and remedy.
    """
    adapter_root = Path(adapter_root)
    record_path = adapter_root / ADAPTER_JSON
    if not (adapter_root / ADAPTER_DIR / "adapter_config.json").is_file() or not record_path.is_file():
        raise GacError(f"{adapter_root}: {missing}; {fix}")
    return json.loads(record_path.read_text())


def load_adapter(model, adapter_root: Path, model_name: str, stage: str = "train-stage3"):
    """Load a saved adapter onto `model` (frozen, for inference); refuses an adapter trained for another model.

    `stage` is the command that trains the adapter, named in the fix.
    """
    from peft import PeftModel

    adapter_root = Path(adapter_root)
    record = read_adapter_record(adapter_root, fix=f"run `gac {stage}` (dvc repro) first")
    if record.get("model") != model_name:
        raise GacError(
            f"{adapter_root}: adapter was trained for {record.get('model')} but the model is {model_name}; "
            f"re-run `gac {stage}` or set the model back"
        )
    try:
        return PeftModel.from_pretrained(model, str(adapter_root / ADAPTER_DIR), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise GacError(f"{adapter_root / ADAPTER_DIR}: adapter does not fit {model_name} ({first}); re-run `gac {stage}`") from None
