"""Stage 2 model: real Prithvi-EO-2.0 tiny (random weights), real peft LoRA, real bitsandbytes 8-bit, 64 px tiles."""

from __future__ import annotations

import pytest
import torch

from gac.data.store import S2_BANDS
from gac.errors import GacError
from gac.refine.params import Stage2Params

SIDE = 64


def _config(**overrides) -> dict:
    values = dict(head_channels=16, feature_levels=2, use_sar=True)
    values.update(overrides)
    return Stage2Params(**values).training_dict()


def _inputs(batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "opt_v1": 500 + 2500 * torch.rand(batch, 12, SIDE, SIDE, generator=g),
        "s1": -15 + 3 * torch.randn(batch, 2, SIDE, SIDE, generator=g),
        "month": torch.tensor([3, 9, 0, 12][:batch]),
        "lat": torch.tensor([47.0, -33.0, 5.0, 70.0][:batch]),
        "lon": torch.tensor([8.0, 151.0, -60.0, 20.0][:batch]),
    }


@pytest.fixture(scope="module")
def built():
    torch.set_num_threads(2)
    from gac.refine.build import build_refiner

    return build_refiner(_config())


@pytest.fixture(scope="module")
def built_8bit():
    from gac.refine.build import build_refiner

    return build_refiner(_config(backbone_8bit=True, unfreeze_last_blocks=1))


def test_feature_indices_and_metadata_encoding():
    from gac.refine.conditioning import climate_zone, encode_metadata
    from gac.refine.model import feature_indices

    assert feature_indices(12, 4) == [11, 8, 5, 2]
    assert feature_indices(24, 2) == [23, 11]
    features = encode_metadata(
        torch.tensor([1, 4, 0]), torch.tensor([0.0, 90.0, -45.0]), torch.tensor([90.0, 0.0, 180.0])
    )
    assert features.shape == (3, 3 + 3 + 5)
    torch.testing.assert_close(features[0, :3], torch.tensor([0.0, 1.0, 1.0]), atol=1e-6, rtol=0)  # January
    torch.testing.assert_close(features[1, :3], torch.tensor([1.0, 0.0, 1.0]), atol=1e-6, rtol=0)  # April
    torch.testing.assert_close(features[2, :3], torch.zeros(3))  # unknown month
    torch.testing.assert_close(features[0, 3:6], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)  # equator, 90 E
    torch.testing.assert_close(features[1, 3:6], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)  # north pole
    assert climate_zone(torch.tensor([10.0, -30.0, 45.0, 60.0, -80.0])).tolist() == [0, 1, 2, 3, 4]


def test_shapes_residual_start_and_nodata(built):
    refiner, _ = built
    x = _inputs()
    x["opt_v1"][0, :, 5, 7] = float("nan")
    with torch.no_grad():
        out = refiner(**x)
    assert out.shape == (2, 12, SIDE, SIDE)
    assert torch.isfinite(out).all()  # finite everywhere: training's losses mask nodata, they cannot mask NaN
    filled = {**x, "opt_v1": x["opt_v1"].clone()}
    filled["opt_v1"][0, :, 5, 7] = refiner.out_mean[0, :, 0, 0]
    with torch.no_grad():
        torch.testing.assert_close(refiner(**filled), out)  # nodata reads as the band mean (gac.nodata)
    delta = (out - x["opt_v1"]).nan_to_num()
    # A fresh head adds a small residual: opt_v2 starts at opt_v1.
    assert 0 < delta.abs().mean() < 50
    with pytest.raises(ValueError, match="multiple of 16"):
        refiner(x["opt_v1"][..., :40, :40], x["s1"][..., :40, :40], x["month"], x["lat"], x["lon"])


def test_only_lora_and_head_train_and_share_is_small(built):
    refiner, info = built
    depth, dim, rank = info["depth"], info["embed_dim"], 8
    lora = sum(p.numel() for n, p in refiner.named_parameters() if "lora_" in n)
    # qkv (dim -> 3 dim) and proj (dim -> dim) in every block: r * (in + out) each.
    assert lora == depth * rank * ((dim + 3 * dim) + (dim + dim))
    head = sum(p.numel() for p in refiner.head.parameters())
    counts = info["parameters"]
    assert counts["trainable"] == lora + head
    assert counts["trainable_share"] < 0.10, counts  # the earlier attempt's misconfiguration trained 84%
    trainable = [n for n, p in refiner.named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    assert not any(p.requires_grad for n, p in refiner.backbone.named_parameters() if "lora_" not in n)


def test_gradients_reach_only_trainable_parameters(built):
    refiner, _ = built
    refiner.train()
    refiner.zero_grad(set_to_none=True)
    x = _inputs()
    target = x["opt_v1"] * 1.1
    loss = ((refiner(**x) - target) / 1e4).abs().mean()
    loss.backward()
    with_grad = {n for n, p in refiner.named_parameters() if p.grad is not None}
    trainable = {n for n, p in refiner.named_parameters() if p.requires_grad}
    assert with_grad <= trainable
    lora_b = [n for n in with_grad if "lora_B" in n]
    assert len(lora_b) == 24 and all(refiner.get_parameter(n).grad.abs().sum() > 0 for n in lora_b)
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in refiner.head.named_parameters()
        if n.startswith(("out.", "stem."))
    )
    refiner.zero_grad(set_to_none=True)
    refiner.eval()


def test_8bit_backbone_runs_on_cpu_close_to_fp32(built, built_8bit):
    import bitsandbytes as bnb

    fp32, _ = built
    int8, info = built_8bit
    assert info["quantized_linears"] == 4 * 11  # qkv, proj, fc1, fc2 in every block but the unfrozen last one
    base8 = int8.backbone.get_base_model()
    assert isinstance(base8.blocks[0].attn.qkv.base_layer, bnb.nn.Linear8bitLt)
    assert base8.blocks[0].attn.qkv.base_layer.weight.dtype == torch.int8
    assert type(base8.blocks[11].mlp.fc1) is torch.nn.Linear and base8.blocks[11].mlp.fc1.weight.requires_grad
    assert not base8.blocks[10].norm1.weight.requires_grad
    image = torch.randn(2, 8, SIDE, SIDE)
    with torch.no_grad():
        ref = fp32.backbone(image)
        got = int8.backbone(image)
    for level in (2, 11):
        rel = (got[level] - ref[level]).norm() / ref[level].norm()
        assert rel < 0.02, (level, float(rel))  # measured 0.2-0.7% at random init


def test_frozen_8bit_linear_trains_like_bitsandbytes_without_keeping_its_input():
    """The 8-bit layers' training step gives bitsandbytes' outputs and input gradients bit for bit, but keeps no
    activation alive for the backward (bitsandbytes' CPU path holds every input, checkpointing or not)."""
    import gc
    import weakref

    import bitsandbytes as bnb

    from gac.refine.backbone import quantize_frozen_linears
    from gac.refine.int8 import Linear8bitFrozen

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList(
        [torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))]
    )
    reference = bnb.nn.Linear8bitLt(256, 64, has_fp16_weights=False, threshold=6.0)
    reference.weight = bnb.nn.Int8Params(
        model.blocks[0][2].weight.data.clone(), requires_grad=False, has_fp16_weights=False
    )
    reference.bias = torch.nn.Parameter(model.blocks[0][2].bias.data.clone(), requires_grad=False)
    reference = reference.to("cpu")
    assert quantize_frozen_linears(model, keep_blocks=set()) == 2
    ours = model.blocks[0][2]
    assert type(ours) is Linear8bitFrozen and isinstance(ours, bnb.nn.Linear8bitLt) and ours.weight.dtype == torch.int8
    ours.train(), reference.train()
    seen = {}
    for name, layer in (("ours", ours), ("bnb", reference)):
        leaf = torch.randn(2, 5, 256, generator=torch.Generator().manual_seed(1), requires_grad=True)
        hidden = leaf * 2.0  # an activation: only the layer could keep it alive
        alive = weakref.ref(hidden)
        out = layer(hidden)
        del hidden
        gc.collect()
        seen[name] = (alive() is not None, out.detach().clone())
        out.pow(2).sum().backward()
        seen[name] += (leaf.grad.clone(),)
    assert seen["bnb"][0] and not seen["ours"][0]
    assert torch.equal(seen["ours"][1], seen["bnb"][1]) and torch.equal(seen["ours"][2], seen["bnb"][2])
    assert seen["ours"][2].abs().sum() > 0
    with torch.no_grad():  # inference keeps bitsandbytes' own int8 path (threshold, outliers) untouched
        x = torch.randn(3, 256)
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), rtol=0, atol=0)


def test_activation_checkpointing_recomputes_blocks_and_keeps_gradients(built, built_8bit, monkeypatch):
    """auto turns checkpointing on with the 8-bit backbone; a step with it (backbone blocks, and the head's MLPs in
    bands of rows) gives the gradients of a step without."""
    from gac.refine import model as model_module
    from gac.refine.build import build_refiner

    monkeypatch.setattr(model_module, "MLP_BAND_PIXELS", 1024)  # 8 bands of 8 rows at 64 px, batch 2

    assert built[1]["checkpointed_blocks"] == 0 and built_8bit[1]["checkpointed_blocks"] == 12
    with_ckpt = built_8bit[0]
    without, info = build_refiner(_config(backbone_8bit=True, unfreeze_last_blocks=1, activation_checkpointing=False))
    assert info["checkpointed_blocks"] == 0
    trainable = {n: p for n, p in with_ckpt.named_parameters() if p.requires_grad}
    with torch.no_grad():  # the same LoRA and head values in both (the frozen backbone is seeded alike)
        for name, param in without.named_parameters():
            if param.requires_grad:
                param.copy_(trainable[name])
    grads, calls, mlp_calls = [], [], []
    for refiner in (with_ckpt, without):
        calls.append(0)
        mlp_calls.append(0)
        hooks = [
            refiner.backbone.get_base_model()
            .blocks[3]
            .attn.register_forward_hook(lambda *_: calls.__setitem__(-1, calls[-1] + 1)),
            refiner.head.blocks[-1].pw1.register_forward_hook(lambda *_: mlp_calls.__setitem__(-1, mlp_calls[-1] + 1)),
        ]
        refiner.train()
        refiner.zero_grad(set_to_none=True)
        x = _inputs(seed=5)
        (refiner(**x) / 1e4 - 0.1).abs().mean().backward()
        for hook in hooks:
            hook.remove()
        refiner.eval()
        grads.append({n: p.grad.clone() for n, p in refiner.named_parameters() if p.requires_grad})
    assert calls == [2, 1]  # the checkpointed block ran again in backward
    assert mlp_calls == [16, 1]  # the full-resolution MLP: 8 bands, each again in backward
    assert grads[0].keys() == grads[1].keys() and any("lora_A" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7, msg=name)
    assert float(sum(g.abs().sum() for g in grads[0].values())) > 0


def test_memory_mode_hands_freed_heap_back_before_forward_and_before_backward(built, built_8bit, monkeypatch):
    """With checkpointing, a training step trims the heap as it starts and again as backward reaches the refiner
    (before any block is recomputed); inference and the plain mode never do."""
    from gac.refine import backbone as backbone_module

    events: list[str] = []
    monkeypatch.setattr(backbone_module, "return_freed_memory", lambda: events.append("trim"))
    assert built_8bit[0].memory_mode and not built[0].memory_mode
    for refiner, _ in (built_8bit, built):
        events.clear()
        blocks = refiner.backbone.get_base_model().blocks
        hooks = [b.attn.register_forward_hook(lambda *_: events.append("block")) for b in (blocks[0], blocks[-2])]
        refiner.train()
        out = refiner(**_inputs(seed=6))
        forward = list(events)
        (out / 1e4).abs().mean().backward()
        backward = events[len(forward) :]
        refiner.zero_grad(set_to_none=True)
        refiner.eval()
        with torch.no_grad():
            refiner(**_inputs(seed=6))
        for hook in hooks:
            hook.remove()
        if refiner.memory_mode:
            assert forward == ["trim", "block", "block"]
            assert backward == ["trim", "block", "block"]  # trimmed first, then the checkpointed blocks recompute
        else:
            assert forward == ["block", "block"] and backward == []
        assert events[len(forward) + len(backward) :] == ["block", "block"]  # inference: no trim


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_return_freed_memory_gives_freed_heap_back_to_the_os():
    """Freed small allocations below a live one stay resident in glibc's heap until trimmed.

    Measured in a fresh process: in this one, what earlier tests allocated and
    freed (holes in the heap, glibc's raised mmap threshold) decides where the
    allocations below land, and whether free() alone gives them back.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import json
import psutil
from gac.refine.backbone import return_freed_memory

process = psutil.Process()
return_freed_memory()
# 100 MB in chunks below the mmap threshold (heap), each followed by a small live allocation, so that
# freeing them leaves holes free() cannot give back, as a training step's freed activations do.
chunks, live = [], []
for _ in range(1600):
    chunks.append(bytearray(64 * 1024))
    live.append(bytearray(4096))  # over 512 bytes: from malloc, not pymalloc
held = process.memory_info().rss
del chunks
freed = process.memory_info().rss
return_freed_memory()
trimmed = process.memory_info().rss
print(json.dumps(dict(held=held, freed=freed, trimmed=trimmed, live=len(live))))
"""
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rss = json.loads(done.stdout.splitlines()[-1])
    assert rss["held"] - rss["freed"] < 20 * 2**20  # free() alone kept them
    assert rss["freed"] - rss["trimmed"] > 80 * 2**20
    assert rss["live"] == 1600


def test_save_then_load_gives_identical_predictions(built, tmp_path):
    from gac.refine.build import load_refiner, save_refiner

    refiner, info = built
    with torch.no_grad():  # move every trained tensor off its init so the file round trip is really tested
        g = torch.Generator().manual_seed(5)
        for p in refiner.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    refiner.eval()
    x = _inputs()
    with torch.no_grad():
        before = refiner(**x)
        other_month = refiner(**{**x, "month": torch.tensor([9, 3])})
    assert (before - other_month).abs().max() > 0  # FiLM: the month matters once trained
    save_refiner(
        refiner, tmp_path / "stage2", {"config": _config(), "backbone_fingerprint": info["backbone_fingerprint"]}
    )
    assert sorted(p.name for p in (tmp_path / "stage2").iterdir()) == ["adapter", "head.safetensors", "stage2.json"]
    assert (tmp_path / "stage2" / "adapter" / "adapter_config.json").is_file()
    loaded, _ = load_refiner(tmp_path / "stage2")
    with torch.no_grad():
        after = loaded(**x)
    assert torch.equal(before, after)


def test_local_weights_load_strictly_and_refuse_partial_files(built, tmp_path):
    from gac.refine.backbone import build_backbone

    source, _ = build_backbone("prithvi_eo_v2_tiny_tl", "random", ["B02", "B03", "B04", "B8A", "B11", "B12"])
    with torch.no_grad():
        for p in source.parameters():
            p.mul_(1.5)
    # Hub checkpoints are MAE state dicts: the encoder under "encoder.", plus a decoder that is dropped.
    state = {f"encoder.{k}": v for k, v in source.state_dict().items()}
    state["decoder.decoder_embed.weight"] = torch.zeros(2, 2)
    torch.save(state, tmp_path / "prithvi.pt")
    loaded, weights = build_backbone(
        "prithvi_eo_v2_tiny_tl", str(tmp_path / "prithvi.pt"), ["B02", "B03", "B04", "B8A", "B11", "B12"]
    )
    assert weights.provenance() == {"weights": str(tmp_path / "prithvi.pt"), "random_weights": False}
    for name, value in source.state_dict().items():
        if "pos_embed" not in name:
            assert torch.equal(value, loaded.state_dict()[name]), name
    # Channels the checkpoint lacks (S1 here) get a seeded init: refine rebuilds exactly what training used.
    with_sar = [
        build_backbone(
            "prithvi_eo_v2_tiny_tl",
            str(tmp_path / "prithvi.pt"),
            ["B02", "B03", "B04", "B8A", "B11", "B12", "VV", "VH"],
        )[0]
        for _ in range(2)
    ]
    torch.testing.assert_close(with_sar[0].patch_embed.proj.weight, with_sar[1].patch_embed.proj.weight, rtol=0, atol=0)
    torch.testing.assert_close(
        with_sar[0].patch_embed.proj.weight[:, :6], source.patch_embed.proj.weight, rtol=0, atol=0
    )
    del state["encoder.blocks.3.attn.qkv.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(GacError, match=r"partial\.pt: weights do not fit .*missing key.*blocks\.3\.attn\.qkv\.weight"):
        build_backbone(
            "prithvi_eo_v2_tiny_tl", str(tmp_path / "partial.pt"), ["B02", "B03", "B04", "B8A", "B11", "B12"]
        )


def test_hf_weights_missing_from_the_cache_fail_in_one_line(monkeypatch, tmp_path):
    import huggingface_hub.constants

    from gac.refine.backbone import build_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(GacError) as err:
        build_backbone("prithvi_eo_v2_tiny_tl", "hf", ["B02"])
    message = str(err.value)
    assert "\n" not in message and "Prithvi-EO-2.0-tiny-TL" in message and "not in the Hugging Face cache" in message


def test_bad_model_params_fail_in_one_line():
    from gac.params import validate_params
    from gac.refine.backbone import add_lora, build_backbone

    backbone, _ = build_backbone("prithvi_eo_v2_tiny_tl", "random", ["B02", "B03"])
    with pytest.raises(GacError) as err:
        add_lora(backbone, r"blocks\.\d+\.attention\.query", 4, 8, 0.0)
    message = str(err.value)
    assert "\n" not in message and "stage2.lora_targets" in message
    assert "blocks.N.attn.qkv" in message and "blocks.N.mlp.fc1" in message
    with pytest.raises(GacError, match="not Linear layers, e.g. blocks.0.attn;"):
        add_lora(backbone, r"blocks\.\d+\.attn", 4, 8, 0.0)
    with pytest.raises(GacError, match="stage2.backbone: unknown backbone 'prithvi_eo_v2_50'.*prithvi_eo_v2_tiny_tl"):
        build_backbone("prithvi_eo_v2_50", "random", ["B02"])
    with pytest.raises(GacError) as err:
        validate_params({"stage2": {"bands": ["B02", "B8B"]}})
    assert "\n" not in str(err.value) and "stage2.bands" in str(err.value) and "'B8B' does not exist" in str(err.value)
    assert Stage2Params().bands == ("B02", "B03", "B04", "B8A", "B11", "B12")
    assert set(Stage2Params().bands) <= set(S2_BANDS)


def test_hf_weights_never_contact_the_hub_even_without_hf_hub_offline(tmp_path):
    """`weights: hf` for stage 2 and for TerraMind (stages 1, 3) with HF_HUB_OFFLINE unset and the hub pointed at a
    local listener: a one-line 'not in the cache' error, and not one connection to the listener."""
    import os
    import socket
    import subprocess
    import sys
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connections, stop = [], threading.Event()

    def listen():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (socket.timeout, OSError):
                continue
            connections.append(conn)
            conn.close()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}", HF_HOME=str(tmp_path / "hf"))
    code = (
        "from gac.errors import GacError\n"
        "from gac.refine.backbone import build_backbone\n"
        "from gac.terramind import build_generator\n"
        "for build in (lambda: build_backbone('prithvi_eo_v2_tiny_tl', 'hf', ['B02']),\n"
        "              lambda: build_generator('terramind_v1_tiny_generate', ['S1RTC'], 'hf', tile_size=32)):\n"
        "    try:\n        build()\n    except GacError as exc:\n        print(exc)\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
    finally:
        stop.set()
        thread.join()
        server.close()
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 2, out.stderr[-2000:]
    assert "Prithvi-EO-2.0-tiny-TL" in lines[0] and "not in the Hugging Face cache" in lines[0]
    assert "TerraMind-1.0-tiny" in lines[1] and "not in the local Hugging Face cache" in lines[1]
    assert connections == []
