"""`gac train-stage3`: train stage 3's LoRA (S1 + opt_v2 -> S2L2A) through TerraMind's differentiable path.

With `--stage1-finetune` the same path runs with S1 alone as input: that is
stage 1's generator, fine-tuned (params `stage1.finetune`; model, weights and
input from `stage1`, training knobs from `stage3`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gac.params import DEFAULT_PARAMS, load_params
from stages.common import ParamsOption, user_errors_as_one_line


@user_errors_as_one_line
def main(
    params: ParamsOption = DEFAULT_PARAMS,
    tiles: Annotated[Path, typer.Option(help="tiles store (S1, ground truth, splits)")] = Path("data/tiles.zarr"),
    optical: Annotated[Path, typer.Option(help="optical store conditioning stage 3 (opt_v2)")] = Path("data/opt_v2.zarr"),
    out: Annotated[Optional[Path], typer.Option(help="adapter directory (default data/stage3, or data/stage1_finetune)")] = None,
    live: Annotated[Optional[Path], typer.Option(help="DVCLive directory (default data/live/stage3, or data/live/stage1_finetune)")] = None,
    checkpoints: Annotated[Path, typer.Option(help="checkpoint root, outside DVC's outs so an interrupted run resumes")] = Path("data/checkpoints"),
    stage1_finetune: Annotated[bool, typer.Option("--stage1-finetune", help="fine-tune stage 1's generator (S1 alone) instead")] = False,
) -> None:
    """Train the LoRA adapter; writes peft's adapter files and adapter.json (weights, trainable counts)."""
    from gac.ground.train import run_training, stage1_finetune_job, stage3_job

    p = load_params(params)
    job = stage1_finetune_job(p) if stage1_finetune else stage3_job(p, optical)
    out = out or Path("data") / job.stage
    live = live or Path("data/live") / job.stage
    if stage1_finetune and not p.stage1.finetune:
        from gac.ground.finetune import write_disabled

        write_disabled(out, live)
        typer.echo(f"{out}: stage1.finetune is false; stage 1 stays frozen, nothing trained")
        return
    record = run_training(job, p, tiles, out, live, checkpoints)
    counts = record["parameters"]
    typer.echo(
        f"{out}: {job.stage} adapter, {counts['trainable']} trainable parameters ({100 * counts['trainable_share']:.4f}%), "
        f"best val loss {record['best_val_loss']}, weights {record['weights']}"
    )
