"""Benchmark: `gac generate` (batched, the library path) against the naive baseline, upstream called once per tile.

Both run on the same tiles with the same model, tile size, DDIM steps and one
token-decoding step (upstream cannot do more), each in its own process so
peak RSS is its own; the two alternate for `--rounds` rounds and each
method's best round is reported (shared machines are noisy). Also measures the
diffusion decoder's achieved GFLOP/s (FLOPs counted by torch's
FlopCounterMode) against a plain torch matmul on the same device, in the
decoder's dtype: fp32 on CPU, the autocast dtype (`--precision`) on CUDA.
On CUDA both methods run under the same autocast, and peak GPU memory is
reported per method.

    python bench/bench_generate.py                       # CPU, small: tiny, 8 tiles of 64 px, 2 DDIM steps
    python bench/bench_generate.py --size 224 --timesteps 10 --tiles 8 --rounds 3  # the acceptance setting (goal >= 2x)
    python bench/bench_generate.py --model terramind_v1_base_generate --size 224 --timesteps 10 --tiles 32 \\
        --batch-size 8 --device cuda

Tiles come from ../shared/data/terramesh-samples (real S1RTC, cropped) when
present, else from seeded noise around the S1RTC pre-training mean; random
weights either way (speed does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "terramesh-samples" / "S1RTC"
sys.path.insert(0, str(REPO))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def make_s1(n: int, size: int, seed: int = 0):
    """(n, 2, size, size) float32 dB: crops of the real samples when present, else noise."""
    import numpy as np

    if SAMPLES.is_dir():
        import rasterio

        scenes = [rasterio.open(p).read().astype(np.float32) for p in sorted(SAMPLES.glob("*.tif"))]
        crops = []
        for k in range(n):
            scene = scenes[k % len(scenes)]
            offset = (k // len(scenes)) * size % max(1, scene.shape[-1] - size + 1)
            crops.append(scene[:2, offset : offset + size, offset : offset + size])
        return np.stack(crops), "real S1RTC crops"
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 3, (n, 2, size, size)) + np.array([-10.93, -17.329])[None, :, None, None]).astype(
        np.float32
    ), "synthetic S1"


def tiles_store(s1, path: Path) -> Path:
    import numpy as np
    import xarray as xr

    from gac.data.store import S1_BANDS, tile_coords, write_store

    records = [
        {
            "tile": f"bench_{k:04d}",
            "scene": "bench",
            "row_off": 0,
            "col_off": 0,
            "crs": "EPSG:32632",
            "transform": [10.0, 0.0, 500000.0 + k * 1e4, 0.0, -10.0, 5000000.0],
            "month": 6,
            "lat": 45.0,
            "lon": 9.0,
            "split": "test",
        }
        for k in range(s1.shape[0])
    ]
    coords = tile_coords(records) | {"s1_band": np.array(S1_BANDS, dtype=object)}
    ds = xr.Dataset({"s1": (("tile", "s1_band", "y", "x"), s1)}, coords=coords, attrs={"s1_product": "S1RTC"})
    write_store(ds, path, shard_tiles=s1.shape[0])
    return path


def phase_ours(args) -> dict:
    import torch

    from gac.generate.run import run_generate
    from gac.params import validate_params

    s1, _ = make_s1(args.tiles, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tiles = tiles_store(s1, Path(tmp) / "tiles.zarr")
        params = validate_params(
            {
                "seed": 0,
                "tile": {"size": args.size, "stride": args.size, "shard_tiles": args.tiles},
                "stage1": {
                    "model": args.model,
                    "timesteps": args.timesteps,
                    "decoding_steps": 1,
                    "infer": {"batch_size": args.batch_size, "device": args.device, "precision": args.precision},
                },
            }
        )
        summary = run_generate(params, tiles, Path(tmp) / "opt_v1.zarr", progress=False)
    result = {"tiles_per_s": summary["tiles_per_s"], "seconds": summary["seconds"], "peak_rss_gb": peak_rss_gb()}
    if torch.cuda.is_available() and args.device != "cpu":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    result.update(decoder_gflops(args))
    return result


def bench_device(args):
    import torch

    return torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")


def decoder_gflops(args) -> dict:
    """Achieved GFLOP/s of the diffusion UNet at the run's batch and tile size, and of a plain matmul in the same
    dtype."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gac.device import autocast, autocast_dtype
    from gac.terramind import TOKENS_KEY, build_generator

    device = bench_device(args)
    dtype = autocast_dtype(device, args.precision) or torch.float32
    model = build_generator(args.model, ["S1RTC"], "random", tile_size=args.size).to(device)
    unet = model.tokenizer[TOKENS_KEY].decoder
    side = args.size // 16
    cond = torch.randn(args.batch_size, 5, side, side, device=device)
    image = torch.randn(args.batch_size, 12, args.size, args.size, device=device)
    t = torch.tensor(999, device=device)

    def timed(fn, repeats: int) -> float:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats

    with torch.inference_mode():
        with autocast(device, args.precision):
            with FlopCounterMode(display=False) as counter:
                unet(image, t, cond)
            flops = counter.get_total_flops()
            unet_s = timed(lambda: unet(image, t, cond), args.repeats)
        n = 8192 if device.type == "cuda" else 2048
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        matmul_s = timed(lambda: a @ b, max(3, args.repeats))
    return {
        "unet_gflop_per_call": flops / 1e9,
        "unet_gflops": flops / unet_s / 1e9,
        "matmul_gflops": 2 * n**3 / matmul_s / 1e9,
        "matmul": f"{n}^2 {str(dtype).removeprefix('torch.')} matmul",
    }


def phase_naive(args) -> dict:
    import torch

    from gac.device import autocast
    from gac.upstream import terramind

    device = bench_device(args)
    s1, _ = make_s1(args.tiles, args.size)
    build = terramind().build  # what terratorch's FULL_MODEL_REGISTRY.build does for this name
    torch.manual_seed(0)
    model = (
        build(
            args.model,
            modalities=["S1RTC"],
            output_modalities=["S2L2A"],
            pretrained=False,
            standardize=True,
            timesteps=args.timesteps,
        )
        .to(device)
        .eval()
    )
    x = torch.from_numpy(s1)
    start = time.perf_counter()
    with torch.no_grad(), autocast(device, args.precision):  # the same autocast as gac generate's (none on CPU)
        for k in range(args.tiles):  # what a user of upstream writes: one call per tile
            model({"S1RTC": x[k : k + 1].to(device)})["S2L2A"].cpu()
    seconds = time.perf_counter() - start
    result = {"tiles_per_s": args.tiles / seconds, "seconds": seconds, "peak_rss_gb": peak_rss_gb()}
    if torch.cuda.is_available() and args.device != "cpu":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    return result


def run_phase(name: str, argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv, "--phase", name], capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        sys.exit(f"{name} phase failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="terramind_v1_tiny_generate")
    parser.add_argument("--size", type=int, default=64, help="tile side in px (multiple of 16)")
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--timesteps", type=int, default=2, help="DDIM steps")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="bf16", choices=["32", "bf16", "16"], help="autocast dtype on CUDA")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats for the GFLOP/s figures")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating rounds; the best round of each method is reported"
    )
    parser.add_argument("--phase", choices=["ours", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.phase:
        import logging

        logging.basicConfig(level=logging.ERROR)
        result = phase_ours(args) if args.phase == "ours" else phase_naive(args)
        print(json.dumps(result))
        return

    argv = [a for a in sys.argv[1:]]
    _, source = make_s1(1, args.size)
    print(
        f"{args.model}, {args.tiles} tiles of {args.size} px ({source}), {args.timesteps} DDIM steps, batch "
        f"{args.batch_size}, "
        f"device {args.device}, {args.threads} threads, torch {torch.__version__}, {os.cpu_count()} CPUs",
        flush=True,
    )
    naive, ours = None, None
    for _ in range(args.rounds):  # alternate, keep each method's best round: shared machines are noisy
        runs = (run_phase("naive", argv), run_phase("ours", argv))
        naive = runs[0] if naive is None or runs[0]["seconds"] < naive["seconds"] else naive
        ours = runs[1] if ours is None or runs[1]["seconds"] < ours["seconds"] else ours
        print(
            f"round: naive {runs[0]['tiles_per_s']:.3f} tiles/s, gac generate {runs[1]['tiles_per_s']:.3f} tiles/s",
            flush=True,
        )
    rows = [("naive: upstream, one call per tile", naive), (f"gac generate (batch {args.batch_size})", ours)]
    print(
        f"\n{'run':<40}{'tiles/s':>10}{'seconds':>10}{'peak RSS GB':>13}"
        + (f"{'peak GPU GB':>13}" if "peak_gpu_gb" in ours else "")
    )
    for label, r in rows:
        gpu = f"{r['peak_gpu_gb']:>13.2f}" if "peak_gpu_gb" in r else ""
        print(f"{label:<40}{r['tiles_per_s']:>10.3f}{r['seconds']:>10.1f}{r['peak_rss_gb']:>13.2f}{gpu}")
    print(
        f"\nspeed-up (tiles/s ratio): {ours['tiles_per_s'] / naive['tiles_per_s']:.2f}x (goal >= 2x at tiny, 224 px, "
        "10 DDIM steps)"
    )
    print(
        f"diffusion decoder: {ours['unet_gflop_per_call']:.1f} GFLOP per call (batch {args.batch_size}), "
        f"{ours['unet_gflops']:.1f} GFLOP/s achieved vs {ours['matmul_gflops']:.1f} GFLOP/s for a {ours['matmul']} "
        f"({100 * ours['unet_gflops'] / ours['matmul_gflops']:.0f}%)"
    )


if __name__ == "__main__":
    main()
