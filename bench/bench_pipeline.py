"""Benchmark: the demo pipeline as its work grows: each stage's wall time and peak RSS at 1x, 4x and 16x the tiles.

The demo runs in a temporary directory (its own params.yaml and data/, this
checkout's code) with `data.demo_scenes` scaled (3 scenes of 256 px = 48 tiles
at 1x) and `translate.scenes` set to every demo scene, so the translate stage's
work grows with the rest. Stages run in dvc.yaml's order, each command as DVC
would run it; peak RSS is the stage process's own high-water mark (wait4).

Goals: time per tile within 1.2x across sizes for every stage whose work grows
with the tiles; peak RSS within 1.2x for every stage that streams (inference,
translate; training holds a batch, not the data).

    python bench/bench_pipeline.py                  # 1x, 4x, 16x
    python bench/bench_pipeline.py --scales 1 4     # on a slow machine

Quote figures with the machine's load (printed); ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.rss import cpu_model  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_stage(cmd: str, cwd: Path, env: dict) -> tuple[float, float]:
    """(wall s, peak RSS GB) of one stage command; stops the benchmark with its output when it fails."""
    started = time.perf_counter()
    with open(cwd / "stage.log", "w") as log:
        child = subprocess.Popen(shlex.split(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{cmd} failed in {cwd}:\n{(cwd / 'stage.log').read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024**2  # KiB -> GiB


def count_tiles(project: Path) -> int:
    import zarr

    return int(zarr.open_group(project / "data" / "tiles.zarr", mode="r")["tile"].shape[0])


def run_demo(scale: int, stages: dict[str, str], work: Path, env: dict) -> tuple[int, dict[str, tuple[float, float]]]:
    project = work / f"x{scale}"
    project.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["demo_scenes"] = params["data"]["demo_scenes"] * scale
    params["translate"]["scenes"] = ["data/scenes/S1RTC"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    figures = {}
    for name, cmd in stages.items():
        figures[name] = run_stage(cmd, project, env)
        seconds, peak = figures[name]
        print(f"  x{scale} {name:18s} {seconds:8.1f} s  {peak:5.2f} GB   (load {load()})", flush=True)
    return count_tiles(project), figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16], help="multiples of data.demo_scenes")
    args = parser.parse_args()
    stages = {name: stage["cmd"] for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": path}
    print(f"load average at start: {load()} on {os.cpu_count()} CPU(s), {cpu_model()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            results[scale] = run_demo(scale, stages, Path(tmp), env)
            print(f"x{scale}: {results[scale][0]} tiles", flush=True)
    low, high = args.scales[0], args.scales[-1]
    tiles_low, tiles_high = results[low][0], results[high][0]
    header = "".join(f"   x{s} s/tile  GB" for s in args.scales)
    print(f"\nstage             {header}   time/tile x{high}/x{low}  RSS x{high}/x{low}")
    for name in stages:
        cells = "".join(
            f"   {results[s][1][name][0] / results[s][0]:8.3f} {results[s][1][name][1]:5.2f}" for s in args.scales
        )
        per_tile = (results[high][1][name][0] / tiles_high) / (results[low][1][name][0] / tiles_low)
        rss = results[high][1][name][1] / results[low][1][name][1]
        print(f"{name:18s}{cells}   {per_tile:14.2f}  {rss:9.2f}")
    print(
        "(time per tile within 1.2x is the goal for stages whose work grows with the tiles; "
        f"check-params and the like "
        f"are fixed costs, so their time per tile falls)\nload average at end: {load()}"
    )


if __name__ == "__main__":
    main()
