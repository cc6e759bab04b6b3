"""Evaluation params (section `evaluate`)."""

from __future__ import annotations

from typing import Literal

from gac.params import StrictModel


class EvaluateParams(StrictModel):
    split: Literal["train", "val", "test"] = "test"
