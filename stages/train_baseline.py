"""`gac train-baseline`: fit the supervised pix2pix-style U-Net (S1 -> S2L2A) on the same tiles as stages 2 and 3.

Writes data/baseline/ (model.safetensors, baseline.json) and DVCLive metrics
and plots under data/live/baseline. An interrupted run resumes from its last
checkpoint (data/checkpoints/baseline) when params and tiles are unchanged.
`baseline.enabled: false` writes a record saying so and trains nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gac.params import DEFAULT_PARAMS
from stages.common import ParamsOption, load_torch_params, user_errors_as_one_line


@user_errors_as_one_line
def main(
    params: ParamsOption = DEFAULT_PARAMS,
    tiles: Annotated[Path, typer.Option(help="tile store (s1, ground-truth s2, split)")] = Path("data/tiles.zarr"),
    out: Annotated[Path, typer.Option(help="directory for model.safetensors and baseline.json")] = Path(
        "data/baseline"
    ),
    live: Annotated[Path, typer.Option(help="DVCLive directory (metrics, step plots)")] = Path("data/live/baseline"),
    checkpoints: Annotated[
        Path, typer.Option(help="checkpoint root, outside DVC's outs so an interrupted run resumes")
    ] = Path("data/checkpoints"),
) -> None:
    """Train the baseline U-Net (L1, optional PatchGAN) on S1 -> ground truth (baseline params)."""
    p = load_torch_params(params)
    if not p.baseline.enabled:
        from gac.baseline.saved import write_disabled

        write_disabled(out, live)
        typer.echo(f"{out}: baseline.enabled is false; nothing trained")
        return
    from gac.baseline.train import train_baseline

    record = train_baseline(p.baseline, p.seed, tiles, out, live, checkpoints)
    if record["exported"]:
        typer.echo(
            f"{out}: best val L1 {record['best_val_loss']}, {record['global_step']} step(s), "
            f"{record['parameters']['total']} parameters",
            err=True,
        )
