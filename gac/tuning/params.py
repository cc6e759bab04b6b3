"""Params blocks shared by the two TerraMind tuning jobs (`stage3`, `stage1_finetune`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

PIXEL_TERMS = ("l1", "ms_ssim", "sam", "lpips")


def check_pixel_terms(value: dict[str, float]) -> dict[str, float]:
    """Weights of gac.losses terms: known names, none negative."""
    unknown = sorted(set(value) - set(PIXEL_TERMS))
    if unknown:
        raise ValueError(f"unknown pixel loss term(s) {unknown}; use {', '.join(PIXEL_TERMS)}")
    if any(v < 0 for v in value.values()):
        raise ValueError("pixel loss weights must be >= 0")
    return value


PixelTerms = Annotated[dict[str, float], AfterValidator(check_pixel_terms)]
