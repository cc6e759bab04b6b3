"""`gac synth`: put the scene pairs the pipeline tiles under data/scenes (demo scenes, or a copy of data.source)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gac.params import DEFAULT_PARAMS, load_params
from stages.common import ParamsOption, user_errors_as_one_line


@user_errors_as_one_line
def main(
    params: ParamsOption = DEFAULT_PARAMS,
    out: Annotated[Path, typer.Option(help="scene directory to write")] = Path("data/scenes"),
) -> None:
    """Make the demo scenes (data.source: demo) or copy a directory of real pairs, checked, into DVC's care."""
    from gac.data.ingest import prepare_scenes

    summary = prepare_scenes(load_params(params), out)
    typer.echo(f"{out}: {summary['scenes']} scene pair(s) from {summary['source']}")
