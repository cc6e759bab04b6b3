"""Short, stable digests of what made an output: the hashes every store, model record and COG carries.

Below every stage (it imports nothing of GAC), so any module can record what it was made with without importing
the params root, which imports every stage's schema.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def json_digest(data: Any) -> str:
    """A short, stable digest of JSON-able data (keys sorted, anything else by its str)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def params_hash(params, sections: list[str] | None = None) -> str:
    """The digest of validated params (a pydantic model), or of some of its sections: outputs carry it."""
    dumped = params.model_dump(mode="json")
    if sections is not None:
        dumped = {name: dumped[name] for name in sections}
    return json_digest(dumped)


def prediction_hash(infer, record: dict[str, Any], model_keys: tuple[str, ...]) -> str:
    """What a prediction store depends on: how the model was applied (a validated `infer` block) and which trained
    model it was (the `model_keys` of the model's record that identify it)."""
    return json_digest({"infer": infer.model_dump(mode="json"), "model": {k: record.get(k) for k in model_keys}})
