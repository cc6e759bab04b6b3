"""Benchmark: a stage's start-up, process start to its first model call, in the ways GAC can start.

Every stage logs `first model call (...) X s after process start` once
(gac.startup). This runs `gac generate`, `gac translate --until v2` and
`gac train-stage2` on a tiny demo (2 scenes of 128 px, 4 tiles of 64 px, one
DDIM step, one training step), each in every --variants way, the order
rotating between rounds, for --rounds rounds:

- default: as a user runs it (fast terratorch import, initial states read
  from the cache, which untimed runs before the rounds have written);
- no-cache: `GAC_INIT_CACHE=0`, every model initialised in the process;
- plain: `GAC_PLAIN_TERRATORCH=1` as well (`import terratorch` whole).

The baseline, timed the same way in every round, is `python -c "import
torch"`, the part of the start-up no stage can avoid. Medians; ratios are
between figures of the same run, which survive a busy machine better than
seconds. The cache lives in the run's temporary directory.

    python bench/bench_startup.py [--rounds 3] [--variants default no-cache plain]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GAC = Path(sys.executable).with_name("gac")
FIRST_CALL = re.compile(r"first model call \((.*?)\) ([0-9.]+) s after process start")
TORCH = [
    sys.executable,
    "-c",
    "import torch\nfrom gac.startup import seconds_since_process_start\nprint(seconds_since_process_start())",
]
COMMANDS = {
    "gac generate": ["generate", "--no-progress", "--out", "data/opt_v1_{run}.zarr"],
    "gac translate --until v2": [
        "translate",
        "data/scenes/S1RTC/demo_00.tif",
        "--until",
        "v2",
        "--out",
        "data/translate_{run}",
        "--no-progress",
    ],
    "gac train-stage2": [
        "train-stage2",
        "--out",
        "data/stage2_{run}",
        "--live",
        "data/live_{run}",
        "--checkpoints",
        "data/ckpt_{run}",
    ],
}
VARIANTS = {
    "default": {},
    "no-cache": {"GAC_INIT_CACHE": "0"},
    "plain": {"GAC_INIT_CACHE": "0", "GAC_PLAIN_TERRATORCH": "1"},
}


def tiny_params(work: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(demo_scenes=2, demo_size=128, max_tiles=4)
    params["tile"].update(split_block=64)
    params["stage1"].update(timesteps=1)
    params["stage2"].update(max_steps=1, max_epochs=1, batch_size=2)
    params["translate"].update(timesteps=1)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(args: list[str], work: Path, variant: str = "default") -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "GAC_CACHE_DIR": str(work / "cache")}
    for switch in ("GAC_INIT_CACHE", "GAC_PLAIN_TERRATORCH"):
        env.pop(switch, None)
    env.update(VARIANTS[variant])
    done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def startup(command: str, work: Path, variant: str, run_id: str) -> float:
    args = [str(GAC)] + [a.format(run=run_id) for a in COMMANDS[command]]
    found = FIRST_CALL.findall(run(args, work, variant))
    if not found:
        raise SystemExit(f"{command}: no first-model-call line in its log")
    return float(found[0][1])


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    return f"{model}, {os.cpu_count()} logical CPUs"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default", "no-cache"])
    args = parser.parse_args()
    variants = args.variants
    print(f"CPU: {machine()}; load average (uptime) at start: {load()}", flush=True)
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny_params(work)
        setups = (
            ["synth"],
            ["tile"],
            ["generate", "--no-progress"],
            ["train-stage2"],
            COMMANDS["gac translate --until v2"],
        )
        for setup in setups:  # the timed runs' inputs, and the initial-state cache written
            run([str(GAC), *[a.format(run="setup") for a in setup]], work)
        for r in range(args.rounds):
            times.setdefault(("import torch", "default"), []).append(float(run(TORCH, work).split()[-1]))
            for command in COMMANDS:
                for k in range(len(variants)):  # rotate which goes first
                    variant = variants[(k + r) % len(variants)]
                    seconds = startup(command, work, variant, f"{r}{variant}")
                    times.setdefault((command, variant), []).append(seconds)
            print(f"round {r + 1}/{args.rounds} done, load {load()}", flush=True)
    med = {key: statistics.median(values) for key, values in times.items()}
    torch_s = med[("import torch", "default")]
    print(f"\nstart-up = process start to first model call, median of {args.rounds} (s, and x import torch)")
    print(f"{'':<28}" + "".join(f"{v:>12}{'x torch':>9}" for v in variants))
    print(f"{'python -c import torch':<28}{torch_s:>12.2f}{1:>9.2f}")
    for command in COMMANDS:
        print(
            f"{command:<28}"
            + "".join(f"{med[(command, v)]:>12.2f}{med[(command, v)] / torch_s:>9.2f}" for v in variants)
        )
    print("rounds (s): " + "; ".join(f"{c} {v}: {', '.join(f'{x:.1f}' for x in t)}" for (c, v), t in times.items()))
    print(f"load average (uptime) at end: {load()}")


if __name__ == "__main__":
    main()
