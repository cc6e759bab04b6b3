"""Benchmark: ingesting a BigEarthNet v2 (reBEN) archive at 1,000 and 16,000 patches: patches/s and peak RSS.

Generates each archive in reBEN's exact layout (tests/reben_fixture.generate_reben: every band file, S1 VV/VH and
a reference map per patch, distinct pixels in every file), then runs `gac synth` (the catalogue) and `gac tile`
(two passes over the pairs in `tile.workers` processes, gac.data.archive_tiles) as subprocesses with a params
file, as DVC would. Peak RSS is sampled for the stage process and, separately, for its largest worker.

Goals: time per patch 16k / 1k within 1.2x (linear), peak RSS 16k / 1k within 1.2x (parent: records only;
workers: one shard's pairs).

    python bench/bench_ingest.py                               # 1,000 and 16,000 patches, 2 workers
    python bench/bench_ingest.py --patches 200 1000 --workers 2

Disk: ~345 KB per patch (16,000 patches: 5.5 GB), deleted afterwards unless --keep. Quote figures with the
machine's load (printed): ratios from one run, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.rss import PeakRSS, cpu_model  # noqa: E402
from tests.reben_fixture import generate_reben  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(cmd: list[str], cwd: Path) -> tuple[float, int, int]:
    """(wall s, peak RSS of the process, peak RSS of its largest child) of one stage command."""
    started = time.perf_counter()
    with open(cwd / "stage.log", "w") as log:
        child = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        with PeakRSS(interval_s=0.05, pid=child.pid) as peak:
            code = child.wait()
    seconds = time.perf_counter() - started
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{(cwd / 'stage.log').read_text()[-3000:]}")
    return seconds, peak.bytes, peak.child_bytes


def ingest(n: int, workers: int, work: Path) -> dict:
    archive = work / f"reben_{n}"
    archive.mkdir(parents=True)
    started = time.perf_counter()
    generate_reben(archive, n)
    generated = time.perf_counter() - started
    params = {
        "data": {"source": f"bigearthnet:{archive}", "split": "official"},
        "tile": {"size": 64, "stride": 56, "workers": workers},
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    gac = [shutil.which("gac") or "gac"]
    synth = run([*gac, "synth", "--params", "params.yaml", "--out", f"scenes_{n}"], work)
    tile = run([*gac, "tile", "--params", "params.yaml", "--scenes", f"scenes_{n}", "--out", f"tiles_{n}.zarr"], work)
    shutil.rmtree(archive)
    shutil.rmtree(work / f"tiles_{n}.zarr")
    return {
        "patches": n,
        "generate_s": generated,
        "synth_s": synth[0],
        "tile_s": tile[0],
        "parent_mb": tile[1] / 1e6,
        "worker_mb": tile[2] / 1e6,
        "synth_mb": synth[1] / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, nargs="+", default=[1000, 16000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where the archives are generated (default: a temp dir)")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; load {load()}; tile.workers {args.workers}")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_", dir=args.dir))
    rows = []
    try:
        for n in args.patches:
            row = ingest(n, args.workers, work)
            rows.append(row)
            print(
                f"{n:>6} patches: generated in {row['generate_s']:.0f} s; synth {row['synth_s']:.1f} s "
                f"({row['synth_mb']:.0f} MB); tile {row['tile_s']:.1f} s = {n / row['tile_s']:.2f} patches/s, "
                f"peak RSS parent {row['parent_mb']:.0f} MB, largest worker {row['worker_mb']:.0f} MB; "
                f"load {load()}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first, last = rows[0], rows[-1]
    per_patch = (last["tile_s"] / last["patches"]) / (first["tile_s"] / first["patches"])
    print(
        f"{last['patches']} / {first['patches']} patches: time per patch x{per_patch:.2f}, "
        f"peak RSS parent x{last['parent_mb'] / first['parent_mb']:.2f}, "
        f"worker x{last['worker_mb'] / max(first['worker_mb'], 1e-9):.2f} (goals: within 1.2x); load {load()}"
    )


if __name__ == "__main__":
    main()
