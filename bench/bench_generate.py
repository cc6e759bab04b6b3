"""Benchmark: `gac generate` (batched, the library path) against the naive baseline, upstream called once per tile.

Both run on the same tiles with the same model, tile size, DDIM steps and one
token-decoding step (upstream cannot do more), each in its own process so
peak RSS is its own. The methods alternate for `--rounds` rounds; the table
gives each method's MEDIAN round and the median of the per-round ratios
(every round's ratios are printed too: shared machines are noisy, and a best
round of each is not a result).

`gac generate` runs once per precision in `--precisions` (default 32 and
bf16, side by side) with gac.device's rule for it: on a CPU without native
bf16 (`gac.device.cpu_native_bf16`) bf16 runs float32 in the library, so
there the bf16 column is skipped unless `--emulated-bf16` forces it (slow:
oneDNN emulates every bf16 operand). The quality cost of bf16 is measured
apart (`--quality`, also run whenever bf16 is listed): the same tiles and
seeds generated in float32 and in bf16 (forced, also where emulated) by
TerraMind with a live decoder output layer (random weights leave that conv
at zero, so outputs would be flat), compared as PSNR on unit reflectance
and as max / RMS difference over the within-band std (tests/numerics.py's
measures). gac.device.CPU_BF16_MIN_PSNR is the bound `precision: auto`
holds it to.

Also measures the diffusion decoder's achieved GFLOP/s (FLOPs counted by
torch's FlopCounterMode) against a plain torch matmul on the same device, in
each precision's dtype. On CUDA both methods run under the same autocast,
and peak GPU memory is reported per method.

    python bench/bench_generate.py                       # CPU, small: tiny, 8 tiles of 64 px, 2 DDIM steps
    python bench/bench_generate.py --size 224 --timesteps 10 --tiles 8 --rounds 3  # the acceptance setting (goal >= 2x)
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/bench_generate.py --size 224 --timesteps 10 --tiles 8 --rounds 3  # AVX2 path
    python bench/bench_generate.py --quality --size 64 --timesteps 10     # bf16's quality cost alone (PSNR)
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
import statistics
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


def force_bf16(args) -> None:
    """`--emulated-bf16`: let gac.device honour bf16 on a CPU without native bf16 (for measuring only)."""
    if args.emulated_bf16:
        import gac.device

        gac.device.cpu_native_bf16 = lambda *a, **k: True


def phase_ours(args) -> dict:
    import torch

    from gac.device import run_dtype
    from gac.generate.run import run_generate
    from gac.params import validate_params

    force_bf16(args)
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
    result = {
        "tiles_per_s": summary["tiles_per_s"],
        "seconds": summary["seconds"],
        "peak_rss_gb": peak_rss_gb(),
        "dtype": run_dtype(bench_device(args), args.precision),
    }
    if torch.cuda.is_available() and args.device != "cpu":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    return result


def bench_device(args):
    import torch

    return torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")


def phase_gflops(args) -> dict:
    """Achieved GFLOP/s of the diffusion UNet at the run's batch and tile size, and of a plain matmul, both in the
    dtype `--precision` runs in."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gac.device import autocast, autocast_dtype
    from gac.terramind import TOKENS_KEY, build_generator

    force_bf16(args)
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


def live_decoder(model, seed: int = 7, std: float = 0.02):
    """Seeded weights for the UNet's zero-initialised output conv: random weights would give flat outputs, which
    cannot show what bf16 costs (the tests' `liven`)."""
    import torch

    from gac.terramind import TOKENS_KEY

    conv = model.tokenizer[TOKENS_KEY].decoder.out[-1]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
    return model


def phase_quality(args) -> dict:
    """bf16 against float32 on the same tiles and seeds: PSNR (unit reflectance) and tests/numerics.py's spread."""
    import numpy as np

    import gac.device
    from gac.metrics import psnr
    from gac.runner import Batch
    from gac.terramind import Decoding, TerraMindPredictor, build_generator, tile_seed
    from tests.numerics import kernel_spread

    native = gac.device.cpu_native_bf16()
    gac.device.cpu_native_bf16 = lambda *a, **k: (
        True
    )  # bf16 runs, native or emulated (alike values; emulated is slower)
    device = bench_device(args)
    s1, _ = make_s1(args.quality_tiles, args.quality_size or args.size)
    model = live_decoder(build_generator(args.model, ["S1RTC"], "random", tile_size=s1.shape[-1], seed=3)).to(device)
    seeds = [tile_seed(0, f"bench_{k:04d}") for k in range(len(s1))]
    batch = Batch(
        s1=s1,
        month=np.zeros(len(s1), np.int64),
        lat=np.zeros(len(s1), np.float32),
        lon=np.zeros(len(s1), np.float32),
        token_seeds=seeds,
        noise_seeds=seeds,
    )
    decoding = Decoding(decoding_steps=1, timesteps=args.timesteps)
    out = {}
    for precision in ("32", "bf16"):
        start = time.perf_counter()
        out[precision] = TerraMindPredictor(model, "S1RTC", decoding, precision)(batch)
        out[f"{precision}_s"] = time.perf_counter() - start
    fp32, bf16 = out["32"], out["bf16"]
    peak, rms = kernel_spread(bf16, fp32)
    per_tile = [psnr(bf16[k] / 1e4, fp32[k] / 1e4) for k in range(len(s1))]
    return {
        "tiles": len(s1),
        "size": int(s1.shape[-1]),
        "psnr_db": float(np.median(per_tile)),
        "psnr_min_db": float(min(per_tile)),
        "max_over_std": peak,
        "rms_over_std": rms,
        "fp32_s": out["32_s"],
        "bf16_s": out["bf16_s"],
        "native": native,
        "bound_db": gac.device.CPU_BF16_MIN_PSNR,
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
    with torch.no_grad(), autocast(device, args.precision):  # float32 on CPU; on CUDA the autocast ours runs with
        for k in range(args.tiles):  # what a user of upstream writes: one call per tile
            model({"S1RTC": x[k : k + 1].to(device)})["S2L2A"].cpu()
    seconds = time.perf_counter() - start
    result = {"tiles_per_s": args.tiles / seconds, "seconds": seconds, "peak_rss_gb": peak_rss_gb()}
    if torch.cuda.is_available() and args.device != "cpu":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    return result


def run_phase(name: str, argv: list[str], *extra: str) -> dict:
    argv = [*argv, *extra, "--phase", name]  # a later --precision wins over the user's
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        sys.exit(f"{name} phase failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(rounds: list[dict]) -> dict:
    """One method's median round: tiles/s and seconds are medians over the rounds, RSS the median round's."""
    ordered = sorted(rounds, key=lambda r: r["seconds"])
    return ordered[(len(ordered) - 1) // 2] | {
        key: statistics.median(r[key] for r in rounds) for key in ("tiles_per_s", "seconds")
    }


def print_quality(q: dict) -> None:
    verdict = "within" if q["psnr_db"] >= q["bound_db"] else "outside"
    print(
        f"\nbf16 vs fp32, same {q['tiles']} tiles of {q['size']} px and seeds (live decoder output layer, "
        f"{'native' if q['native'] else 'emulated'} bf16): PSNR median {q['psnr_db']:.1f} dB (worst tile "
        f"{q['psnr_min_db']:.1f}), max |diff| {q['max_over_std']:.3f} and RMS {q['rms_over_std']:.4f} of the "
        f"within-band std; {verdict} the bound for precision auto ({q['bound_db']:.0f} dB). Time fp32 "
        f"{q['fp32_s']:.1f} s, bf16 {q['bf16_s']:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="terramind_v1_tiny_generate")
    parser.add_argument("--size", type=int, default=64, help="tile side in px (multiple of 16)")
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--timesteps", type=int, default=2, help="DDIM steps")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precisions", default="32,bf16", help="gac generate's precisions, side by side")
    parser.add_argument("--precision", default="32", help=argparse.SUPPRESS)  # one phase's
    parser.add_argument("--emulated-bf16", action="store_true", help="time bf16 also on a CPU without native bf16")
    parser.add_argument("--quality", action="store_true", help="only bf16's quality cost (PSNR against fp32)")
    parser.add_argument("--quality-tiles", type=int, default=4)
    parser.add_argument("--quality-size", type=int, default=0, help="tile side for the quality figure (0: --size)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats for the GFLOP/s figures")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--phase", choices=["ours", "naive", "gflops", "quality"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.phase:
        import logging

        logging.basicConfig(level=logging.ERROR)
        phases = {"ours": phase_ours, "naive": phase_naive, "gflops": phase_gflops, "quality": phase_quality}
        print(json.dumps(phases[args.phase](args)))
        return

    from gac.device import cpu_native_bf16

    argv = [a for a in sys.argv[1:]]
    cpu = bench_device(args).type == "cpu"
    native = cpu_native_bf16()
    precisions = [p for p in args.precisions.split(",") if p]
    if args.quality:
        print_quality(run_phase("quality", argv))
        return
    timed = [p for p in precisions if not (cpu and p == "bf16" and not native and not args.emulated_bf16)]
    _, source = make_s1(1, args.size)
    print(
        f"{args.model}, {args.tiles} tiles of {args.size} px ({source}), {args.timesteps} DDIM steps, batch "
        f"{args.batch_size}, device {args.device}, {args.threads} threads, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}, "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {native}, "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if set(precisions) - set(timed):
        print("bf16 not timed: this CPU has no native bf16, so gac runs float32 for it (--emulated-bf16 forces it)")
    naive: list[dict] = []
    ours: dict[str, list[dict]] = {p: [] for p in timed}
    for k in range(args.rounds):  # alternate: shared machines are noisy; every round's ratios are printed
        naive.append(run_phase("naive", argv, "--precision", "32" if cpu else timed[-1]))
        for p in timed:
            ours[p].append(run_phase("ours", argv, "--precision", p))
        ratios = ", ".join(
            f"gac generate {p} {ours[p][-1]['tiles_per_s']:.3f} tiles/s ({ours[p][-1]['dtype']}, "
            f"{ours[p][-1]['tiles_per_s'] / naive[-1]['tiles_per_s']:.2f}x)"
            for p in timed
        )
        print(
            f"round {k + 1} (load {os.getloadavg()[0]:.1f}): naive {naive[-1]['tiles_per_s']:.3f} tiles/s, {ratios}",
            flush=True,
        )
    rows = [("naive: upstream, one call per tile", median_of(naive), None)]
    for p in timed:
        per_round = [o["tiles_per_s"] / n["tiles_per_s"] for o, n in zip(ours[p], naive)]
        rows.append((f"gac generate (batch {args.batch_size}, {ours[p][0]['dtype']})", median_of(ours[p]), per_round))
    gpu = "peak_gpu_gb" in rows[-1][1]
    print(
        f"\nmedians of {args.rounds} rounds\n{'run':<44}{'tiles/s':>10}{'seconds':>10}{'peak RSS GB':>13}"
        + (f"{'peak GPU GB':>13}" if gpu else "")
        + f"{'x naive (median of rounds)':>30}"
    )
    for label, r, per_round in rows:
        gpu_col = f"{r['peak_gpu_gb']:>13.2f}" if "peak_gpu_gb" in r else ""
        ratio = (
            f"{statistics.median(per_round):>9.2f}x (rounds {', '.join(f'{x:.2f}' for x in per_round)})"
            if per_round
            else ""
        )
        print(f"{label:<44}{r['tiles_per_s']:>10.3f}{r['seconds']:>10.1f}{r['peak_rss_gb']:>13.2f}{gpu_col}  {ratio}")
    print("goal: >= 2x at tiny, 224 px, 10 DDIM steps")
    for p in timed:
        g = run_phase("gflops", argv, "--precision", p)
        print(
            f"diffusion decoder ({p}): {g['unet_gflop_per_call']:.1f} GFLOP per call (batch {args.batch_size}), "
            f"{g['unet_gflops']:.1f} GFLOP/s achieved vs {g['matmul_gflops']:.1f} GFLOP/s for a {g['matmul']} "
            f"({100 * g['unet_gflops'] / g['matmul_gflops']:.0f}%)",
            flush=True,
        )
    if "bf16" in precisions:
        print_quality(run_phase("quality", argv))


if __name__ == "__main__":
    main()
