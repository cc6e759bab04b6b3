"""The tokenizer ceiling: ground truth encoded and decoded by TerraMind's S2L2A tokenizer.

Stages 1 and 3 output images through that tokenizer's decoder, so no TerraMind
output can be closer to the truth than the truth's own round trip; the gap
between opt_v1/opt_v3 and this variant is what better token prediction could
still gain, the rest is the tokenizer's loss. It uses stage 1's generator
name, weights, diffusion steps, decoder cap, device and precision, and
per-tile seeds, so it is reproducible and decodes as stage 1 does.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


def tokenizer_ceiling(
    truth: np.ndarray, tile_ids: Sequence[str], stage1: Any, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, 12, H, W) ground truth x 10^4 -> its tokenizer round trip (same shape, float32) and provenance."""
    import torch

    from gac.device import resolve_device
    from gac.runner import iter_batches
    from gac.terramind import build_generator, tile_seed, tokenizer_roundtrip

    device = resolve_device(stage1.infer.device, key="stage1.infer.device")  # the one device rule of every stage
    precision = stage1.infer.precision
    capped = bool(stage1.capped_decoder)
    model = build_generator(
        stage1.model, inputs=(stage1.input,), weights=stage1.weights, tile_size=truth.shape[-1], seed=seed
    ).to(device)
    out = np.empty(truth.shape, dtype=np.float32)
    for batch in iter_batches(range(len(truth)), stage1.infer.batch_size):
        seeds = [tile_seed(seed, str(tile_ids[i])) for i in batch]
        x = torch.from_numpy(np.asarray(truth[batch], dtype=np.float32))
        decoded = tokenizer_roundtrip(model, x, seeds, stage1.timesteps, capped, precision)
        out[batch] = decoded.cpu().numpy()
    provenance = {
        "model": f"{stage1.model} S2L2A tokenizer, round trip of the ground truth, {stage1.timesteps} DDIM steps",
        **model.gac_weights.provenance(),
    }
    log.info("tokenizer ceiling: %d tiles through the S2L2A tokenizer of %s", len(truth), stage1.model)
    return out, provenance
