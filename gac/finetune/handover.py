"""Stage-1 fine-tuning (`stage1_finetune.enabled`): the job, and the hand-over between `gac finetune-stage1` and `gac
generate`.

DVC cannot skip a stage by a param, so the fine-tuning stage always runs:
with `enabled: false` it only writes a record saying so (seconds, no model
built), and `gac generate` keeps stage 1 frozen. With `true` it trains the
LoRA through the differentiable path (gac.tuning.train) and `gac generate`
generates with it.
"""

from __future__ import annotations

import json
from pathlib import Path

from gac.errors import GacError
from gac.tuning.train import TuningTarget

ENABLE = "stage1_finetune.enabled"


def stage1_finetune_target(params) -> TuningTarget:
    """Stage 1's generator (model, weights, S1 input from `stage1`) as a tuning job; its knobs come from
    `stage1_finetune`."""
    s1 = params.stage1
    return TuningTarget("stage1_finetune", s1.model, s1.weights, "stage1.weights", s1.input, None)


def write_disabled(out_dir: Path, live_dir: Path) -> None:
    """The record of a fine-tuning stage that had nothing to do (stage1_finetune.enabled is false), written whole.

    The DVCLive directory gets a metrics.json saying so, since DVC expects every declared output to exist.
    """
    from gac.data.store import write_whole

    out_dir, live_dir = Path(out_dir), Path(live_dir)
    live_dir.mkdir(parents=True, exist_ok=True)
    (live_dir / "metrics.json").write_text(json.dumps({"enabled": False}) + "\n")
    record = json.dumps({"stage": "stage1_finetune", "enabled": False}, indent=2) + "\n"
    write_whole(out_dir, lambda tmp: (tmp / "adapter.json").write_text(record))


def stage1_generator(model, params, root: Path | None):
    """What `gac generate` should generate with: `model` itself, or `model` with the fine-tuned adapter.

    `model` is stage 1's bare generator (gac.terramind.build_generator); the
    result is always a bare TerraMindGeneration (LoRA layers injected in place),
    so gac.terramind.generate takes it either way.
    """
    from gac.tuning.lora import STAGE1_ADAPTER, load_adapter

    if not params.stage1_finetune.enabled:
        return model
    if root is None:
        raise GacError(
            f"{ENABLE} is true but no fine-tuned adapter directory was given; pass --finetune DIR to `gac generate`"
        )
    return load_adapter(model, root, STAGE1_ADAPTER, [params.stage1.input]).get_base_model()
