"""Which device an inference stage runs on, and at which autocast precision: one rule for every stage.

`auto` takes this rank's CUDA GPU when one is visible (Apple's MPS next), else
the CPU. A device named explicitly (`cuda`, `gpu`, `mps`) that this machine
does not have is a user mistake, one line naming the params key: a run that
silently falls back to the CPU would take hours where minutes were expected.
Training stages leave this to Lightning (`accelerator`, `devices`).

Precision is an autocast dtype (`bf16`, `16`, `32` for none, or `auto`):

- CUDA: `bf16` and `16` autocast to bfloat16 / float16; `auto` is bfloat16.
- CPU: `bf16` is honoured where the CPU computes bfloat16 natively (AVX512-BF16
  or AMX-BF16 on x86, the BF16 extension on Arm: `cpu_native_bf16`). Elsewhere
  bfloat16 is only emulated (oneDNN converts every operand: on an AVX2 EPYC a
  3x3 conv ran 7x and a matmul 180x slower than float32), so `bf16` runs
  float32 there and says so in one log line rather than turning minutes into
  hours. `auto` takes bfloat16 on a native-bf16 CPU only while its measured
  quality cost is within `CPU_BF16_MIN_PSNR` (generated S2L2A in bf16 against
  float32 on the same tiles and seeds, `bench/bench_generate.py --quality`),
  else float32. `16` (float16) always runs float32 on a CPU.
- MPS: float32.

Which dtype actually ran is `run_dtype(device, precision)`; prediction stores
record it (`compute_dtype`). A CPU without native bf16 therefore gives the
same float32 bytes whatever the precision says; ONEDNN_MAX_CPU_ISA below
AVX512_CORE_BF16 counts as no native bf16 (oneDNN would emulate it).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gac.errors import GacError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DeviceChoice = Literal["auto", "cpu", "cuda", "gpu", "mps"]
Precision = Literal["auto", "32", "bf16", "16"]
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "gpu", "mps")
PRECISIONS: tuple[str, ...] = ("auto", "32", "bf16", "16")

log = logging.getLogger(__name__)

# `precision: auto` takes bfloat16 on a native-bf16 CPU only if generation in bf16 stays within this PSNR (dB, unit
# reflectance) of float32 on the same tiles and seeds: 40 dB is where gac_score stops telling outputs apart.
CPU_BF16_MIN_PSNR = 40.0
# Measured: `python bench/bench_generate.py --quality --size 64 --timesteps 10` (TerraMind tiny, random weights with a
# live decoder output layer, 4 real S1RTC crops of 64 px, 1 decoding step): median 35.9 dB over the tiles (worst 35.4),
# RMS difference 15% of the within-band std; token sampling in bf16 picks other tokens. Below the bound, so `auto`
# runs float32 on every CPU until a measurement (with real weights) says otherwise; docs/benchmarks.md.
CPU_BF16_MEASURED_PSNR = 35.9
# x86 /proc/cpuinfo flags and Arm Features that compute bfloat16 in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# ONEDNN_MAX_CPU_ISA values that still let oneDNN use those instructions (others cap it below them).
NATIVE_BF16_ISAS = frozenset(
    {
        "ALL",
        "DEFAULT",
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX512_CORE_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512",
        "AVX10_1_512_AMX",
        "AVX10_1_512_AMX_FP16",
        "AVX10_2_512",
        "AVX10_2_512_AMX_2",
    }
)


def resolve_device(choice: str, local_rank: int = 0, key: str = "stage1.infer.device") -> "torch.device":
    """`choice` (auto | cpu | cuda | gpu | mps) -> a torch.device; an explicit device this machine lacks is a GacError.

    On CUDA the device is this rank's GPU (`local_rank` modulo the GPUs
    visible), made the current one, as torchrun's ranks expect.
    """
    import torch

    if choice not in DEVICE_CHOICES:
        raise GacError(f"{key}: '{choice}' is not a device; use one of {', '.join(DEVICE_CHOICES)}")
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if choice in ("cuda", "gpu") and not cuda:
        raise GacError(f"{key} is '{choice}' but no CUDA device is visible on this machine; set {key}: auto or cpu")
    if choice == "mps" and not mps:
        raise GacError(f"{key} is 'mps' but this machine has no Apple MPS device; set {key}: auto or cpu")
    if choice in ("cuda", "gpu") or (choice == "auto" and cuda):
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if choice == "mps" or (choice == "auto" and mps):
        return torch.device("mps")
    return torch.device("cpu")


def cpu_native_bf16(cpuinfo: str | None = None, max_isa: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 in hardware and oneDNN may use it (not: whether bf16 merely runs).

    Reads the flags of /proc/cpuinfo (x86 `flags`, Arm `Features`) unless
    `cpuinfo` gives their text, and ONEDNN_MAX_CPU_ISA unless `max_isa` is
    given. torch's own check (mkldnn bf16 "supported") is true on any
    AVX-512 CPU, where oneDNN emulates bf16, so it is not used.
    """
    if max_isa is None:
        max_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    if max_isa and max_isa.strip().upper() not in NATIVE_BF16_ISAS:
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no way to tell here, so no bf16 on the CPU
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return bool(flags & NATIVE_BF16_FLAGS)


def cpu_auto_bf16() -> bool:
    """`precision: auto` on a native-bf16 CPU: bf16 only while its measured quality cost is within the bound."""
    return CPU_BF16_MEASURED_PSNR is not None and CPU_BF16_MEASURED_PSNR >= CPU_BF16_MIN_PSNR


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        log.info(message)


def autocast_dtype(device: "torch.device", precision: str) -> "torch.dtype | None":
    """The autocast dtype for `precision` on `device`; None where float32 runs (see the module docstring)."""
    import torch

    if precision not in PRECISIONS:
        raise GacError(f"precision '{precision}' is not known; use {', '.join(PRECISIONS)}")
    if precision == "32" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cuda":
        return torch.float16 if precision == "16" else torch.bfloat16
    if precision == "16":
        _say_once("precision 16 (float16) is a CUDA setting; the CPU runs float32")
        return None
    if not cpu_native_bf16():
        if precision == "bf16":
            _say_once(
                "precision bf16: this CPU has no native bfloat16 (only emulated, many times slower); float32 runs"
            )
        return None
    return torch.bfloat16 if precision == "bf16" or cpu_auto_bf16() else None


def run_dtype(device: "torch.device", precision: str) -> str:
    """The dtype a model's matmuls and convolutions actually run in ('float32', 'bfloat16', 'float16'): what stores
    record."""
    dtype = autocast_dtype(device, precision)
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def autocast(device: "torch.device", precision: str):
    """A context manager running the body at `precision` on `device` (a no-op where autocast_dtype is None)."""
    import torch

    dtype = autocast_dtype(device, precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def use_deterministic(on: bool) -> None:
    """The process-wide `deterministic` switch: torch's deterministic algorithms, warn-only where an op has none.

    Set once by each stage command before any model is built (Lightning is
    told to leave it alone). On a CPU the results are the same either way;
    on a GPU `false` lets cuDNN pick its fastest, non-reproducible kernels.
    """
    import os

    import torch

    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for reproducible matmuls
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on
