"""`gac check-params`: validate params.yaml before any stage does work (DVC runs it first)."""

from __future__ import annotations

import typer

from gac.params import DEFAULT_PARAMS, load_params
from stages.common import ParamsOption, user_errors_as_one_line


@user_errors_as_one_line
def main(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Validate params.yaml: unknown keys, misspellings and wrong types are errors."""
    load_params(params)
    typer.echo(f"{params}: ok")
