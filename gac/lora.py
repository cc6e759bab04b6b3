"""Which modules a LoRA target regex selects, checked before peft sees it (stages 1, 2 and 3 alike).

peft applies `target_modules` as a full-match regex over module names and
fails late and vaguely when it matches nothing, or quietly adapts whatever it
matches: a loose regex (say `.*attn.*`) also hits the frozen S2L2A tokenizer
of TerraMind. Checking the names up front turns each of these into one line
that names the params key and lists the Linear modules that could be meant.
"""

from __future__ import annotations

import re

from gac.errors import GacError


def linear_names(model) -> list[str]:
    """Names of the Linear layers of `model` (bitsandbytes' Linear8bitLt is a Linear too)."""
    import torch.nn as nn

    return [name for name, module in model.named_modules() if name and isinstance(module, nn.Linear)]


def summarise(names: list[str]) -> str:
    """Module names with layer numbers folded (blocks.N.attn.qkv), so the list fits on one line."""
    return ", ".join(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".N", n) for n in names))


def lora_target_names(model, pattern: str, key: str, what: str, within: str | None = None) -> list[str]:
    """Names of the Linear modules `pattern` selects in `model`; a one-line GacError otherwise.

    `within`: a module-name prefix every target must start with (TerraMind's
    `sampler.model.`, so its tokenizer stays frozen); `what` names the model
    in messages. Errors: no match, a match outside `within`, a non-Linear match.
    """
    regex = re.compile(pattern)
    candidates = [n for n in linear_names(model) if within is None or n.startswith(within)]
    matched = [(name, module) for name, module in model.named_modules() if name and regex.fullmatch(name)]
    if not matched:
        raise GacError(
            f"{key}: {pattern!r} matches no module of {what} (full match on module names); Linear modules: "
            f"{summarise(candidates)}"
        )
    if within is not None:
        outside = [name for name, _ in matched if not name.startswith(within)]
        if outside:
            raise GacError(
                f"{key}: {pattern!r} matches {len(outside)} module(s) outside {within}*, e.g. {outside[0]}, which "
                "must stay frozen; "
                f"anchor the regex on {re.escape(within)!r}"
            )
    linear = set(linear_names(model))
    other = [name for name, _ in matched if name not in linear]
    if other:
        raise GacError(
            f"{key}: {pattern!r} matches {len(other)} module(s) that are not Linear layers, e.g. {other[0]}; "
            f"LoRA adapts Linear layers: {summarise(candidates)}"
        )
    return [name for name, _ in matched]
