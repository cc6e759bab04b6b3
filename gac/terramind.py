"""The shared TerraMind layer: build a generator, standardise, sample tokens, detokenise.

Stages 1 and 3 both generate S2L2A with TerraMind; this module is the one
place that knows how, so both get the fixes for what upstream does silently
wrong:

- weights: `ckpt_path=` on the generate models loads nothing; here weights
  come from `gac.weights` (random | hf | local) and load strictly, TerraMind
  and the S2L2A tokenizer alike.
- the diffusion decoder's scheduler clamps every x0 estimate to [-1, 1] in
  standardised units (reflectance capped at mean +/- 1 std per band); the
  scheduler used here has thresholding and clipping off unless asked for.
- `decoding_steps > 1` crashes upstream; `sample_tokens` does real MaskGIT
  decoding: each step predicts every masked token, keeps the most confident
  ones, and feeds them back to the encoder as S2L2A tokens for the next step.
- tiles whose side is a multiple of 16 but not 32 crash the diffusion UNet;
  the token grid is padded by edge replication for the UNet and cropped back.
- randomness is per tile (a seed per tile, not one stream per batch), so an
  output does not depend on batch size, batch composition, rank or resume.

Heavy imports (torch, terratorch) happen inside functions: importing this
module is cheap. terratorch's pieces come from `gac.upstream`, which imports
TerraMind's modules without the rest of terratorch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from gac.errors import GacError
from gac.init_cache import cached_build, source_digest
from gac.startup import first_model_call
from gac.upstream import terramind, terramind_statistics
from gac.weights import WeightsSource, load_strict, read_state_dict, resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

GENERATE_MODELS = tuple(f"terramind_v1_{size}_generate" for size in ("tiny", "small", "base", "large"))
S1_MODALITIES = ("S1GRD", "S1RTC")
TARGET = "S2L2A"
# Bands each input modality takes, in order; S2L2A as an input is stage 3's conditioning.
INPUT_BANDS = {
    "S1GRD": ("VV", "VH"),
    "S1RTC": ("VV", "VH"),
    "S2L2A": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
}
# Keys of TerraMind's modality registry (MODALITY_INFO and the pretraining statistics).
_RAW_KEY = {"S1GRD": "untok_sen1grd@224", "S1RTC": "untok_sen1rtc@224", "S2L2A": "untok_sen2l2a@224"}
TOKENS_KEY = "tok_sen2l2a@224"
PATCH = 16
# Hugging Face hub file names; a local weights directory holds the same files.
TOKENIZER_FILE = "TerraMind_Tokenizer_S2L2A.pt"
TOKENIZER_REPO = "ibm-esa-geospatial/TerraMind-1.0-Tokenizer-S2L2A"


def model_size(name: str) -> str:
    """'tiny' for 'terramind_v1_tiny_generate'."""
    if name not in GENERATE_MODELS:
        raise GacError(f"unknown TerraMind generator '{name}'; use one of {', '.join(GENERATE_MODELS)}")
    return name.split("_")[2]


def hub_files(name: str) -> tuple[str, str, str]:
    """(repo id, TerraMind file, tokenizer file) on the Hugging Face hub for a generator name."""
    size = model_size(name)
    return f"ibm-esa-geospatial/TerraMind-1.0-{size}", f"TerraMind_v1_{size}.pt", TOKENIZER_FILE


def tile_seed(seed: int, tile_id: str) -> int:
    """A tile's own seed: the same tile gets the same randomness in any batch, rank or resumed run."""
    return zlib.crc32(f"{seed}:{tile_id}".encode()) & 0x7FFFFFFF


def check_s1_product(tiles_ds, path: Path, s1_input: str) -> None:
    """TerraMind standardises S1RTC and S1GRD differently: a store's tiles must hold the product `stage1.input`
    names."""
    product = tiles_ds.attrs.get("s1_product")
    if product and product != s1_input:
        raise GacError(f"{path}: tiles hold {product} but stage1.input is {s1_input}; set stage1.input: {product}")


# ----------------------------------------------------------------------------- standardisation


def pretraining_stats(modality: str) -> tuple[list[float], list[float]]:
    """Per-band mean and std TerraMind was pre-trained with, in physical units (the one place that knows their keys)."""
    means, stds = terramind_statistics()
    key = _RAW_KEY.get(modality, modality)
    if key not in means:
        raise GacError(
            f"no TerraMind pretraining statistics for modality '{modality}'; use one of {', '.join(_RAW_KEY)}"
        )
    return list(means[key]), list(stds[key])


def _stats(modality: str):
    import torch

    mean, std = pretraining_stats(modality)
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float32)[None, :, None, None]  # noqa: E731
    return as_tensor(mean), as_tensor(std)


def standardize(x: "torch.Tensor", modality: str) -> "torch.Tensor":
    """Physical units (dB for S1, reflectance x1e4 for S2) -> TerraMind's standardised units (v1 pretraining
    mean/std)."""
    mean, std = _stats(modality)
    return (x - mean.to(x.device, x.dtype)) / std.to(x.device, x.dtype)


def standardize_filled(x: "torch.Tensor", modality: str) -> "torch.Tensor":
    """`standardize`, with no data (NaN) read as the pretraining mean (0): gac.nodata's rule for TerraMind's inputs.

    Generation, the differentiable training path and the tokenizer ceiling all
    go through it, so a missing pixel means the same thing everywhere.
    """
    from gac.nodata import standardised_filled

    mean, std = _stats(modality)
    return standardised_filled(x, mean.to(x.device, x.dtype), std.to(x.device, x.dtype))


def destandardize(x: "torch.Tensor", modality: str = TARGET) -> "torch.Tensor":
    """Inverse of `standardize`."""
    mean, std = _stats(modality)
    return x * std.to(x.device, x.dtype) + mean.to(x.device, x.dtype)


# ----------------------------------------------------------------------------- model


def build_generator(
    name: str,
    inputs: Sequence[str] = ("S1RTC",),
    weights: str | WeightsSource = "random",
    tile_size: int = 224,
    seed: int = 0,
    key: str = "stage1.weights",
):
    """A TerraMind generate model for `inputs` -> S2L2A, with weights loaded strictly; in eval mode.

    `inputs` are modality names (S1GRD, S1RTC, and S2L2A as conditioning for
    stage 3). Positional embeddings are built for `tile_size` (a tile is a
    crop of what the model saw in pre-training, not a squeezed 224 px image).
    An S2L2A *token* embedding is added to the encoder so iterative decoding
    can feed decoded tokens back (it is part of TerraMind's pre-trained
    encoder; the upstream generate model leaves it out). Random weights are
    seeded with `seed`, so every process builds the same model.

    The seeded initial state is built once per machine and then read from a
    cache (`gac.init_cache`): the same bytes, without initialising 1.2 GB of
    weights (tiny) in every process. Weights from a file are loaded on top.

    The returned model carries `gac_weights` (a WeightsSource) for provenance.
    The diffusion UNet (nearly all of generation's time) holds its conv
    weights channels-last, so oneDNN (CPU) and cuDNN (GPU) run its
    convolutions without reordering activations at every layer; values are
    unchanged.
    """
    import torch

    model_size(name)
    inputs = list(inputs)
    unknown = [m for m in inputs if m not in INPUT_BANDS]
    if unknown or not inputs:
        raise GacError(f"unknown TerraMind input modality {unknown or inputs}; use {', '.join(INPUT_BANDS)}")
    if tile_size % PATCH:
        raise GacError(f"tile size {tile_size} is not a multiple of {PATCH} (TerraMind's patch size)")
    source = weights if isinstance(weights, WeightsSource) else resolve_weights(weights, name, key)
    if source.kind == "local":
        local_files(name, source.path)  # fail before the (slow) build
    build = terramind().build  # imported before seeding, as the model's randomness starts there

    def seeded():
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = build(
                name,
                modalities=inputs,
                output_modalities=[TARGET],
                pretrained=False,
                img_size=tile_size,
                standardize=False,
            )
            _add_token_feedback(model, tile_size)
        finally:
            torch.random.set_rng_state(state)
        model.tokenizer[TOKENS_KEY].decoder.to(memory_format=torch.channels_last)
        return model

    identity = {"name": name, "inputs": inputs, "tile_size": tile_size, "seed": seed, "code": source_digest(__file__)}
    model = cached_build(seeded, identity)
    model.gac_weights = source
    model.gac_name = name
    model.gac_inputs = tuple(inputs)
    if source.kind == "hf":
        load_hf(model, name)
    elif source.kind == "local":
        load_local(model, name, source.path)
    return model.eval()


def _add_token_feedback(model, tile_size: int) -> None:
    mae = model.sampler.model
    if TOKENS_KEY in mae.encoder_embeddings:
        return
    dim = mae.decoder_embeddings[TOKENS_KEY].dim_tokens
    info = terramind().MODALITY_INFO[TOKENS_KEY]
    embedding = info["encoder_embedding"](image_size=tile_size, dim_tokens=None, patch_size=PATCH)
    embedding.init(dim_tokens=dim, init_std=mae.init_std)
    mae.encoder_embeddings[TOKENS_KEY] = embedding
    mae.encoder_modalities.add(TOKENS_KEY)
    mae.share_modality_embeddings()  # as in pre-training: one modality embedding for encoder and decoder


def _is_derived(key: str) -> bool:
    """Fixed sin-cos position tables: a function of the tile size, rebuilt, never loaded."""
    return key.startswith("sampler.model.") and key.endswith("pos_emb")


def _load_terramind(model, hub_state: Mapping, source: Path | str) -> None:
    """Map a hub-format TerraMind checkpoint (keys without 'sampler.model.') onto the model, strictly.

    The hub file holds every modality TerraMind was trained on; the model keeps
    only its own. Anything the model has that the file lacks, or any shape
    that differs (another model size), is an error, not a random fill-in.
    """
    mae = model.sampler.model
    own = {k: v for k, v in mae.state_dict().items() if not _is_derived("sampler.model." + k)}
    feedback = f"encoder_embeddings.{TOKENS_KEY}."
    has_feedback = any(k.startswith(feedback) for k in hub_state)
    if not has_feedback:
        # A file without the S2L2A token embedding still generates, in one decoding step; the embedding
        # keeps its seeded initialisation and sample_tokens never feeds tokens back through it.
        own = {k: v for k, v in own.items() if not k.startswith(feedback)}
        log.warning(
            "%s: no S2L2A token embedding (%s*) to feed decoded tokens back; generating in one decoding step",
            source,
            feedback,
        )
    picked = {k: v for k, v in hub_state.items() if k in own}
    load_strict(_WithoutDerived(mae, own), picked, source, getattr(model, "gac_name", "TerraMind"))
    model.gac_token_feedback = has_feedback


class _WithoutDerived:
    """`load_strict` sees the model without its derived position tables; those keep their rebuilt values."""

    def __init__(self, module, own):
        self.module, self.own = module, own

    def state_dict(self):
        return self.own

    def load_state_dict(self, state, strict=True):
        missing, unexpected = self.module.load_state_dict(state, strict=False)
        leftover = [k for k in missing if not k.endswith("pos_emb") and k in self.own]
        if leftover or unexpected:  # cannot happen after load_strict's checks; guard anyway
            raise RuntimeError(f"partial load: missing {leftover[:3]}, unexpected {unexpected[:3]}")


def _load_tokenizer(model, state: Mapping, source: Path | str) -> None:
    load_strict(model.tokenizer[TOKENS_KEY], state, source, "the S2L2A tokenizer")


def local_files(name: str, directory: Path) -> tuple[Path, Path]:
    """The hub's two files in a local weights directory, checked before any model is built."""
    directory = Path(directory)
    _, tm_file, tok_file = hub_files(name)
    if not directory.is_dir():
        raise GacError(f"{directory}: weights for {name} must be a directory holding {tm_file} and {tok_file}")
    for file in (tm_file, tok_file):
        if not (directory / file).is_file():
            present = sorted(p.name for p in directory.iterdir())[:4]
            raise GacError(
                f"{directory}: {file} not found (holds {present or 'nothing'}); put the hub files for {name} there"
            )
    return directory / tm_file, directory / tok_file


def load_local(model, name: str, directory: Path) -> None:
    """Load TerraMind and the S2L2A tokenizer from a directory holding the hub's files."""
    tm_path, tok_path = local_files(name, directory)
    _load_terramind(model, read_state_dict(tm_path), tm_path)
    _load_tokenizer(model, read_state_dict(tok_path), tok_path)


def load_hf(model, name: str) -> None:
    """Load both files from the local Hugging Face cache; the hub stays offline (no download at run time)."""
    from gac.weights import hf_cached_file

    repo, tm_file, tok_file = hub_files(name)
    paths = []
    for repo_id, file in ((repo, tm_file), (TOKENIZER_REPO, tok_file)):
        path = hf_cached_file(repo_id, file)
        if path is None:
            raise GacError(
                f"{repo_id}/{file}: not in the local Hugging Face cache (weights: hf never downloads); "
                f"fetch it once with `huggingface-cli download {repo_id} {file}` or set weights to a local directory"
            )
        paths.append(path)
    _load_terramind(model, read_state_dict(paths[0]), paths[0])
    _load_tokenizer(model, read_state_dict(paths[1]), paths[1])


def save_hub_checkpoint(model, directory: Path) -> Path:
    """Write the model as the hub's files (TerraMind without 'sampler.model.', the tokenizer on its own).

    What `load_local` reads back; used by tests and to export fine-tuned weights.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _, tm_file, tok_file = hub_files(model.gac_name)
    plain = lambda state: {k: v.detach().cpu().contiguous() for k, v in state.items()}  # noqa: E731  (the hub's layout, not channels-last)
    torch.save(plain(model.sampler.model.state_dict()), directory / tm_file)
    torch.save(plain(model.tokenizer[TOKENS_KEY].state_dict()), directory / tok_file)
    return directory


def diffusion_scheduler(model, capped: bool = False):
    """The tokenizer's DDIM scheduler; uncapped (thresholding and clipping off) unless `capped`.

    Upstream's scheduler thresholds every x0 estimate to [-1, 1] standardised,
    i.e. mean +/- 1 std per band: water NIR, snow and bright sand are out of
    reach. `capped=True` gives upstream's behaviour back, for comparison.
    """
    config = {k: v for k, v in model.tokenizer[TOKENS_KEY].noise_scheduler.config.items() if not k.startswith("_")}
    if not capped:
        config.update(thresholding=False, clip_sample=False)
    return terramind().DDIMScheduler(**config)


# ----------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Decoding:
    """How tokens are sampled and detokenised (stage 1's params carry the same names)."""

    decoding_steps: int = 1
    temperature: float = 1.0
    top_p: float = 0.8
    top_k: int = 0
    timesteps: int = 2
    capped: bool = False  # upstream's mean +/- 1 std cap on the diffusion decoder


def token_schedule(num_tokens: int, steps: int) -> list[int]:
    """Tokens decoded per MaskGIT step: cosine, few first (uncertain) and many last; every step >= 1."""
    steps = max(1, min(steps, num_tokens))
    remaining = [math.cos(math.pi / 2 * (k + 1) / steps) for k in range(steps)]
    left = [round(num_tokens * r) for r in remaining]
    counts, before = [], num_tokens
    for k, after in enumerate(left):
        after = min(after, before - 1, num_tokens - (k + 1))  # at least one per step, room for the rest
        after = max(after, steps - k - 1)
        counts.append(before - after)
        before = after
    return counts


def _autocast(device, precision: str):
    from gac.device import autocast

    return autocast(device, precision)


def _input_dict(model, inputs: Mapping[str, "torch.Tensor"], device):
    import torch

    upstream = terramind()
    first_model_call(model.gac_name)
    mod_dict, size, batch = {}, None, None
    for modality, x in inputs.items():
        if modality not in model.gac_inputs:
            raise GacError(f"the model takes {', '.join(model.gac_inputs)}, not '{modality}'")
        bands = len(INPUT_BANDS[modality])
        if x.ndim != 4 or x.shape[1] != bands:
            raise GacError(
                f"{modality} input has shape {tuple(x.shape)}; TerraMind takes (batch, {bands}, H, W) for {modality}"
            )
        if x.shape[-1] != x.shape[-2] or x.shape[-1] % PATCH:
            raise GacError(
                f"{modality} tiles are {x.shape[-2]}x{x.shape[-1]} px; TerraMind takes square tiles, a multiple of "
                f"{PATCH} px"
            )
        if size is not None and (x.shape[-1] != size or x.shape[0] != batch):
            raise GacError(f"inputs disagree in batch or tile size ({modality}: {tuple(x.shape)})")
        size, batch = x.shape[-1], x.shape[0]
        key = model.mod_name_mapping[modality]
        n = (size // PATCH) ** 2
        value = {
            "tensor": standardize_filled(x.to(device, torch.float32), modality),
            "input_mask": torch.zeros(batch, n, dtype=torch.bool, device=device),
            "target_mask": torch.ones(batch, n, dtype=torch.bool, device=device),
            "decoder_attention_mask": torch.zeros(batch, n, dtype=torch.bool, device=device),
        }
        mod_dict[key] = upstream.init_full_input_modality(value, upstream.MODALITY_INFO, key, device)
    n = (size // PATCH) ** 2
    mod_dict[TOKENS_KEY] = {  # every target token masked: not an encoder input yet, all to predict
        "tensor": torch.zeros(batch, n, dtype=torch.int64, device=device),
        "input_mask": torch.ones(batch, n, dtype=torch.bool, device=device),
        "target_mask": torch.zeros(batch, n, dtype=torch.bool, device=device),
        "decoder_attention_mask": torch.zeros(batch, n, dtype=torch.bool, device=device),
    }
    return mod_dict, size, batch


def sample_logits(logits, decoding: Decoding, generators):
    """(B, N, vocab) logits -> sampled tokens (B, N) and their probability (the MaskGIT confidence).

    Upstream's semantics (nucleus and top-k chosen on the untempered
    distribution, then sampling at `temperature` among the kept tokens) in
    one sort for the whole batch; each tile draws from its own generator.
    """
    import torch

    logits = logits.float()
    if decoding.temperature == 0:
        confidence, tokens = torch.softmax(logits, dim=-1).max(dim=-1)
        return tokens, confidence
    ranked, order = logits.sort(dim=-1, descending=True)
    probs = torch.softmax(ranked, dim=-1)
    keep = (probs.cumsum(dim=-1) - probs) <= decoding.top_p  # the nucleus, with the token that crosses top_p
    if decoding.top_k:
        keep[..., decoding.top_k :] = False
    tempered = torch.softmax((ranked / decoding.temperature).masked_fill(~keep, float("-inf")), dim=-1)
    picks = torch.stack([torch.multinomial(tempered[b], 1, generator=g)[:, 0] for b, g in enumerate(generators)])
    return order.gather(-1, picks[..., None])[..., 0], tempered.gather(-1, picks[..., None])[..., 0]


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def sample_tokens(
    model,
    inputs: Mapping[str, "torch.Tensor"],
    seeds: Sequence[int],
    decoding: Decoding = Decoding(),
    precision: str = "32",
):
    """MaskGIT decoding of the S2L2A token grid: (B, h, w) token ids, h = w = tile size / 16.

    Each of `decoding_steps` steps runs the encoder on the inputs plus the
    tokens decided so far, predicts every still-masked token, samples them
    (temperature, top-k, top-p; one RNG per tile seeded from `seeds`), and
    keeps the most confident share given by a cosine schedule.
    """
    import torch

    device = next(model.parameters()).device
    mod_dict, size, batch = _input_dict(model, inputs, device)
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for a batch of {batch}")
    if decoding.decoding_steps > 1 and not getattr(model, "gac_token_feedback", True):
        _warn_once(
            f"{model.gac_name}: its weights have no S2L2A token embedding; decoding_steps {decoding.decoding_steps} "
            "-> 1"
        )
        decoding = dataclasses.replace(decoding, decoding_steps=1)
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    sampler = model.sampler
    n = (size // PATCH) ** 2
    target = mod_dict[TOKENS_KEY]
    with torch.inference_mode(), _autocast(device, precision):
        for count in token_schedule(n, decoding.decoding_steps):
            logits, positions = sampler.forward_enc_dec_maskgit_batched(mod_dict, TOKENS_KEY)
            tokens, confidence = sample_logits(logits, decoding, generators)
            keep = torch.topk(confidence, count, dim=-1).indices  # the most confident `count` per tile
            tokens, where = tokens.gather(-1, keep), positions.gather(-1, keep)
            target["tensor"] = target["tensor"].scatter(-1, where, tokens)
            target["input_mask"] = target["input_mask"].scatter(-1, where, False)  # now an encoder input
            target["target_mask"] = target["target_mask"].scatter(-1, where, True)  # no longer predicted
            for key in ("x", "emb", "ids"):  # embeddings of the previous step; rebuilt from the tensor
                target.pop(key, None)
    side = size // PATCH
    return target["tensor"].reshape(batch, side, side)


def decode_tokens(
    model, tokens: "torch.Tensor", seeds: Sequence[int], timesteps: int = 2, capped: bool = False, precision: str = "32"
):
    """Token grid (B, h, w) -> reflectance x1e4 (B, 12, 16h, 16w) through the tokenizer's diffusion UNet (DDIM).

    Starting noise is drawn per tile from `seeds` (on the CPU, so it does not
    depend on the device). A grid with an odd side is padded by one row and
    column of edge tokens for the UNet, which needs sides that are a multiple
    of 32 px, and cropped back.
    """
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    tokenizer = model.tokenizer[TOKENS_KEY]
    batch, h, w = tokens.shape
    with torch.inference_mode():
        quant = tokenizer.tokens_to_embedding(tokens.to(device))
        pad_h, pad_w = h % 2, w % 2
        if pad_h or pad_w:
            quant = F.pad(quant, (0, pad_w, 0, pad_h), mode="replicate")
        size_h, size_w = (h + pad_h) * PATCH, (w + pad_w) * PATCH
        noise = [
            torch.randn((tokenizer.n_channels, size_h, size_w), generator=torch.Generator().manual_seed(int(s) + 1))
            for s in seeds
        ]
        image = torch.stack(noise).to(device)
        scheduler = diffusion_scheduler(model, capped=capped)
        scheduler.set_timesteps(timesteps, mode="trailing")
        for t in scheduler.timesteps:
            with _autocast(device, precision):
                x0 = tokenizer.decoder(image, t, quant)
            image = scheduler.step(x0.float(), t, image).prev_sample
        image = image[:, :, : h * PATCH, : w * PATCH]
        return destandardize(image.float(), TARGET)


def generate(
    model,
    inputs: Mapping[str, "torch.Tensor"],
    seeds: Sequence[int],
    decoding: Decoding = Decoding(),
    precision: str = "32",
):
    """Inputs in physical units -> generated S2L2A reflectance x1e4, (B, 12, H, W) float32.

    `model` is any generator from `build_generator` (stage 3 passes one with
    LoRA adapters and S1 + S2L2A inputs); `inputs` maps modality names (S1RTC,
    S1GRD, S2L2A) to (B, C, H, W) tensors in dB / reflectance x1e4; `seeds`
    holds one seed per tile (see `tile_seed`).
    """
    tokens = sample_tokens(model, inputs, seeds, decoding, precision)
    return decode_tokens(model, tokens, seeds, decoding.timesteps, decoding.capped, precision)


def tokenizer_roundtrip(
    model,
    s2: "torch.Tensor",
    seeds: Sequence[int] | None = None,
    timesteps: int = 2,
    capped: bool = False,
    precision: str = "32",
):
    """Ground truth encoded and decoded by the S2L2A tokenizer: the best any token-based generator can do.

    The evaluation's "tokenizer ceiling": (B, 12, H, W) reflectance x1e4 in,
    the same shape out. NaNs (no data) are filled with the band mean first.
    """
    import torch

    device = next(model.parameters()).device
    seeds = list(range(s2.shape[0])) if seeds is None else seeds
    tokenizer = model.tokenizer[TOKENS_KEY]
    with torch.inference_mode():
        x = standardize_filled(s2.to(device, torch.float32), TARGET)
        _, _, tokens = tokenizer.encode(x)
    return decode_tokens(model, tokens, seeds, timesteps, capped, precision)


class TerraMindPredictor:
    """A batch of tiles (gac.runner.Batch) -> generated S2L2A reflectance x 10^4, (B, 12, H, W) float32.

    Stage 1 (the generator takes S1 alone) and stage 3 (it takes S1 and the batch's optical input as S2L2A) are
    the same call: tokens sampled with the batch's token seeds, decoded from its noise seeds.
    """

    def __init__(self, model, s1_input: str, decoding: Decoding, precision: str = "32"):
        self.model, self.s1_input, self.decoding, self.precision = model, s1_input, decoding, precision

    def __call__(self, batch):
        import numpy as np
        import torch

        inputs = {self.s1_input: torch.from_numpy(np.ascontiguousarray(batch.s1, dtype=np.float32))}
        if TARGET in self.model.gac_inputs:  # NaN in the optical input reads as the mean (standardize_filled)
            inputs[TARGET] = torch.from_numpy(np.ascontiguousarray(batch.optical, dtype=np.float32))
        tokens = sample_tokens(self.model, inputs, batch.token_seeds, self.decoding, self.precision)
        d = self.decoding
        return (
            decode_tokens(self.model, tokens, batch.noise_seeds, d.timesteps, d.capped, self.precision)
            .float()
            .cpu()
            .numpy()
        )
