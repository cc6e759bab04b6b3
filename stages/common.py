"""What every stage command shares: the params option, logging, and turning user mistakes into one line."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated, Callable, TypeVar

import typer

from gac.errors import GacError

ParamsOption = Annotated[Path, typer.Option("--params", help="params file (validated; unknown keys are errors)")]
F = TypeVar("F", bound=Callable[..., object])


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # GDAL reports every problem it meets at INFO; our own one-line error says what matters.
    logging.getLogger("rasterio").setLevel(logging.WARNING)
    # bitsandbytes warns at import that an optional 4-bit CPU kernel package is absent; GAC uses 8-bit only.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def load_torch_params(path: Path):
    """load_params, then the process-wide torch settings they ask for (`deterministic`): for stages that run a model."""
    from gac.device import use_deterministic
    from gac.params import load_params

    params = load_params(path)
    use_deterministic(params.deterministic)
    return params


def user_errors_as_one_line(func: F) -> F:
    """A GacError ends the command with its message on one line and exit code 2; other errors keep their traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        setup_logging()
        try:
            return func(*args, **kwargs)
        except GacError as exc:
            typer.echo(f"gac: error: {exc}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]
