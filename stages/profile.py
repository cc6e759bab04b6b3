"""`gac profile NAME`: the `-S key=value` arguments of a ready-made profile (profiles/NAME.yaml), checked first.

dvc exp run $(gac profile low-vram)     # batch 1 x 8 accumulation, bf16-mixed, 8-bit backbone, 10 steps
dvc exp run $(gac profile gpu)          # TerraMind base, 224 px tiles, 10 diffusion steps, CUDA
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gac.params import DEFAULT_PARAMS
from stages.common import ParamsOption, user_errors_as_one_line


@user_errors_as_one_line
def main(
    name: Annotated[str, typer.Argument(help="profile name: a file profiles/NAME.yaml (low-vram, gpu)")],
    params: ParamsOption = DEFAULT_PARAMS,
    profiles: Annotated[Path, typer.Option(help="directory holding the profiles")] = Path("profiles"),
) -> None:
    """Print `-S key=value ...` for `dvc exp run`, after validating params.yaml with the profile applied."""
    from gac.profiles import apply_profile, set_param_args

    path = profiles / f"{name}.yaml"
    apply_profile(params, path)
    typer.echo(" ".join(set_param_args(path)))
