"""Thin Typer commands, one per DVC stage: parse params, call `gac`, write outs."""
