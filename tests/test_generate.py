"""`gac generate` over a real tile store: layout, provenance, bad input, SIGKILL + resume, 2 processes == 1.

Tiles are the demo tiles store's first six tiles cropped to 32 px (the
diffusion UNet costs ~4 GFLOP per 32 px tile and step). Runs that must show
pixels use a hub-format weights directory written here from a seeded random
model whose UNet output conv is non-zero (random weights alone give the
band mean everywhere).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from gac.data.store import S2_BANDS, open_store, write_store
from gac.digest import params_hash
from gac.errors import GacError
from gac.params import validate_params
from tests.conftest import GAC, run_gac
from tests.numerics import assert_within_kernel_spread, within_kernel_spread

torch = pytest.importorskip("torch")

N_TILES = 6
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def small_tiles(tiles_store, tmp_path_factory) -> Path:
    """Six 32 px tiles (top-left crops keep each tile's transform valid); one has a no-data corner in S1."""
    ds = open_store(tiles_store, need=("s1", "s2")).isel(tile=slice(0, N_TILES), y=slice(0, 32), x=slice(0, 32)).load()
    ds["s1"][1, :, :4, :4] = np.nan
    out = tmp_path_factory.mktemp("gen") / "tiles.zarr"
    write_store(ds, out, shard_tiles=4)
    return out


@pytest.fixture(scope="module")
def lively_weights(tmp_path_factory) -> Path:
    from gac.terramind import TOKENS_KEY, build_generator, save_hub_checkpoint

    torch.set_num_threads(2)
    model = build_generator("terramind_v1_tiny_generate", ["S1RTC"], "random", tile_size=32, seed=3)
    conv = model.tokenizer[TOKENS_KEY].decoder.out[-1]
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(7)) * 0.02)
    return save_hub_checkpoint(model, tmp_path_factory.mktemp("weights") / "tiny")


def write_params(path: Path, **stage1) -> Path:
    raw = {
        "seed": 42,
        "tile": {"size": 32, "stride": 32, "shard_tiles": 1},
        "stage1": {"timesteps": 1, "decoding_steps": 2, "infer": {"batch_size": 2, "device": "cpu"}, **stage1},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def load_s2(path: Path) -> np.ndarray:
    return open_store(path, need=("s2",)).s2.values


def test_output_keeps_tiles_georeference_and_records_provenance(small_tiles, tmp_path, caplog):
    from gac.generate.run import run_generate
    from gac.terramind import destandardize

    caplog.set_level("WARNING")
    params = validate_params(yaml.safe_load(write_params(tmp_path / "params.yaml").read_text()))
    out = tmp_path / "opt_v1.zarr"
    summary = run_generate(params, small_tiles, out, progress=False)
    assert summary["tiles"] == N_TILES and summary["tiles_per_s"] > 0
    assert "RANDOM WEIGHTS" in caplog.text
    tiles, opt = open_store(small_tiles, need=("s1",)), open_store(out, need=("s2",))
    assert list(opt.tile.values) == list(tiles.tile.values)
    for name in ("transform", "crs", "split", "scene", "row_off", "col_off", "month"):
        assert np.array_equal(opt[name].values, tiles[name].values), name
    assert [str(b) for b in opt.band.values] == list(S2_BANDS)
    assert opt.s2.dims == ("tile", "band", "y", "x") and opt.s2.shape == (N_TILES, 12, 32, 32)
    assert opt.attrs["model"] == "terramind_v1_tiny_generate" and opt.attrs["weights"] == "random"
    assert opt.attrs["random_weights"] is True and opt.attrs["stage"] == "generate"
    assert opt.attrs["params_hash"] == params_hash(params, ["seed", "tile", "stage1"])
    # precision auto (the default) runs float32 on every CPU: bf16's measured cost is outside gac.device's bound
    assert params.stage1.infer.precision == "auto" and opt.attrs["compute_dtype"] == "float32"
    s2 = opt.s2.values
    assert np.isnan(s2[1, :, :4, :4]).all() and np.isfinite(s2[1, :, 4:, 4:]).all()  # no radar, no prediction
    # Random weights: the UNet's output conv is zero, so every pixel is the band's pre-training mean.
    mean = destandardize(torch.zeros(1, 12, 1, 1)).numpy()[0, :, 0, 0]
    assert np.allclose(np.nanmean(s2, axis=(0, 2, 3)), mean, atol=0.05)
    assert not out.with_name(out.name + ".partial").exists()


def test_the_store_records_bf16_where_the_cpu_runs_it(small_tiles, tmp_path, monkeypatch):
    import gac.device
    from gac.generate.run import run_generate

    monkeypatch.setattr(gac.device, "cpu_native_bf16", lambda *a, **k: True)  # as on an AMX CPU
    raw = yaml.safe_load(write_params(tmp_path / "params.yaml").read_text())
    raw["stage1"]["infer"]["precision"] = "bf16"  # asked for explicitly (auto stays float32 on CPUs)
    run_generate(validate_params(raw), small_tiles, tmp_path / "bf16.zarr", progress=False)
    assert open_store(tmp_path / "bf16.zarr").attrs["compute_dtype"] == "bfloat16"
    raw["stage1"]["infer"]["precision"] = "32"
    run_generate(validate_params(raw), small_tiles, tmp_path / "fp32.zarr", progress=False)
    assert open_store(tmp_path / "fp32.zarr").attrs["compute_dtype"] == "float32"


def test_bad_inputs_are_one_line_and_write_nothing(small_tiles, tiles_store, lively_weights, tmp_path):
    from gac.generate.run import run_generate

    params = validate_params(yaml.safe_load(write_params(tmp_path / "params.yaml").read_text()))
    out = tmp_path / "opt_v1.zarr"
    s2_only = tmp_path / "s2only.zarr"
    write_store(open_store(small_tiles).drop_vars("s1"), s2_only, shard_tiles=4)
    three = tmp_path / "three.zarr"
    ds = open_store(small_tiles, need=("s1",)).load()
    ds3 = ds.drop_vars(["s1", "s1_band"]).assign(
        s1=(("tile", "s1_band", "y", "x"), np.concatenate([ds.s1.values, ds.s1.values[:, :1]], axis=1))
    )
    write_store(ds3, three, shard_tiles=4)
    cases = [
        (tmp_path / "missing.zarr", params, "tiles store not found"),
        (s2_only, params, "lacks variable(s) s1"),
        (three, params, "s1 has 3 band(s)"),
    ]
    small_params = validate_params(
        {
            **params.model_dump(),
            "stage1": {
                **params.stage1.model_dump(),
                "model": "terramind_v1_small_generate",
                "weights": str(lively_weights),
            },
        }
    )
    cases.append((small_tiles, small_params, "TerraMind_v1_small.pt not found"))  # tiny's files for a small model
    finetune_params = validate_params({**params.model_dump(), "stage1_finetune": {"enabled": True}})
    cases.append((small_tiles, finetune_params, "no fine-tuned adapter there"))
    for tiles, p, message in cases:
        with pytest.raises(GacError) as err:
            run_generate(p, tiles, out, progress=False, finetune_dir=tmp_path / "no-adapter")
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_cli_error_is_one_line(tmp_path):
    result = run_gac(
        "generate",
        "--params",
        str(write_params(tmp_path / "p.yaml")),
        "--tiles",
        str(tmp_path / "none.zarr"),
        "--out",
        str(tmp_path / "o.zarr"),
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1].startswith("gac: error: ")
        and "none.zarr: tiles store not found" in result.stderr
    )


def _generate_cmd(params: Path, tiles: Path, out: Path) -> list[str]:
    return ["generate", "--params", str(params), "--tiles", str(tiles), "--out", str(out), "--no-progress"]


def test_sigkill_resume_and_two_processes_give_the_same_store(small_tiles, lively_weights, tmp_path):
    params = write_params(tmp_path / "params.yaml", weights=str(lively_weights))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # Two CPU processes under torchrun, each rank writing its own shards.
    two = tmp_path / "two.zarr"
    result = subprocess.run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc-per-node",
            "2",
            "--no-python",
            str(GAC),
            *_generate_cmd(params, small_tiles, two),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = sorted(re.findall(r"rank (\d)/2: (\d+) tile\(s\)", result.stderr))
    assert [r for r, _ in ranks] == ["0", "1"] and sum(int(n) for _, n in ranks) == N_TILES

    # One process, SIGKILLed once a shard is on disk, then resumed.
    one = tmp_path / "one.zarr"
    progress = one.with_name(one.name + ".progress")  # the shard markers beside the partial store
    proc = subprocess.Popen(
        [str(GAC), *_generate_cmd(params, small_tiles, one)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (progress.is_dir() and any(progress.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = len(list(progress.iterdir()))
    assert proc.returncode == -signal.SIGKILL and not one.exists() and 1 <= done < N_TILES
    partial = open_store(one.with_name(one.name + ".partial"), need=("s2",)).s2.values
    marked = [int(p.stem) for p in progress.iterdir()]
    assert all(np.isfinite(partial[k][:, 8:, 8:]).all() for k in marked)  # every marked shard is whole

    resumed = run_gac(*_generate_cmd(params, small_tiles, one), env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{done} of {N_TILES} shard(s) already written" in resumed.stderr
    assert f"rank 0/1: {N_TILES - done} tile(s)" in resumed.stderr  # only the missing tiles
    s2_one, s2_two = load_s2(one), load_s2(two)
    assert np.array_equal(partial[marked], s2_one[marked], equal_nan=True)
    assert float(np.nanstd(s2_one)) > 10  # real, varied pixels, so equality means something
    # Two ranks batch other tiles together: equal within float kernels' spread (tests/numerics.py), not bit for bit.
    assert_within_kernel_spread(s2_two, s2_one, "two ranks and one process")
    a, b = [k for k in range(N_TILES) if np.isfinite(s2_two[k]).all()][:2]
    swapped = s2_two.copy()
    swapped[[a, b]] = s2_two[[b, a]]
    assert not within_kernel_spread(swapped, s2_one)  # two tiles in each other's place: a mistake the check catches
    assert open_store(one).attrs["weights"] == str(lively_weights) and open_store(one).attrs["random_weights"] is False
