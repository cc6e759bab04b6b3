"""Stage 3 training steps: cross-entropy only versus the pixel path (whole tile, crop, default), per TerraMind size and
batch.

For each model, loss mode and batch size, a fresh process builds the stage-3
model exactly as `gac train-stage3` does (TerraMind with S1 + S2L2A inputs,
LoRA on the decoder's cross-attention, frozen S2L2A tokenizer; random
weights) and times training steps: the objective's forward, backward, AdamW.
Reported per run:

- step time: mean seconds per step after one warm-up step (which also
  caches the ground truth's tokens, as training does after its first epoch);
  the steps are consecutive batches, so `default` (the pixel path on every
  `stage3.loss.pixel_every`-th batch) averages pixel and plain steps as
  training does;
- step peak RSS: the highest resident memory sampled (every 5 ms) during the
  steps, minus the RSS after imports (so it holds model + activations);
- on CUDA, peak allocated GPU memory during the steps.

Modes (stage 3's default loss weights in all but `ce`):

- `ce`: cross-entropy alone (every pixel-path weight 0);
- `pixel-whole`: the pixel path on the whole tile at every step;
- `pixel-crop`: the pixel path on a `stage3.loss.pixel_crop` px crop at every step;
- `default`: stage 3's defaults (the crop, every `pixel_every`-th batch).

The pixel path adds soft FSQ codes and one x0 call of the tokenizer's
diffusion UNet (SAR consistency, identity, L1, spectral terms): the UNet, not
TerraMind, is what costs there, so its cost barely depends on the TerraMind
size, and it grows with the decoded area.

    python bench/bench_stage3.py [--models tiny small] [--batches 1 2] [--size 224] [--steps 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {
    "ce": {"sar": 0.0, "identity": 0.0, "l1": 0.0, "spectral": 0.0, "ms_ssim": 0.0, "lpips": 0.0, "colour": 0.0},
    "pixel-whole": {"pixel_crop": 0, "pixel_every": 1},
    "pixel-crop": {"pixel_every": 1},
    "default": {},
}


def worker(size_name: str, mode: str, batch: int, size: int, steps: int, threads: int, device: str) -> dict:
    import gc
    import logging
    import statistics
    import time

    import psutil
    import torch
    from rss import PeakRSS

    logging.disable(logging.WARNING)  # the random-weights warning is known here
    torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO))
    import peft  # noqa: F401  (imports first: the baseline holds the libraries, the deltas the model)

    from gac.upstream import terramind

    terramind()  # terratorch's modules the build uses

    from gac.params import validate_params
    from gac.tuning.objective import TuningObjective
    from gac.tuning.train import TuningTarget, build_lora_generator

    proc = psutil.Process()
    gc.collect()
    base = proc.memory_info().rss
    params = validate_params({"stage3": {"model": f"terramind_v1_{size_name}_generate", "loss": MODES[mode]}})
    s3 = params.stage3
    job = TuningTarget("bench", s3.model, "random", "stage3.weights", "S1RTC", Path("opt_v2.zarr"))
    net, counts = build_lora_generator(job, s3, size, seed=0)
    net = net.to(device)
    model = net.get_base_model()
    objective = TuningObjective("S1RTC", "opt", s3.loss)
    steps = -(-steps // s3.loss.pixel_every) * s3.loss.pixel_every  # whole cycles of pixel and plain batches
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    data = {
        "s1": -12 + 4 * torch.randn(batch, 2, size, size, generator=g),
        "s2": 300 + 3000 * torch.rand(batch, 12, size, size, generator=g),
        "opt": 300 + 3000 * torch.rand(batch, 12, size, size, generator=g),
        "valid": torch.ones(batch, size, size, dtype=torch.bool),
        "index": torch.arange(batch),  # ground-truth tokens are cached per tile after the warm-up step, as in training
    }
    data = {k: v.to(device) for k, v in data.items()}

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def step(batch_idx: int) -> tuple[float, float]:
        sync()
        start = time.perf_counter()
        loss, logs = objective(model, data, batch_idx)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start, float(logs["ce"])

    net.train()
    model.tokenizer.eval()
    with PeakRSS() as peak:
        step(0)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        results = [step(i) for i in range(steps)]
    return {
        "model": s3.model,
        "mode": mode,
        "batch": batch,
        "size": size,
        "threads": threads,
        "device": device,
        "trainable": counts["trainable"],
        "total": counts["total"],
        "pixel_crop": s3.loss.pixel_crop,
        "pixel_every": s3.loss.pixel_every,
        "step_s": statistics.mean(t for t, _ in results),
        "step_peak_rss_mb": (peak.bytes - base) / 2**20,
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "ce": results[-1][1],
    }


def run_worker(model: str, mode: str, batch: int, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        model,
        mode,
        str(batch),
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{model} {mode} batch {batch} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "small"], help="TerraMind sizes: tiny small base large")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--size", type=int, default=224, help="tile side in px (multiple of 16)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "MODE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, mode, batch = args.worker
        print(json.dumps(worker(model, mode, int(batch), args.size, args.steps, args.threads, args.device)))
        return
    rows = []
    print(
        f"stage 3 training step, {args.size} px, {args.device}, {args.threads} CPU threads, random weights, LoRA r=8 "
        "on cross-attention"
    )
    print(f"{'model':<8}{'mode':<13}{'batch':>6}{'trainable':>11}{'step s':>9}{'peak RSS MB':>13}{'GPU peak MB':>13}")
    for model in args.models:
        for mode in args.modes:
            for batch in args.batches:
                row = run_worker(model, mode, batch, args)
                rows.append(row)
                gpu = f"{row['gpu_peak_mb']:>13.0f}" if row["gpu_peak_mb"] is not None else f"{'-':>13}"
                print(
                    f"{model:<8}{mode:<13}{batch:>6}{row['trainable']:>11}{row['step_s']:>9.2f}{row['step_peak_rss_mb']:>13.0f}{gpu}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
