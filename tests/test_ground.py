"""Stage 3: TerraMind tiny (random weights), real peft LoRA, real Lightning, real Zarr, 32 px demo tiles.

One LoRA model is built per module; training runs once (module fixture) and
the adapter it writes is reused by the save/load and `ground` tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from gac.errors import GacError
from gac.finetune.params import Stage1FinetuneParams
from gac.params import validate_params

torch.set_num_threads(2)
TILE = 32
CROSS_ATTN = re.compile(r"sampler\.model\.decoder\.\d+\.cross_attn\.(q|kv|proj)\.lora_[AB]\.default\.weight")


def _crop_store(src: Path, dst: Path, size: int) -> Path:
    """The conftest tiles store cut to its top-left `size` px (same tiles, same transforms), one S1 pixel made
    nodata."""
    from gac.data.store import open_store, write_store

    ds = open_store(src, need=("s1", "s2")).isel(y=slice(0, size), x=slice(0, size)).load()
    ds["s1"].values[0, :, 0, 0] = np.nan
    write_store(ds, dst, shard_tiles=4)
    return dst


def _blurred_copy(tiles: Path, dst: Path, reverse: bool = False) -> Path:
    """A stand-in opt_v2: the ground truth, box-blurred (what stage 2 would roughly give); optionally tiles reversed."""
    from scipy import ndimage

    from gac.data.store import open_store, write_store

    ds = open_store(tiles, need=("s1", "s2")).drop_vars(["s1", "s1_band"]).load()
    ds["s2"].values[:] = ndimage.uniform_filter(np.nan_to_num(ds["s2"].values, nan=1000.0), size=(1, 1, 5, 5))
    if reverse:
        ds = ds.isel(tile=slice(None, None, -1))
    write_store(ds, dst, shard_tiles=4)
    return dst


@pytest.fixture(scope="module")
def stores(tiles_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("ground")
    tiles = _crop_store(tiles_store, root / "tiles.zarr", TILE)
    return {"root": root, "tiles": tiles, "opt_v2": _blurred_copy(tiles, root / "opt_v2.zarr")}


@pytest.fixture(scope="module")
def params():
    return validate_params(
        {
            "seed": 3,
            "tile": {"size": TILE, "shard_tiles": 4},
            "stage3": {
                "max_epochs": 4,
                "batch_size": 2,
                "lr": 1e-2,
                "warmup_steps": 0,
                "accelerator": "cpu",
                "early_stopping_patience": 10,
                "infer": {"timesteps": 1},
            },
        }
    )


@pytest.fixture(scope="module")
def net(params, stores):
    from gac.ground.job import stage3_target
    from gac.tuning.train import build_lora_generator

    model, counts = build_lora_generator(stage3_target(params, stores["opt_v2"]), params.stage3, TILE, params.seed)
    model.counts = counts
    return model


@pytest.fixture(scope="module")
def batch(stores):
    from torch.utils.data import default_collate

    from gac.data.dataset import TileDataset

    ds = TileDataset(stores["tiles"], split="train", inputs={"opt": stores["opt_v2"]})
    return default_collate([ds[0], ds[1]])


@pytest.fixture(scope="module")
def trained(params, stores):
    """The real `gac train-stage3` path: Lightning, DVCLive, checkpoints, adapter written whole."""
    from gac.ground.job import stage3_target
    from gac.tuning.train import train_adapter

    root = stores["root"]
    record = train_adapter(
        stage3_target(params, stores["opt_v2"]), params, stores["tiles"], root / "stage3", root / "live", root / "ckpt"
    )
    return {"record": record, "out": root / "stage3", "live": root / "live", "ckpt": root / "ckpt" / "stage3"}


def _objective(**kw):
    from gac.tuning.objective import TuningObjective

    return TuningObjective("S1RTC", "opt", **kw)


def _lora_params(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_lora_sits_on_decoder_cross_attention_only(net):
    trainable = _lora_params(net.get_base_model())
    # tiny: 4 decoder blocks x (q 192->192, kv 192->384, proj 192->192), rank 8: 8 * (384 + 576 + 384) per block
    assert net.counts["trainable"] == sum(p.numel() for p in trainable.values()) == 4 * 8 * (384 + 576 + 384)
    assert net.counts["lora_modules"] == 12 and len(trainable) == 24
    assert all(CROSS_ATTN.fullmatch(n) for n in trainable)
    assert not any("lora" in n for n, _ in net.get_base_model().tokenizer.named_parameters())
    assert net.counts["trainable_share"] == pytest.approx(net.counts["trainable"] / net.counts["total"])
    assert net.counts["trainable_share"] < 1e-3


def test_one_pass_logits_equal_the_samplers_masked_forward(net, batch):
    """The differentiable path computes what generation's own forward computes (measured: equal to 5e-7)."""
    from terratorch.models.backbones.terramind.model.generate import init_full_input_modality
    from terratorch.models.backbones.terramind.model.modality_info import MODALITY_INFO

    from gac.terramind import TOKENS_KEY
    from gac.tuning import differentiable as D
    from gac.tuning.objective import model_inputs

    model = net.get_base_model()
    inputs = model_inputs(batch, "S1RTC", "opt")
    b, n = 2, (TILE // 16) ** 2
    mod_dict = {}
    for name, x in inputs.items():
        key = model.mod_name_mapping[name]
        masks = {
            "input_mask": torch.zeros(b, n, dtype=torch.bool),
            "target_mask": torch.ones(b, n, dtype=torch.bool),
            "decoder_attention_mask": torch.zeros(b, n, dtype=torch.bool),
        }
        mod_dict[key] = init_full_input_modality({"tensor": x, **masks}, MODALITY_INFO, key, "cpu")
    mod_dict[TOKENS_KEY] = {
        "tensor": torch.zeros(b, n, dtype=torch.long),
        "input_mask": torch.ones(b, n, dtype=torch.bool),
        "target_mask": torch.zeros(b, n, dtype=torch.bool),
        "decoder_attention_mask": torch.zeros(b, n, dtype=torch.bool),
    }
    with torch.no_grad():
        ours = D.token_logits(model, inputs)
        theirs, positions = model.sampler.forward_enc_dec_maskgit_batched(mod_dict, TOKENS_KEY)
    theirs = torch.gather(theirs, 1, torch.argsort(positions, 1)[..., None].expand_as(theirs))
    assert ours.shape == (2, n, 15360)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_gradient_reaches_every_lora_parameter_and_nothing_frozen(net, batch):
    model = net.get_base_model()
    lora = _lora_params(model)
    saved = {n: p.detach().clone() for n, p in lora.items()}
    objective = _objective()
    try:
        net.zero_grad(set_to_none=True)
        loss, logs = objective(model, batch)
        assert loss.requires_grad and logs["ce"] > 0
        loss.backward()
        # peft starts B at zero: B gets gradient at once, A only once B has moved.
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)
        assert all(p.grad is not None and p.grad.abs().sum() == 0 for n, p in lora.items() if "lora_A" in n)
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
        with torch.no_grad():
            for p in lora.values():
                p -= 1e-2 * p.grad
        net.zero_grad(set_to_none=True)
        objective(model, batch)[0].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    finally:
        with torch.no_grad():
            for n, p in lora.items():
                p.copy_(saved[n])
        net.zero_grad(set_to_none=True)


@pytest.fixture
def unet_on(net):
    """The tokenizer UNet's output layer set non-zero (upstream zero-initialises it), so the pixel path carries
    gradient."""
    from gac.tuning import differentiable as D

    out_conv = D.s2_tokenizer(net.get_base_model()).decoder.out[-1]
    saved = out_conv.weight.detach().clone()
    with torch.no_grad():
        out_conv.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    yield out_conv
    with torch.no_grad():
        out_conv.weight.copy_(saved)
    net.zero_grad(set_to_none=True)


def _lora_grad(net, batch, objective, batch_idx=None) -> tuple[torch.Tensor, dict]:
    """Every LoRA gradient, flattened into one vector, for one batch; the UNet's noise and the crop seeded alike."""
    model = net.get_base_model()
    net.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    loss, logs = objective(model, batch, batch_idx)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in _lora_params(model).values()])
    net.zero_grad(set_to_none=True)
    return grad, logs


def test_pixel_path_sends_gradient_once_the_unet_output_layer_is_nonzero(net, batch):
    from gac.tuning import differentiable as D

    out_conv = D.s2_tokenizer(net.get_base_model()).decoder.out[-1]
    objective = _objective(loss={"ce": 0.0, "sar": 1.0, "identity": 0.5, "l1": 1.0, "ms_ssim": 0.5}, pixel_crop=0)
    assert objective.uses_pixels
    assert float(out_conv.weight.abs().sum()) == 0.0  # zero-initialised upstream
    zero, logs = _lora_grad(net, batch, objective)
    assert float(zero.norm()) == 0.0 and {
        "pixel_l1",
        "pixel_ms_ssim",
        "sar",
        "sar_edge",
        "sar_texture",
        "identity",
    } <= set(logs)
    # a flat image agrees with no radar edge: the SAR term is at its maximum, 1
    assert float(logs["sar"]) == pytest.approx(1.0, abs=1e-6)
    saved = out_conv.weight.detach().clone()
    try:
        with torch.no_grad():
            out_conv.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
        nonzero, _ = _lora_grad(net, batch, objective)
        assert float(nonzero.norm()) > 0
    finally:
        with torch.no_grad():
            out_conv.weight.copy_(saved)
        net.zero_grad(set_to_none=True)


@pytest.mark.parametrize("term", ["sar", "identity", "l1", "ms_ssim", "spectral", "colour", "lpips"])
def test_each_loss_term_changes_the_lora_gradient(net, batch, unet_on, term, caplog):
    from gac.losses import lpips_available

    base, _ = _lora_grad(net, batch, _objective(loss={"ce": 1.0}, pixel_crop=0))
    assert float(base.norm()) > 0
    with caplog.at_level("WARNING", logger="gac.tuning.objective"):
        objective = _objective(loss={"ce": 1.0, term: 1.0}, pixel_crop=0)
    grad, logs = _lora_grad(net, batch, objective)
    available, reason = lpips_available()
    if term == "lpips" and not available:  # off, with the reason said once, and the gradient is cross-entropy's alone
        assert [r.getMessage() for r in caplog.records if "lpips" in r.getMessage()] == [f"loss.lpips 1.0: {reason}"]
        assert torch.equal(grad, base) and not objective.uses_pixels
        return
    logged = {"sar": "sar", "identity": "identity"}.get(term, f"pixel_{term}")
    assert torch.isfinite(logs[logged]) and float(logs[logged]) > 0
    assert torch.isfinite(grad).all() and not torch.allclose(grad, base, rtol=1e-4, atol=1e-9), term
    if term == "identity":  # the blurred stand-in opt_v2 agrees with the radar in places, not everywhere
        assert 0 < float(logs["input_agreement"]) < 1


def test_pixel_path_runs_on_every_kth_batch_and_on_a_token_aligned_crop(net, batch, unet_on):
    from gac.tuning import differentiable as D
    from gac.tuning.objective import model_inputs

    objective = _objective(loss={"ce": 1.0, "l1": 1.0}, pixel_every=3)
    with_pixels, logs = _lora_grad(net, batch, objective, batch_idx=3)
    assert "pixel_l1" in logs
    without, logs = _lora_grad(net, batch, objective, batch_idx=4)
    assert "pixel_l1" not in logs
    ce_only, _ = _lora_grad(net, batch, _objective(loss={"ce": 1.0}))
    assert torch.equal(without, ce_only) and not torch.equal(with_pixels, ce_only)
    # the crop: whole 16 px tokens, inside the tile, every position reachable; a crop as large as the tile is the tile
    windows = {D.random_window((64, 48), 32, torch.Generator().manual_seed(s)) for s in range(40)}
    assert windows == {(top, left, 32, 32) for top in (0, 16, 32) for left in (0, 16)}
    assert D.random_window((32, 32), 32) == D.random_window((32, 32), 0) == (0, 0, 32, 32)
    model = net.get_base_model()
    with torch.no_grad():
        logits = D.token_logits(model, model_inputs(batch, "S1RTC", "opt"))
        assert D.soft_decode(model, logits, (TILE, TILE), window=(16, 0, 16, 16)).shape == (2, 12, 16, 16)


def test_validation_scores_follow_the_adapter_not_the_global_random_stream(net, batch, unet_on):
    """Validation decodes each tile with noise seeded by the tile: the score that selects checkpoints is the same
    whatever ran before it (another epoch, another batch order), and still depends on the noise of each tile."""
    objective = _objective(loss={"ce": 1.0, "l1": 1.0}, pixel_crop=0)
    model = net.get_base_model()
    scores = []
    for state in (0, 1):
        torch.manual_seed(state)  # what training left in the global stream
        scores.append(objective.validate(model, batch))
    for name in ("loss", "psnr", "sam_deg", "sar_edge", "gac_score"):
        assert torch.equal(scores[0][name], scores[1][name]), name
    other_tiles = objective.validate(model, {**batch, "index": batch["index"] + 100})  # same pixels, other tiles' noise
    assert float(other_tiles["psnr"]) != float(scores[0]["psnr"])


def _mean_ce(model, stores, split="train") -> float:
    from torch.utils.data import default_collate

    from gac.data.dataset import TileDataset

    ds = TileDataset(stores["tiles"], split=split, inputs={"opt": stores["opt_v2"]})
    batch = default_collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        return float(_objective()(model, batch)[1]["ce"])


def test_training_lowers_cross_entropy_and_records_what_it_did(trained, net, stores):
    from gac.terramind import build_generator
    from gac.tuning.lora import STAGE3_ADAPTER, load_adapter

    record, out = trained["record"], trained["out"]
    before = _mean_ce(net.get_base_model(), stores)  # the fixture's LoRA is untrained: B = 0, the base model
    fresh = build_generator("terramind_v1_tiny_generate", inputs=["S1RTC", "S2L2A"], tile_size=TILE, seed=3)
    after = _mean_ce(load_adapter(fresh, out, STAGE3_ADAPTER, ["S1RTC", "S2L2A"]).get_base_model(), stores)
    assert after < before - 0.1, (before, after)

    saved = json.loads((out / "adapter.json").read_text())
    assert saved["random_weights"] is True and saved["weights"] == "random"
    assert saved["parameters"]["trainable"] == 10752 * 4 and saved["inputs"] == ["S1RTC", "S2L2A"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not out.with_name("stage3.partial").exists()
    norms = np.loadtxt(trained["live"] / "plots" / "metrics" / "train" / "lora_grad_norm.tsv", skiprows=1)[:, 1]
    assert len(norms) == record["global_step"] and (norms > 0).all()
    ce = np.loadtxt(trained["live"] / "plots" / "metrics" / "train" / "ce_epoch.tsv", skiprows=1, ndmin=2)[:, 1]
    assert ce[-1] < ce[0]
    # selection follows stage3.monitor (gac_score by default), evaluate's definition: 0.5 SAR-edge + 0.5 clip(PSNR / 40
    # dB)
    val = {
        name: np.loadtxt(trained["live"] / "plots" / "metrics" / "val" / f"{name}.tsv", skiprows=1, ndmin=2)[:, 1]
        for name in ("gac_score", "psnr", "sar_edge", "sam_deg", "ce", "loss", "sar")
    }
    assert len(val["gac_score"]) == 4 and record["selected_by"]["monitor"] == "val/gac_score"
    assert record["selected_by"]["mode"] == "max" and record["selected_by"]["best"] == pytest.approx(
        val["gac_score"].max()
    )
    assert record["best_val_loss"] is None  # the monitor is not the loss
    # random weights: every decode is the flat per-band mean, which agrees with no radar edge (score 0, SAR term 1)
    np.testing.assert_allclose(val["sar_edge"], 0.0, atol=1e-6)
    np.testing.assert_allclose(val["sar"], 1.0, atol=1e-6)
    np.testing.assert_allclose(val["gac_score"], 0.5 * np.clip(val["psnr"] / 40, 0, 1), rtol=1e-5)
    assert (val["psnr"] > 5).all() and (val["sam_deg"] > 0).all()
    # the SAR term is logged on the pixel-path batches (every stage3.loss.pixel_every-th), for the step plot
    sar_steps = np.loadtxt(trained["live"] / "plots" / "metrics" / "train" / "sar_step.tsv", skiprows=1, ndmin=2)
    assert record["global_step"] == 12 and record["loss"]["sar"] == 1.0 and record["loss"]["pixel_every"] == 2
    assert sar_steps[:, 0].tolist() == [
        0,
        2,
        3,
        5,
        6,
        8,
        9,
        11,
    ]  # batches 0 and 2 of each 3-batch epoch, at their own steps
    # checkpoints carry the LoRA and optimizer only, not the frozen 300M parameters
    assert (trained["ckpt"] / "last.ckpt").stat().st_size < 5e6


def test_saved_adapter_reproduces_the_trained_weights_and_outputs(trained, net, batch):
    from gac.terramind import build_generator
    from gac.tuning import differentiable as D
    from gac.tuning.lora import STAGE3_ADAPTER, load_adapter
    from gac.tuning.objective import model_inputs

    ckpt = torch.load(trained["ckpt"] / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    lora = _lora_params(net)
    saved = {n: p.detach().clone() for n, p in lora.items()}
    inputs = model_inputs(batch, "S1RTC", "opt")
    try:
        with torch.no_grad():
            for n, p in lora.items():
                p.copy_(ckpt[f"net.{n}"])
            trained_logits = D.token_logits(net.get_base_model(), inputs)
    finally:
        with torch.no_grad():
            for n, p in lora.items():
                p.copy_(saved[n])
    loaded = load_adapter(
        build_generator("terramind_v1_tiny_generate", inputs=["S1RTC", "S2L2A"], tile_size=TILE, seed=3),
        trained["out"],
        STAGE3_ADAPTER,
        ["S1RTC", "S2L2A"],
    )
    with torch.no_grad():
        loaded_logits = D.token_logits(loaded.get_base_model(), inputs)
        base_logits = D.token_logits(net.get_base_model(), inputs)
    assert torch.equal(loaded_logits, trained_logits)
    assert not torch.allclose(loaded_logits, base_logits, atol=1e-3)  # the adapter does something


def test_ground_ablation_on_opt_v1_writes_opt_v3_aligned_with_tiles(trained, stores):
    """`gac ground --input v1` (in-process: terratorch is imported already); v2 runs the same code on opt_v2."""
    from typer.testing import CliRunner

    from gac.data.store import open_store
    from gac.terramind import destandardize
    from stages.cli import app
    from stages.ground import GROUND_INPUTS

    # the command's defaults are the stores dvc.yaml wires each ground stage to
    stages = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())["stages"]
    for label, (optical, written) in GROUND_INPUTS.items():
        stage = next(s for s in stages.values() if s["cmd"] == f"gac ground --input {label}")
        assert optical in stage["deps"] and stage["outs"] == [written]
    root = stores["root"]
    (root / "params.yaml").write_text(
        "seed: 3\ntile: {size: 32, shard_tiles: 4}\nstage3: {infer: {timesteps: 1, batch_size: 4, device: cpu}}\n"
    )
    opt_v1 = _blurred_copy(stores["tiles"], root / "opt_v1.zarr")
    result = CliRunner().invoke(
        app,
        [
            "ground",
            "--params",
            str(root / "params.yaml"),
            "--input",
            "v1",
            "--tiles",
            str(stores["tiles"]),
            "--adapter",
            str(trained["out"]),
            "--optical",
            str(opt_v1),
            "--out",
            str(root / "opt_v3_on_v1.zarr"),
        ],
    )
    assert result.exit_code == 0, result.output[-2000:]
    assert "stage 3 on opt_v1, weights random (RANDOM)" in result.output
    tiles = open_store(stores["tiles"], need=("s1", "s2"))
    out = open_store(root / "opt_v3_on_v1.zarr")
    assert [str(t) for t in out.tile.values] == [str(t) for t in tiles.tile.values]
    assert np.array_equal(out.transform.values, tiles.transform.values)
    assert out.attrs["random_weights"] is True and out.attrs["weights"] == "random" and out.attrs["input"] == "opt_v1"
    assert out.attrs["adapter_params_hash"] == trained["record"]["params_hash"]
    values = out.s2.values
    assert values.shape == (tiles.sizes["tile"], 12, TILE, TILE)
    # no output where the radar saw nothing; everywhere else a value
    s1_missing = np.isnan(tiles.s1.values).any(axis=1)
    assert s1_missing.sum() >= 1 and np.array_equal(np.isnan(values), np.repeat(s1_missing[:, None], 12, axis=1))
    # random weights: the UNet's zero-initialised output layer makes every image the per-band pretraining mean
    mean = destandardize(torch.zeros(1, 12, 1, 1)).numpy()[0, :, 0, 0]
    np.testing.assert_allclose(np.nanmean(values, axis=(0, 2, 3)), mean, rtol=1e-5)


def test_opt_v2_out_of_step_with_tiles_is_one_line_and_writes_nothing(params, stores, trained):
    from gac.ground.infer import ground
    from gac.ground.job import stage3_target
    from gac.tuning.train import train_adapter

    root = stores["root"]
    shuffled = _blurred_copy(stores["tiles"], root / "opt_v2_reversed.zarr", reverse=True)
    with pytest.raises(GacError) as err:
        train_adapter(
            stage3_target(params, shuffled),
            params,
            stores["tiles"],
            root / "bad_stage3",
            root / "bad_live",
            root / "bad_ckpt",
        )
    assert str(shuffled) in str(err.value) and "\n" not in str(err.value) and "re-run" in str(err.value)
    assert not (root / "bad_stage3").exists() and not (root / "bad_live").exists() and not (root / "bad_ckpt").exists()
    with pytest.raises(GacError, match="tile ids disagree"):
        ground(params, stores["tiles"], shuffled, trained["out"], root / "bad_v3.zarr")
    assert not (root / "bad_v3.zarr").exists() and not (root / "bad_v3.zarr.partial").exists()


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"sampler\.model\.decoder\.\d+\.nothing", "matches no module"),
        (r".*\.qkv", r"outside sampler\.model\.\*, e\.g\. tokenizer"),
        (r"sampler\.model\.decoder\.\d+\.cross_attn", "not Linear layers"),
    ],
)
def test_bad_lora_regex_is_one_line(net, pattern, message):
    from gac.lora import lora_target_names
    from gac.tuning.lora import TERRAMIND_PREFIX

    with pytest.raises(GacError, match=message) as err:
        lora_target_names(
            net.get_base_model(), pattern, "stage3.lora_targets", "terramind_v1_tiny_generate", within=TERRAMIND_PREFIX
        )
    assert "stage3.lora_targets" in str(err.value) and "\n" not in str(err.value)


def test_adapter_of_another_size_or_inputs_is_refused(trained, tmp_path):
    from gac.tuning.lora import STAGE3_ADAPTER, checked_adapter_record

    both = ["S1RTC", "S2L2A"]
    assert (
        checked_adapter_record(trained["out"], STAGE3_ADAPTER, "terramind_v1_tiny_generate", both)["model"]
        == "terramind_v1_tiny_generate"
    )
    with pytest.raises(
        GacError,
        match=r"trained for terramind_v1_tiny_generate but stage3\.model is terramind_v1_small_generate; "
        r"set stage3\.model: terramind_v1_tiny_generate or re-train it \(dvc repro train-stage3\)$",
    ):
        checked_adapter_record(trained["out"], STAGE3_ADAPTER, "terramind_v1_small_generate", both)
    with pytest.raises(GacError, match=r"trained on inputs \['S1RTC', 'S2L2A'\] but takes \['S1GRD', 'S2L2A'\] now"):
        checked_adapter_record(trained["out"], STAGE3_ADAPTER, "terramind_v1_tiny_generate", ["S1GRD", "S2L2A"])
    with pytest.raises(GacError, match=r"no trained stage-3 adapter there; run `gac train-stage3`"):
        checked_adapter_record(tmp_path, STAGE3_ADAPTER, "terramind_v1_tiny_generate", both)


def test_invalid_lora_regex_and_loss_settings_fail_at_params():
    with pytest.raises(GacError, match=r"stage3\.lora_targets: not a valid regular expression"):
        validate_params({"stage3": {"lora_targets": "sampler(("}})
    with pytest.raises(GacError, match=r"unknown key 'stage3\.loss\.l2'"):
        validate_params({"stage3": {"loss": {"l2": 1.0}}})
    with pytest.raises(GacError, match=r"stage3\.loss\.pixel_crop: .*multiple of 16 of at least 32 px; try 48"):
        validate_params({"stage3": {"loss": {"pixel_crop": 40}}})
    with pytest.raises(GacError, match=r"stage3\.loss: .*every loss weight is 0"):
        validate_params({"stage3": {"loss": {"ce": 0, "sar": 0, "identity": 0, "l1": 0, "spectral": 0}}})
    # stage 1 takes S1 alone: there is no opt_v2 to stay close to
    with pytest.raises(GacError, match=r"unknown key 'stage1_finetune\.loss\.identity'"):
        validate_params({"stage1_finetune": {"loss": {"identity": 0.5}}})


def test_loss_defaults_ground_stage3_and_keep_the_original_stage1_loss():
    p = validate_params({})
    assert p.stage3.loss.pixel_weights() == {"sar": 1.0, "identity": 0.5, "l1": 1.0, "spectral": 0.1}
    assert p.stage3.loss.ce == 1.0 and p.stage3.monitor == "gac_score"
    assert p.stage1_finetune.loss.pixel_weights() == {"l1": 1.0, "ms_ssim": 0.5, "lpips": 0.1, "colour": 0.5}


@pytest.fixture(scope="module")
def finetuned(params, stores):
    """Item 4: stage 1's generator (S1 -> S2L2A) fine-tuned through the same path, which `generate()` could not do."""
    from gac.finetune.handover import stage1_finetune_target
    from gac.tuning.train import train_adapter

    root = stores["root"]
    # stage 1's fine-tuning has its own section: the same knobs as the stage-3 fixture, two epochs
    knobs = {
        k: v for k, v in params.stage3.training_dict().items() if k in Stage1FinetuneParams.model_fields and k != "loss"
    }
    quick = params.model_copy(
        update={"stage1_finetune": Stage1FinetuneParams(**{**knobs, "enabled": True, "max_epochs": 2})}
    )
    job = stage1_finetune_target(quick)
    assert job.optical is None and job.stage == "stage1_finetune"
    record = train_adapter(job, quick, stores["tiles"], root / "stage1_finetune", root / "live_s1", root / "ckpt")
    return {"record": record, "out": root / "stage1_finetune", "live": root / "live_s1"}


def test_stage1_finetune_trains_the_generator_on_s1_alone(finetuned):
    record, live = finetuned["record"], finetuned["live"]
    assert record["inputs"] == ["S1RTC"] and record["parameters"]["trainable"] == 4 * 8 * (384 + 576 + 384)
    saved = json.loads((finetuned["out"] / "adapter.json").read_text())
    assert saved["stage"] == "stage1_finetune" and saved["random_weights"] is True
    norms = np.loadtxt(live / "plots" / "metrics" / "train" / "lora_grad_norm.tsv", skiprows=1)[:, 1]
    assert (norms > 0).all()
    ce = np.loadtxt(live / "plots" / "metrics" / "train" / "ce_epoch.tsv", skiprows=1, ndmin=2)[:, 1]
    assert ce[-1] < ce[0]


def test_cli_errors_are_one_line_before_any_model_is_built(stores, tmp_path):
    from tests.conftest import run_gac

    root = tmp_path
    (root / "params.yaml").write_text("seed: 3\ntile: {size: 32, shard_tiles: 4}\n")
    bad = run_gac("ground", "--input", "v3", cwd=root)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--input 'v3'" in bad.stderr
    shuffled = _blurred_copy(stores["tiles"], root / "opt_v2_cli_reversed.zarr", reverse=True)
    bad = run_gac(
        "train-stage3",
        "--tiles",
        str(stores["tiles"]),
        "--optical",
        str(shuffled),
        "--out",
        str(root / "cli_stage3"),
        "--live",
        str(root / "cli_live"),
        cwd=root,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr[-2000:]
    assert str(shuffled) in bad.stderr and "tile ids disagree" in bad.stderr
    assert not (root / "cli_stage3").exists() and not (root / "cli_live").exists()
    bad = run_gac(
        "ground",
        "--tiles",
        str(stores["tiles"]),
        "--optical",
        str(stores["opt_v2"]),
        "--adapter",
        str(root / "none"),
        "--out",
        str(root / "v3.zarr"),
        cwd=root,
    )
    assert (
        bad.returncode == 2 and "no trained stage-3 adapter" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    )
    assert not (root / "v3.zarr").exists() and not (root / "v3.zarr.partial").exists()


def test_weights_of_another_terramind_size_are_one_line_and_nothing_is_written(params, stores, net, tmp_path):
    """stage3.model small with a directory holding tiny's files (named as small's): refused before anything is
    written."""
    from gac.ground.job import stage3_target
    from gac.terramind import TOKENIZER_FILE, hub_files
    from gac.tuning.train import train_adapter

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(net.get_base_model().sampler.model.state_dict(), weights / hub_files("terramind_v1_small_generate")[1])
    (weights / TOKENIZER_FILE).write_bytes(b"")  # never read: TerraMind's own file is refused first
    wrong = params.model_copy(
        update={
            "stage3": params.stage3.model_copy(update={"model": "terramind_v1_small_generate", "weights": str(weights)})
        }
    )
    root = tmp_path / "run"
    with pytest.raises(GacError) as err:
        train_adapter(
            stage3_target(wrong, stores["opt_v2"]),
            wrong,
            stores["tiles"],
            root / "stage3",
            root / "live",
            root / "ckpt",
        )
    message = str(err.value)
    assert "\n" not in message and "TerraMind_v1_small.pt" in message and "shape mismatch" in message
    assert "check the model size" in message
    assert not root.exists()


def test_stage1_generator_is_frozen_when_off_and_fine_tuned_when_on(trained, finetuned, tmp_path):
    from gac.finetune.handover import stage1_generator, write_disabled
    from gac.terramind import build_generator

    off = validate_params({"stage1_finetune": {"enabled": False}})
    write_disabled(tmp_path / "ft", tmp_path / "live")
    assert json.loads((tmp_path / "ft" / "adapter.json").read_text()) == {"stage": "stage1_finetune", "enabled": False}
    assert json.loads((tmp_path / "live" / "metrics.json").read_text()) == {"enabled": False}
    sentinel = SimpleNamespace(gac_name="terramind_v1_tiny_generate")  # what load_adapter reads of a model
    assert stage1_generator(sentinel, off, tmp_path / "ft") is sentinel
    on = validate_params({"stage1_finetune": {"enabled": True}})
    with pytest.raises(GacError, match="stage1_finetune.enabled is true but no fine-tuned adapter"):
        stage1_generator(sentinel, on, tmp_path / "ft")
    with pytest.raises(GacError, match=r"trained on inputs \['S1RTC', 'S2L2A'\] but takes \['S1RTC'\] now"):
        stage1_generator(sentinel, on, trained["out"])  # stage 3's adapter is not stage 1's
    frozen = build_generator("terramind_v1_tiny_generate", inputs=["S1RTC"], tile_size=TILE, seed=3)
    model = stage1_generator(frozen, on, finetuned["out"])
    assert model is frozen  # LoRA injected in place: gac.terramind.generate takes it as it is
    assert sum(1 for name, _ in model.named_modules() if name.endswith("cross_attn.kv.lora_A")) == 4


def test_resume_fingerprint_follows_the_data(stores, tmp_path):
    """An opt_v2 from other stage-2 params must not resume stage 3's old checkpoint; the same store written again does,
    and the fingerprint (recorded in the adapter) does not depend on when the store was written."""
    import zarr

    from gac.training import data_fingerprint

    copy = _blurred_copy(stores["tiles"], tmp_path / "opt_v2.zarr")
    first = data_fingerprint(stores["tiles"], copy)
    _blurred_copy(stores["tiles"], copy)
    assert data_fingerprint(stores["tiles"], copy) == first
    group = zarr.open_group(copy, mode="r+")
    group.attrs["params_hash"] = "another-stage-2-run"
    zarr.consolidate_metadata(str(copy))
    assert data_fingerprint(stores["tiles"], copy) != first
    assert data_fingerprint(stores["tiles"], None) != first


def test_tiles_of_another_s1_product_are_refused(params, stores):
    from gac.ground.job import stage3_target
    from gac.tuning.train import train_adapter

    grd = params.model_copy(update={"stage1": params.stage1.model_copy(update={"input": "S1GRD"})})
    with pytest.raises(GacError, match="tiles hold S1RTC but stage1.input is S1GRD; set stage1.input: S1RTC"):
        train_adapter(
            stage3_target(grd, stores["opt_v2"]),
            grd,
            stores["tiles"],
            stores["root"] / "x",
            stores["root"] / "y",
            stores["root"] / "z",
        )
