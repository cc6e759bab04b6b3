"""Stand-ins for the files users download, built from upstream's side (terratorch), never from GAC's own models.

A checkpoint GAC wrote itself round-trips whatever GAC does; one built the
way the hub file was made catches a mismatch with the real files: keys GAC
expects that the file names differently, modalities the file holds that GAC
must skip, the token embedding iterative decoding needs.

- TerraMind: the pre-trained encoder-decoder (terratorch's TerraMind class)
  with every pre-training modality's encoder and decoder embeddings, in the
  architecture terratorch's registry gives the variant, random weights,
  saved without the `sampler.model.` prefix, as the hub's TerraMind_v1_*.pt.
- The S2L2A tokenizer: terratorch's registry build with pretrained=False, its
  state dict saved as TerraMind_Tokenizer_S2L2A.pt.
- Prithvi-EO-2.0: terratorch's full PrithviMAE (encoder and decoder), saved
  as the hub's Prithvi_EO_V2_*.pt.
"""

from __future__ import annotations

from pathlib import Path

import torch

# Raw image inputs and tokenized modalities TerraMind v1 was pre-trained on (terratorch's MODALITY_INFO keys).
PRETRAINING_INPUTS = ["S2L2A", "S2L1C", "S1GRD", "S1RTC", "DEM", "RGB"]
PRETRAINING_TOKENS = [
    "tok_sen2l2a@224",
    "tok_sen1grd@224",
    "tok_sen1rtc@224",
    "tok_dem@224",
    "tok_lulc@224",
    "tok_ndvi@224",
]


def terramind_architecture(name: str) -> dict:
    """The keyword arguments terratorch's registry entry `name` passes to its builder (depths, width, norm...)."""
    from terratorch.models.backbones.terramind.model import terramind_register as reg

    captured = {}
    original = reg.build_terrammind_generate
    reg.build_terrammind_generate = lambda variant=None, pretrained=False, ckpt_path=None, **kw: captured.update(kw)
    try:
        getattr(reg, name)()
    finally:
        reg.build_terrammind_generate = original
    drop = {"pretraining_mean", "pretraining_std", "tokenizer_dict"}
    return {k: v for k, v in captured.items() if k not in drop}


def terramind_hub_state(name: str, drop_token_feedback: bool = False, seed: int = 11) -> dict[str, torch.Tensor]:
    """The pre-trained TerraMind's state dict as the hub file holds it (random values, upstream's layout)."""
    from terratorch.models.backbones.terramind.model.modality_info import MODALITY_INFO
    from terratorch.models.backbones.terramind.model.terramind import (
        TerraMind,
        build_modality_embeddings,
        build_output_modality_embeddings,
    )

    arch = terramind_architecture(name)
    dim = arch["dim"]
    torch.manual_seed(seed)
    encoder, _ = build_modality_embeddings(
        MODALITY_INFO, PRETRAINING_INPUTS + PRETRAINING_TOKENS, img_size=224, dim=dim, patch_size=16
    )
    decoder, _ = build_output_modality_embeddings(
        MODALITY_INFO, PRETRAINING_TOKENS, img_size=224, dim=dim, patch_size=16
    )
    mae = TerraMind(encoder_embeddings=encoder, decoder_embeddings=decoder, modality_info=MODALITY_INFO, **arch)
    with torch.no_grad():  # upstream zero-initialises some layers; non-zero values show what really loaded
        for p in mae.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    state = {k: v.detach().clone() for k, v in mae.state_dict().items()}
    if drop_token_feedback:
        state = {k: v for k, v in state.items() if not k.startswith("encoder_embeddings.tok_sen2l2a@224.")}
    return state


def tokenizer_hub_state(seed: int = 12) -> dict[str, torch.Tensor]:
    from terratorch.registry import FULL_MODEL_REGISTRY

    torch.manual_seed(seed)
    tokenizer = FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_s2l2a", pretrained=False)
    with torch.no_grad():
        for p in tokenizer.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return {k: v.detach().clone() for k, v in tokenizer.state_dict().items()}


def write_terramind_dir(directory: Path, name: str, tokenizer_state: dict, drop_token_feedback: bool = False) -> Path:
    from gac.terramind import hub_files

    directory.mkdir(parents=True, exist_ok=True)
    _, tm_file, tok_file = hub_files(name)
    torch.save(terramind_hub_state(name, drop_token_feedback), directory / tm_file)
    if not (directory / tok_file).exists():
        torch.save(tokenizer_state, directory / tok_file)
    return directory


def prithvi_hub_state(name: str, seed: int = 13) -> dict[str, torch.Tensor]:
    """Prithvi's hub file: terratorch's whole PrithviMAE (encoder. and decoder. keys), as pre-training saved it."""
    from terratorch.models.backbones import prithvi_vit

    torch.manual_seed(seed)
    mae = getattr(prithvi_vit, f"{name}_mae")(
        pretrained=False
    )  # the registry's MAE entry, pre-training's bands and frames
    with torch.no_grad():
        for p in mae.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return {k: v.detach().clone() for k, v in mae.state_dict().items()}
