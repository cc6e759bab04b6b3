"""`gac generate`: placeholder until issue 3 (stage 1) lands; fails clearly and writes nothing."""

from __future__ import annotations

from gac.params import DEFAULT_PARAMS, load_params
from stages.common import ParamsOption, not_implemented, user_errors_as_one_line


@user_errors_as_one_line
def main(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Not implemented yet."""
    load_params(params)
    not_implemented("generate", "issue 3 (stage 1)")
