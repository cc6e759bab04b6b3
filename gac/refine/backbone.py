"""The Prithvi-EO-2.0 backbone of stage 2: built by name, weights loaded strictly, frozen, optionally 8-bit, LoRA on
top.

Upstream honours `ckpt_path` only with `pretrained=True`, and then loads with
`strict=False` (a wrong file loads nothing, with a warning). So the backbone is
always built with `pretrained=False` and the checkpoint (HF cache or local
file) goes through terratorch's own key filter (which also adapts the patch
embedding to our bands) and then `gac.weights.load_strict`.

Random weights are drawn from a fixed seed, so `refine` rebuilds exactly the
backbone that was trained on; a fingerprint recorded beside the adapter checks it.
"""

from __future__ import annotations

import functools
import gc
import logging
import re
from pathlib import Path

import torch
from torch import nn

from gac.errors import GacError
from gac.init_cache import cached_build, source_digest
from gac.upstream import prithvi
from gac.weights import WeightsSource, hf_cached_file, load_strict, read_state_dict, resolve_weights

log = logging.getLogger(__name__)

# Sentinel-2 names of the bands Prithvi was pretrained on (HLS names); others enter as new patch-embedding channels.
S2_TO_HLS = {"B02": "BLUE", "B03": "GREEN", "B04": "RED", "B8A": "NIR_NARROW", "B11": "SWIR_1", "B12": "SWIR_2"}
BACKBONE_SEED = 20240917


def prithvi_names() -> list[str]:
    return sorted(prithvi().vit.pretrained_weights)


def model_bands(channels: list[str]) -> list:
    """terratorch band ids for our input channels: HLS enums where Prithvi knows the band, our names otherwise."""
    hls = prithvi().HLSBands
    return [hls(S2_TO_HLS[c]) if c in S2_TO_HLS else c for c in channels]


def _checkpoint_file(source: WeightsSource, name: str) -> Path:
    if source.kind == "local":
        path = source.path
        if path.is_dir():
            files = sorted([*path.glob("*.pt"), *path.glob("*.pth"), *path.glob("*.safetensors")])
            if len(files) != 1:
                raise GacError(
                    f"{path}: expected exactly one .pt/.pth/.safetensors file for {name} (stage2.weights), found "
                    f"{len(files)}"
                )
            path = files[0]
        return path
    spec = prithvi().vit.pretrained_weights[name]
    path = hf_cached_file(spec["hf_hub_id"], spec["hf_hub_filename"])  # the cache or nothing: never the network
    if path is None:
        raise GacError(
            f"stage2.weights: hf: {spec['hf_hub_id']}/{spec['hf_hub_filename']} is not in the Hugging Face cache; "
            "download it where there is network, or set stage2.weights to a local file or 'random'"
        )
    return path


def build_backbone(name: str, weights: str, channels: list[str]) -> tuple[nn.Module, WeightsSource]:
    """A frozen Prithvi encoder for `channels`, weights from random | hf | a local file (strict)."""
    upstream = prithvi()
    known = prithvi_names()
    if name not in known:
        raise GacError(f"stage2.backbone: unknown backbone {name!r}; use one of {', '.join(known)}")
    source = resolve_weights(weights, name, "stage2.weights")
    path = None if source.is_random else _checkpoint_file(source, name)  # a missing file fails before the build
    bands = model_bands(channels)
    # Seeded: random weights, and the patch-embedding channels a checkpoint lacks (bands Prithvi never saw,
    # S1), must come out the same at refine time as in training.
    identity = {"name": name, "bands": bands, "num_frames": 1, "seed": BACKBONE_SEED, "code": source_digest(__file__)}
    with torch.random.fork_rng():
        torch.manual_seed(BACKBONE_SEED)
        build = functools.partial(upstream.build, name, pretrained=False, bands=bands, num_frames=1)
        model = cached_build(build, identity, continues_rng=True)  # the filter below draws the new bands' channels
        if path is not None:
            state = upstream.vit.checkpoint_filter_fn_vit(
                read_state_dict(path), model, list(upstream.vit.PRETRAINED_BANDS), bands
            )
            load_strict(model, state, path, f"{name} (stage2.backbone)")
            log.info("loaded %s weights from %s", name, path)
    model.requires_grad_(False)
    return model, source


def fingerprint(model: nn.Module) -> float:
    """A cheap checksum of the frozen backbone, recorded so a different backbone at refine time is caught."""
    with torch.no_grad():
        return float(sum(p.double().sum() for n, p in model.named_parameters() if "lora_" not in n))


def quantize_frozen_linears(model: nn.Module, keep_blocks: set[int]) -> int:
    """Swap the Linear layers of every block not in `keep_blocks` for bitsandbytes Linear8bitLt (int8 weights, frozen;
    gac.refine.int8.Linear8bitFrozen, whose training step on CPU keeps no activation for the frozen weights)."""
    import bitsandbytes as bnb

    from gac.refine.int8 import Linear8bitFrozen

    count = 0
    for index, block in enumerate(model.blocks):
        if index in keep_blocks:
            continue
        for parent in block.modules():
            for child_name, child in list(parent.named_children()):
                if type(child) is not nn.Linear:
                    continue
                q = Linear8bitFrozen(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    has_fp16_weights=False,
                    threshold=6.0,
                )
                q.weight = bnb.nn.Int8Params(child.weight.data, requires_grad=False, has_fp16_weights=False)
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, child_name, q.to(child.weight.device))  # moving to a device quantises
                count += 1
    gc.collect()  # the replaced fp32 Linear layers
    return_freed_memory()
    return count


def checkpoint_blocks(model: nn.Module) -> int:
    """Activation checkpointing on every transformer block: in training, keep only each block's input and recompute
    its activations during backward.

    With a frozen (8-bit) backbone the weights are small and the activations
    LoRA needs for its gradients dominate a training step's peak memory; this
    trades one extra forward of the blocks for them. Gradients are the same;
    inference (eval mode or no grad) runs the blocks as before. Module names
    are unchanged (the block's forward is wrapped, not the block), so LoRA
    targets, saved adapters and fingerprints do not see it.
    """
    from torch.utils.checkpoint import checkpoint

    for block in model.blocks:

        def forward(*args, _block=block, _forward=block.forward, **kwargs):
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        block.forward = forward
    return len(model.blocks)


@functools.cache
def _glibc():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to hand back
        return None


def return_freed_memory() -> None:
    """Hand freed heap back to the OS (glibc's `malloc_trim`); elsewhere a no-op.

    glibc keeps freed chunks resident in its arenas. After quantization that
    is the freed fp32 weights; in a training step it is the activations the
    last step freed, scattered through the heap where the next step's
    differently sized tensors do not fit, so RSS climbs towards the
    un-checkpointed peak although far less is alive (Prithvi 300M, 224 px:
    about 300 MB). A trim costs 10-40 ms on that heap, so only the memory
    mode (activation checkpointing) pays it each step.
    """
    libc = _glibc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def add_lora(model: nn.Module, targets: str, rank: int, alpha: float, dropout: float):
    """peft LoRA on the Linear layers whose full name matches `targets` (checked by gac.lora first)."""
    from peft import LoraConfig, get_peft_model

    from gac.lora import lora_target_names

    matched = lora_target_names(model, targets, "stage2.lora_targets", "the backbone")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    return get_peft_model(model, config), len(matched)


def unfreeze_last_blocks(model: nn.Module, n: int, depth: int) -> None:
    """Make every non-LoRA parameter of the last `n` blocks trainable (LoRA there stays trainable too)."""
    wanted = {str(i) for i in range(depth - n, depth)}
    for name, param in model.named_parameters():
        match = re.search(r"(?:^|\.)blocks\.(\d+)\.", name)
        if match and match.group(1) in wanted:
            param.requires_grad_(True)
