"""TerraMind in one differentiable pass: the path stage 3 trains through.

`TerraMindGeneration.forward` (and the sampler's `generate`) run under
`no_grad` and sample discrete tokens, so no loss computed from them can reach
the model: that is why the original project's training failed with "element 0
of tensors does not require grad". The same network can be run in one pass
instead, as the sampler's own masked forward does, but keeping the graph:

    inputs -> encoder embeddings -> forward_encoder -> decoder_proj_context
    mask tokens + target pos/mod embeddings -> forward_decoder -> forward_logits

giving logits over the S2L2A tokenizer's codebook for every target token.
Cross-entropy against the frozen tokenizer's encoding of the ground truth is
TerraMind's own pre-training objective (masked-token prediction, all target
tokens masked). For a loss in pixels the logits become *soft* FSQ codes
(softmax @ codebook) and one call of the tokenizer's diffusion UNet at its
last timestep predicts x0 from them; the tokenizer stays frozen throughout.

Everything here takes the bare `TerraMindGeneration`; LoRA layers that peft
injected into it take part without being named.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from gac.startup import first_model_call
from gac.terramind import PATCH, TARGET, TOKENS_KEY, destandardize, standardize_filled

S2L2A = TARGET
# With zero terminal SNR the last training timestep is pure noise and a
# `prediction_type="sample"` UNet predicts x0 from the conditioning alone.
LAST_TIMESTEP = 999


def s2_tokenizer(model):
    return model.tokenizer[TOKENS_KEY]


def standardized(name: str, x: torch.Tensor) -> torch.Tensor:
    """Physical units -> TerraMind's standardised units, NaN as the band mean: gac.terramind.standardize_filled."""
    return standardize_filled(x, name)


def destandardize_s2(x: torch.Tensor) -> torch.Tensor:
    """Standardised S2L2A -> reflectance x 10^4, with the constants generation itself uses."""
    return destandardize(x, TARGET)


def token_logits(model, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, N, V) logits for every S2L2A token, from standardised image inputs (B, C, H, W) keyed by modality name."""
    first_model_call(getattr(model, "gac_name", "TerraMind"))
    tm = model.sampler.model
    first = next(iter(inputs.values()))
    batch, height, width = first.shape[0], first.shape[-2], first.shape[-1]
    encoded = {}
    for name, tensor in inputs.items():
        internal = model.mod_name_mapping[name]
        d = tm.encoder_embeddings[internal]({"tensor": tensor})
        d["input_mask"] = torch.zeros(d["x"].shape[:2], dtype=torch.bool, device=tensor.device)
        encoded[internal] = d
    tokens, emb, encoder_mask, _ = tm.cat_encoder_tensors(encoded)
    encoder_mask = encoder_mask[:, None, :]
    x = tm.forward_encoder(tokens + emb, encoder_mask)
    context = tm.decoder_proj_context(x) + emb

    target = tm.decoder_embeddings[TOKENS_KEY]
    patch = target.patch_size
    n_tokens = (height // patch[0]) * (width // patch[1])
    ids = torch.zeros(batch, n_tokens, dtype=torch.long, device=first.device)
    target_emb = target.forward_embed({"tensor": ids})["emb"]
    y = tm.mask_token.expand(batch, n_tokens, -1) + target_emb
    y = tm.forward_decoder(y, context, encoder_mask, None)
    return target.forward_logits(y)


@torch.no_grad()
def target_tokens(model, s2_standardized: torch.Tensor) -> torch.Tensor:
    """(B, N) token ids of the ground truth under the frozen S2L2A tokenizer: the cross-entropy target."""
    _, _, tokens = s2_tokenizer(model).encode(s2_standardized)
    return tokens.reshape(tokens.shape[0], -1).long()


def token_cross_entropy(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens.reshape(-1))


def soft_codes(model, logits: torch.Tensor, grid: tuple[int, int], temperature: float = 1.0) -> torch.Tensor:
    """Expected FSQ code under softmax(logits / T): (B, D_Q, h, w), differentiable, unlike sampled tokens."""
    codebook = s2_tokenizer(model).quantize.codebook.to(logits.dtype)
    probs = torch.softmax(logits / temperature, dim=-1)
    codes = probs @ codebook
    return codes.transpose(1, 2).reshape(logits.shape[0], codebook.shape[1], *grid)


def decode_x0(
    model, codes: torch.Tensor, generator: torch.Generator | None = None, seeds: Sequence[int] | None = None
) -> torch.Tensor:
    """One call of the frozen diffusion UNet at the last timestep: its x0 estimate (standardised S2L2A).

    The UNet needs sides that are a multiple of 32 px: an odd code grid is
    padded by edge replication and the image cropped back, as generation does.
    Its input noise comes from `generator` (training: the seeded global stream), or with `seeds` from one
    generator per image, so an image's decode does not depend on what ran before it (validation).
    """
    unet = s2_tokenizer(model).decoder
    batch, _, h, w = codes.shape
    codes = F.pad(codes, (0, w % 2, 0, h % 2), mode="replicate") if (h % 2 or w % 2) else codes
    size = (codes.shape[-2] * PATCH, codes.shape[-1] * PATCH)
    if seeds is None:
        noise = torch.randn((batch, unet.in_channels, *size), generator=generator, device="cpu")
    else:
        noise = torch.stack(
            [torch.randn((unet.in_channels, *size), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        )
    noise = noise.to(codes.device, codes.dtype)
    timestep = torch.full((batch,), LAST_TIMESTEP, device=codes.device, dtype=torch.long)
    return unet(noise, timestep, codes)[:, :, : h * PATCH, : w * PATCH]


def random_window(
    size: tuple[int, int], crop: int, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """(top, left, height, width) in px of a random `crop` px window on the 16 px token grid; the whole image if it is
    no larger.

    Aligned to tokens so the window's soft codes are exactly the tokens that
    cover it: decoding them costs what a `crop` px tile costs, whatever the tile.
    """
    height, width = size
    if not crop or (crop >= height and crop >= width):
        return 0, 0, height, width
    ch, cw = min(crop, height), min(crop, width)
    top = int(torch.randint(0, (height - ch) // PATCH + 1, (1,), generator=generator)) * PATCH
    left = int(torch.randint(0, (width - cw) // PATCH + 1, (1,), generator=generator)) * PATCH
    return top, left, ch, cw


def soft_decode(
    model,
    logits: torch.Tensor,
    size: tuple[int, int],
    temperature: float = 1.0,
    generator=None,
    window: tuple[int, int, int, int] | None = None,
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """Logits (B, N, V) -> standardised S2L2A (B, 12, H, W), differentiable with respect to the logits.

    With `window` (top, left, height, width in px, multiples of 16) only the
    tokens under it are decoded: (B, 12, height, width). The UNet sees the
    window alone, so its border pixels lack the context of the neighbouring
    tokens a whole-tile decode would give them.
    """
    grid = (size[0] // PATCH, size[1] // PATCH)
    if window is not None and tuple(window[2:]) != tuple(size):
        top, left, height, width = (v // PATCH for v in window)
        rows = logits.reshape(logits.shape[0], *grid, logits.shape[-1])[:, top : top + height, left : left + width]
        logits, grid = rows.reshape(logits.shape[0], -1, logits.shape[-1]), (height, width)
    return decode_x0(model, soft_codes(model, logits, grid, temperature), generator, seeds)
