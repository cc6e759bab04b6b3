"""Foundation budgets: `gac --help` (< 2 s) and `gac tile` on the demo scenes (< 30 s).

Each figure is printed beside a baseline measured in the same run, so the
ratio survives a noisy machine: `--help` against a bare interpreter start and
against `import torch` (what --help must avoid); `tile` against just reading
the same scenes with rasterio (the I/O floor).

    python bench/bench_foundation.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GAC = Path(sys.executable).with_name("gac")


def timed(command: list[str], cwd: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "params.yaml").write_text((REPO / "params.yaml").read_text())
        subprocess.run([str(GAC), "synth", "--out", "scenes"], cwd=work, check=True, capture_output=True)
        read_only = [
            sys.executable,
            "-c",
            "import rasterio, glob\nfor f in sorted(glob.glob('scenes/*/*.tif')): rasterio.open(f).read()",
        ]
        rows = [
            (
                "gac --help",
                timed([str(GAC), "--help"], work, args.repeats),
                "python -c pass",
                timed([sys.executable, "-c", "pass"], work, args.repeats),
                2.0,
            ),
            (
                "gac --help",
                timed([str(GAC), "--help"], work, args.repeats),
                "python -c 'import torch'",
                timed([sys.executable, "-c", "import torch"], work, args.repeats),
                2.0,
            ),
            (
                "gac tile (demo)",
                timed([str(GAC), "tile", "--scenes", "scenes", "--out", "tiles.zarr"], work, args.repeats),
                "read scenes (rasterio)",
                timed(read_only, work, args.repeats),
                30.0,
            ),
        ]
    print(f"{'measured':<18}{'s':>8}   {'baseline':<26}{'s':>8}{'ratio':>8}   budget")
    for name, seconds, base_name, base, budget in rows:
        verdict = "ok" if seconds < budget else "OVER"
        print(
            f"{name:<18}{seconds:>8.2f}   {base_name:<26}{base:>8.2f}{seconds / base:>8.2f}   < {budget:.0f} s "
            f"{verdict}"
        )


if __name__ == "__main__":
    main()
