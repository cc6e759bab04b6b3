"""Stage 2 on CPU: fp32 versus 8-bit (bitsandbytes Linear8bitLt) frozen Prithvi backbone, without and with
activation checkpointing of the backbone blocks, as ratios from one run.

For each backbone (default Prithvi-EO-2.0 100M-TL and 300M, random weights)
and each mode (fp32; fp32+ckpt; 8bit; 8bit+ckpt, what `backbone_8bit: true`
runs with `activation_checkpointing: auto`), a fresh process builds the
stage-2 refiner (LoRA + head, as trained) and times training steps at batch 1
(forward, L1 + MS-SSIM + SAM, backward, AdamW). Reported per run:

- weight bytes: what the parameters occupy (int8 = 1 byte), noise-free;
- model RSS: resident memory after building, minus the process's RSS after imports;
- step peak RSS: the highest RSS sampled (every 5 ms) during the steps, minus the same baseline;
- step time: median seconds per training step.

Only the blocks' Linear weights become int8; activations, LoRA, head and
optimizer state stay fp32. "+ckpt" is the memory mode as training runs it:
each block keeps only its input and is recomputed in backward, so are the
head's MLPs in bands of rows, and the refiner hands freed heap back to the
OS before forward and before backward
(glibc otherwise keeps the last step's freed activations resident, and the
peak RSS stays near the un-checkpointed one). The goal: 8bit+ckpt step peak
at most half the fp32 step's.

    python bench/bench_stage2.py [--backbones prithvi_eo_v2_100_tl prithvi_eo_v2_300] [--size 224] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("fp32", "fp32+ckpt", "8bit", "8bit+ckpt")  # the first is the baseline of the ratios


def worker(backbone: str, mode: str, size: int, steps: int, threads: int) -> dict:
    import gc
    import logging
    import statistics
    import time

    import psutil
    import torch
    from rss import PeakRSS

    logging.disable(logging.WARNING)  # the random-weights warning, once per run, is known here
    torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO))
    # Import everything the build imports first, so the baseline holds the libraries and the deltas hold the model.
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401

    from gac.data.store import S2_BANDS
    from gac.losses import WeightedLoss
    from gac.refine.build import build_refiner
    from gac.refine.params import Stage2Params
    from gac.upstream import prithvi, terramind

    terramind(), prithvi()  # terratorch's modules the build uses

    proc = psutil.Process()
    gc.collect()
    base = proc.memory_info().rss
    config = Stage2Params(
        backbone=backbone, backbone_8bit=mode.startswith("8bit"), activation_checkpointing=mode.endswith("+ckpt")
    ).training_dict()
    refiner, info = build_refiner(config)
    gc.collect()
    model_rss = proc.memory_info().rss - base
    weight_bytes = sum(p.numel() * p.element_size() for p in refiner.parameters()) + sum(
        b.numel() * b.element_size() for b in refiner.buffers()
    )
    loss = WeightedLoss({"l1": 1.0, "ms_ssim": 0.2, "sam": 0.1}, S2_BANDS)
    optimizer = torch.optim.AdamW([p for p in refiner.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = dict(
        opt_v1=500 + 2500 * torch.rand(1, 12, size, size, generator=g),
        month=torch.tensor([6]),
        lat=torch.tensor([47.0]),
        lon=torch.tensor([8.0]),
    )
    target = batch["opt_v1"] * 1.05 / 1e4

    def step() -> float:
        start = time.perf_counter()
        total, _ = loss(refiner(**batch) / 1e4, target)
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    refiner.train()
    with PeakRSS() as peak:
        step()  # warm-up: lazy inits, optimizer state
        times = [step() for _ in range(steps)]
    return {
        "backbone": backbone,
        "mode": mode,
        "size": size,
        "threads": threads,
        "parameters": info["parameters"],
        "quantized_linears": info["quantized_linears"],
        "checkpointed_blocks": info["checkpointed_blocks"],
        "weight_mb": weight_bytes / 2**20,
        "model_rss_mb": model_rss / 2**20,
        "step_peak_rss_mb": (peak.bytes - base) / 2**20,
        "step_s": statistics.median(times),
    }


def run_worker(backbone: str, mode: str, size: int, steps: int, threads: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        backbone,
        mode,
        "--size",
        str(size),
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{backbone} {mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["prithvi_eo_v2_100_tl", "prithvi_eo_v2_300"])
    parser.add_argument("--size", type=int, default=224, help="tile side in px (multiple of 16)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", nargs=2, metavar=("BACKBONE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.size, args.steps, args.threads)))
        return
    rows = []
    print(f"batch 1, {args.size} px, {args.threads} threads, CPU, random weights; 8-bit / fp32 ratios from this run")
    print(
        f"{'backbone':<22}{'mode':<15}{'trainable':>11}{'share':>8}{'weights MB':>12}"
        f"{'model RSS MB':>14}{'step peak MB':>14}{'step s':>9}"
    )
    for backbone in args.backbones:
        pair = {}
        for mode in MODES:
            row = run_worker(backbone, mode, args.size, args.steps, args.threads)
            rows.append(row)
            pair[mode] = row
            counts = row["parameters"]
            print(
                f"{backbone:<22}{mode:<15}{counts['trainable']:>11}{100 * counts['trainable_share']:>7.2f}%"
                f"{row['weight_mb']:>12.1f}"
                f"{row['model_rss_mb']:>14.1f}{row['step_peak_rss_mb']:>14.1f}{row['step_s']:>9.2f}"
            )
        for mode in MODES[1:]:
            ratio = {
                k: pair[mode][k] / pair["fp32"][k] for k in ("weight_mb", "model_rss_mb", "step_peak_rss_mb", "step_s")
            }
            print(
                f"{backbone:<22}{mode + '/fp32':<15}{'':>10}{ratio['weight_mb']:>12.2f}{ratio['model_rss_mb']:>14.2f}"
                f"{ratio['step_peak_rss_mb']:>14.2f}{ratio['step_s']:>9.2f}   (memory saved: weights "
                f"{100 * (1 - ratio['weight_mb']):.0f}%, "
                f"model RSS {100 * (1 - ratio['model_rss_mb']):.0f}%, step peak "
                f"{100 * (1 - ratio['step_peak_rss_mb']):.0f}%)"
            )
        print(
            f"{backbone}: 8bit+ckpt step peak / fp32 step peak = "
            f"{pair['8bit+ckpt']['step_peak_rss_mb'] / pair['fp32']['step_peak_rss_mb']:.2f} (goal <= 0.50)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
