"""`gac ground`: stage 3 inference, S1 + opt_v2 -> opt_v3 with the trained LoRA.

`--input v1` is the evaluation's ablation "stage 3 on opt_v1, skipping stage
2": the same adapter conditioned on opt_v1, written to data/opt_v3_on_v1.zarr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gac.params import DEFAULT_PARAMS
from stages.common import ParamsOption, load_torch_params, user_errors_as_one_line

# `--input`: which optical store conditions stage 3, and where the output goes (as dvc.yaml wires them).
GROUND_INPUTS = {
    "v2": ("data/opt_v2.zarr", "data/opt_v3.zarr"),
    "v1": ("data/opt_v1.zarr", "data/opt_v3_on_v1.zarr"),
}
INPUTS = tuple(GROUND_INPUTS)


@user_errors_as_one_line
def main(
    params: ParamsOption = DEFAULT_PARAMS,
    input_: Annotated[
        str, typer.Option("--input", help="optical conditioning: v2 (opt_v2, the pipeline) or v1 (ablation)")
    ] = "v2",
    tiles: Annotated[Path, typer.Option(help="tiles store (S1)")] = Path("data/tiles.zarr"),
    adapter: Annotated[Path, typer.Option(help="directory `gac train-stage3` wrote")] = Path("data/stage3"),
    optical: Annotated[Optional[Path], typer.Option(help="optical store (default data/opt_<input>.zarr)")] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(help="store to write (default data/opt_v3.zarr, or data/opt_v3_on_v1.zarr for --input v1)"),
    ] = None,
) -> None:
    """Generate opt_v3 tile by tile (iterative decoding + uncapped diffusion decoder), resumable by shard."""
    from gac.errors import GacError

    if input_ not in INPUTS:
        raise GacError(
            f"--input '{input_}' is not known; use v2 (opt_v2.zarr -> opt_v3.zarr) or v1 (opt_v1.zarr -> "
            "opt_v3_on_v1.zarr)"
        )
    p = load_torch_params(params)
    from gac.ground.infer import ground

    default_optical, default_out = GROUND_INPUTS[input_]
    out = out or Path(default_out)
    attrs = ground(p, tiles, optical or Path(default_optical), adapter, out, input_)
    typer.echo(
        f"{out}: stage 3 on opt_{input_}, weights {attrs['weights']}{' (RANDOM)' if attrs['random_weights'] else ''}"
    )
