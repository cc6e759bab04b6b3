"""`gac generate`: stage 1, frozen TerraMind S1 -> S2L2A for every tile (data/opt_v1.zarr).

Resumes an interrupted run with the same params. Scale out with torchrun:
`torchrun --nproc-per-node 2 --no-python gac generate` (one rank per GPU, or
CPU processes); each rank writes its own shards.
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
    tiles: Annotated[Path, typer.Option(help="tile store to read (variable s1)")] = Path("data/tiles.zarr"),
    out: Annotated[Path, typer.Option(help="prediction store to write")] = Path("data/opt_v1.zarr"),
    finetune: Annotated[
        Path, typer.Option(help="fine-tuned adapter, used when stage1_finetune.enabled is true")
    ] = Path("data/stage1_finetune"),
    progress: Annotated[bool, typer.Option(help="show a progress bar (tiles/s, ETA)")] = True,
) -> None:
    """Generate S2L2A reflectance from S1 with a frozen TerraMind generator (stage1 params)."""
    p = load_torch_params(params)
    from gac.generate.run import run_generate

    summary = run_generate(p, tiles, out, progress=progress, finetune_dir=finetune)
    typer.echo(
        f"{out}: {summary['tiles']} tile(s) generated in {summary['seconds']:.1f} s ({summary['tiles_per_s']:.2f} "
        "tiles/s)",
        err=True,
    )
