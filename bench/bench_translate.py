"""Benchmark: `gac translate` on whole scenes: throughput against its tiles run alone, and peak memory against scene
size.

1. Throughput (stage 1, TerraMind, random weights): the scene's global tile
   grid run tile by tile through the same model (the sum of the tiles alone,
   no blending, no I/O), then `gac translate`'s library path on the same scene
   (blending, block reads, Zarr writes, COG assembly). Both use batch size 1 in
   the same process, so the ratio is the cost of stitching; it should stay
   within the overlap factor (tile pixels run per scene pixel).
2. Peak RSS (supervised baseline U-Net, untrained, the cheapest real chain):
   a 1024 x 1024 and a 4096 x 4096 px scene, each translated in its own process
   with the same block size; the larger scene's peak should be within 1.2x of
   the smaller's (memory follows the block, not the scene).
3. With `--trained DIR` (a directory holding the pipeline's stage2/, stage3/,
   baseline/, e.g. the demo's data/): `gac translate --until UNTIL` at the
   default settings (params.yaml's translate section, block 1024 px) with those
   models, per scene size: km2/s and peak RSS (goals: km2/s of the largest
   within 10% of the smallest's; peak RSS at most 2 GB).

    python bench/bench_translate.py  # 256 px scene, 64 px tiles, 1 DDIM step; 1024 and 4096 px scenes
    python bench/bench_translate.py --size 512 --timesteps 2 --memory-sizes 1024 8192
    python bench/bench_translate.py --skip-throughput --trained data --until v2 --trained-sizes 1024 4096

Quote figures with the machine's load (printed); ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A smooth dB field of size x size px on a 10 m UTM grid, written in row blocks (the parent never holds it
    whole)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=2,
        dtype="float32",
        crs="EPSG:32633",
        transform=from_origin(500000, 5000000, 10, 10),
        nodata=float("nan"),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 256):
            h = min(256, size - row)
            yy, xx = np.mgrid[row : row + h, 0:size].astype(np.float32)
            vv = -11 + 3 * np.sin(xx / 23.0) * np.cos(yy / 31.0) + rng.normal(0, 0.5, (h, size))
            vh = -18 + 2 * np.cos(xx / 29.0) * np.sin(yy / 19.0) + rng.normal(0, 0.5, (h, size))
            dst.write(np.stack([vv, vh]).astype(np.float32), window=Window(0, row, size, h))
        dst.update_tags(ACQUISITION_DATE="2024-06-15")
    return path


def _params(args, until: str, batch_size: int):
    from gac.params import validate_params

    return validate_params(
        {
            "seed": 0,
            "tile": {"size": args.tile},
            "baseline": {"channels": 16, "depth": 3},
            "translate": {
                "until": until,
                "overlap": args.overlap,
                "timesteps": args.timesteps,
                "infer": {"batch_size": batch_size},
                "block_size": args.block_size,
            },
        }
    )


def make_baseline(p, out: Path) -> Path:
    """An untrained baseline U-Net saved as `gac train-baseline` saves it (speed and memory do not depend on its
    values)."""
    import torch

    from gac.baseline.saved import build_net, save_baseline

    stats = {"s1_mean": [-11.0, -18.0], "s1_std": [3.0, 3.0], "s2_mean": [1000.0] * 12, "s2_std": [500.0] * 12}
    record = {
        "stage": "baseline",
        "enabled": True,
        "config": p.baseline.training_dict(),
        "statistics": stats,
        "random_weights": False,
    }
    torch.manual_seed(0)
    return save_baseline(build_net(record), out, record)


def throughput(args, work: Path) -> dict:
    import torch

    from gac.runner import Batch
    from gac.terramind import tile_seed
    from gac.translate.chain import Artifacts, Chain
    from gac.translate.grid import TileGrid
    from gac.translate.run import Options, translate
    from gac.translate.source import open_s1

    torch.set_num_threads(args.threads)
    scene_path = write_scene(work / "scene.tif", args.size)
    p = _params(args, "v1", 1)
    chain = Chain(p, "v1", Artifacts(), args.tile, torch.device("cpu"))
    scene = open_s1(scene_path, reproject=False)
    grid = TileGrid(scene.height, scene.width, args.tile, args.overlap, block_size=args.block_size)
    warm = scene.read(0, 0, args.tile, args.tile)[
        None
    ]  # first call pays one-off kernel set-up: not part of either figure

    def one(s1, seeds):
        return Batch(
            s1=s1,
            month=np.array([6]),
            lat=np.zeros(1, np.float32),
            lon=np.zeros(1, np.float32),
            token_seeds=seeds,
            noise_seeds=seeds,
        )

    chain(one(warm, [0]))
    started = time.perf_counter()
    for i, row in enumerate(grid.rows):
        for j, col in enumerate(grid.cols):
            s1 = scene.read(row, col, args.tile, args.tile)[None]
            seed = [tile_seed(0, f"{row}:{col}")]
            chain(one(s1, seed))
    alone = time.perf_counter() - started
    scene.close()
    del chain
    summary = translate(p, [scene_path], work / "out", Options(overwrite=True, progress=False))[0]
    area = summary["km2"]
    overlap_factor = grid.n_tiles * args.tile**2 / (scene.height * scene.width)
    return {
        "tiles": grid.n_tiles,
        "tile_runs": summary["tile_runs"],
        "tiles_alone_s": alone,
        "translate_s": summary["seconds"],
        "ratio": summary["seconds"] / alone,
        "overlap_factor": overlap_factor,
        "km2": area,
        "km2_per_s_translate": area / summary["seconds"],
        "km2_per_s_tiles_alone": area / alone,
    }


def memory(args, work: Path, size: int) -> dict:
    import torch

    from bench.rss import PeakRSS
    from gac.translate.chain import Artifacts
    from gac.translate.run import Options, translate

    torch.set_num_threads(args.threads)
    p = _params(args, "baseline", 16)
    baseline = make_baseline(p, work / "baseline")
    scene_path = work / f"scene_{size}.tif"
    with PeakRSS() as peak:
        started = time.perf_counter()
        summary = translate(
            p, [scene_path], work / f"out_{size}", Options(Artifacts(baseline=baseline), overwrite=True, progress=False)
        )[0]
        seconds = time.perf_counter() - started
    return {
        "size": size,
        "peak_rss_gb": peak.bytes / 1024**3,
        "seconds": seconds,
        "km2": summary["km2"],
        "tile_runs": summary["tile_runs"],
    }


def trained(args, work: Path, size: int) -> dict:
    """`gac translate` with trained models at params.yaml's settings (only `until` set): the run a user waits for."""
    from bench.rss import PeakRSS
    from gac.params import load_params
    from gac.translate.chain import Artifacts
    from gac.translate.run import Options, effective_params, translate

    p = effective_params(load_params(REPO / "params.yaml"), args.until, None)
    root = Path(args.trained)
    artifacts = Artifacts(root / "stage1_finetune", root / "stage2", root / "stage3", root / "baseline")
    with PeakRSS() as peak:
        started = time.perf_counter()
        options = Options(artifacts, overwrite=True, progress=False)
        summary = translate(p, [work / f"scene_{size}.tif"], work / f"trained_{size}", options)[0]
        seconds = time.perf_counter() - started
    return {
        "size": size,
        "peak_rss_gb": peak.bytes / 1024**3,
        "seconds": seconds,
        "km2": summary["km2"],
        "km2_per_s": summary["km2"] / seconds,
        "tile_runs": summary["tile_runs"],
    }


def worker(args) -> None:
    work = Path(args.work)
    kind, _, size = args.worker.partition(":")
    result = {
        "throughput": lambda: throughput(args, work),
        "memory": lambda: memory(args, work, int(size)),
        "trained": lambda: trained(args, work, int(size)),
    }[kind]()
    print("RESULT " + json.dumps(result))


def run_worker(args, name: str, work: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--work",
        str(work),
        "--size",
        str(args.size),
        "--tile",
        str(args.tile),
        "--overlap",
        str(args.overlap),
        "--timesteps",
        str(args.timesteps),
        "--block-size",
        str(args.block_size),
        "--threads",
        str(args.threads),
        "--until",
        args.until,
    ]
    cmd += ["--trained", str(Path(args.trained).resolve())] if args.trained else []
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="throughput scene side, px")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true", help="skip the untrained baseline's peak RSS")
    parser.add_argument("--trained", help="directory with trained stage2/, stage3/, baseline/ (data after `make demo`)")
    parser.add_argument("--until", default="v2", help="with --trained: the last stage run (v1, v2, v3, baseline)")
    parser.add_argument("--trained-sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from bench.rss import cpu_model

    loads = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at start: {loads} on {os.cpu_count()} CPU(s), {cpu_model()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_throughput:
            t = run_worker(args, "throughput", work)
            print(
                f"throughput, {args.size} px scene ({t['km2']:.2f} km2), {t['tiles']} tiles of {args.tile} px, "
                f"overlap {args.overlap}, "
                f"{args.timesteps} DDIM step(s), TerraMind tiny stage 1, batch 1:"
            )
            print(f"  tiles alone   {t['tiles_alone_s']:8.1f} s   {t['km2_per_s_tiles_alone']:.4f} km2/s")
            print(
                f"  gac translate {t['translate_s']:8.1f} s   {t['km2_per_s_translate']:.4f} km2/s   "
                f"({t['tile_runs']} tile runs for {t['tiles']} tiles)"
            )
            print(
                f"  ratio translate / tiles alone: x{t['ratio']:.2f}; overlap factor (tile px per scene px) "
                f"{t['overlap_factor']:.2f}"
                f" -> {'within' if t['ratio'] <= t['overlap_factor'] else 'OVER'} the overlap factor"
            )
        runs = []
        for size in [] if args.skip_memory else args.memory_sizes:
            write_scene(work / f"scene_{size}.tif", size)
            m = run_worker(args, f"memory:{size}", work)
            runs.append(m)
            print(
                f"memory, {size} x {size} px ({m['km2']:.1f} km2), baseline U-Net, block {args.block_size} px: "
                f"peak RSS {m['peak_rss_gb']:.2f} GB, {m['seconds']:.1f} s, {m['km2'] / m['seconds']:.3f} km2/s, "
                f"{m['tile_runs']} tile runs ({m['tile_runs'] / m['km2']:.1f} per km2)"
            )
        if len(runs) > 1:
            ratio = runs[-1]["peak_rss_gb"] / runs[0]["peak_rss_gb"]
            speed = (runs[-1]["km2"] / runs[-1]["seconds"]) / (runs[0]["km2"] / runs[0]["seconds"])
            work_ratio = (runs[-1]["tile_runs"] / runs[-1]["km2"]) / (runs[0]["tile_runs"] / runs[0]["km2"])
            print(
                f"  {args.memory_sizes[-1]} px / {args.memory_sizes[0]} px: peak RSS x{ratio:.2f} (goal <= 1.2) "
                f"-> {'met' if ratio <= 1.2 else 'NOT met'}; km2/s x{speed:.2f} (whole run, model build and COG "
                f"included); tile runs per km2 x{work_ratio:.3f}"
            )
        if args.trained:
            runs = []
            for size in args.trained_sizes:
                if not (work / f"scene_{size}.tif").exists():
                    write_scene(work / f"scene_{size}.tif", size)
                runs.append(run_worker(args, f"trained:{size}", work))
                m = runs[-1]
                print(
                    f"trained models in {args.trained}, --until {args.until}, {size} x {size} px ({m['km2']:.1f} km2), "
                    f"params.yaml settings: {m['seconds']:.1f} s, {m['km2_per_s']:.4f} km2/s, "
                    f"peak RSS {m['peak_rss_gb']:.2f} GB "
                    f"({'within' if m['peak_rss_gb'] <= 2 else 'OVER'} 2 GB), {m['tile_runs']} tile runs"
                )
            if len(runs) > 1:
                ratio = runs[-1]["km2_per_s"] / runs[0]["km2_per_s"]
                rss = runs[-1]["peak_rss_gb"] / runs[0]["peak_rss_gb"]
                print(
                    f"  km2/s {runs[-1]['size']} px / {runs[0]['size']} px: x{ratio:.2f} (goal >= 0.90) -> "
                    f"{'met' if ratio >= 0.9 else 'NOT met'}; peak RSS x{rss:.2f}"
                )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
