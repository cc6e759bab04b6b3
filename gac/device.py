"""Which device an inference stage runs on, and at which autocast precision: one rule for every stage.

`auto` takes this rank's CUDA GPU when one is visible (Apple's MPS next), else
the CPU. A device named explicitly (`cuda`, `gpu`, `mps`) that this machine
does not have is a user mistake, one line naming the params key: a run that
silently falls back to the CPU would take hours where minutes were expected.
Training stages leave this to Lightning (`accelerator`, `devices`).

Precision is an autocast dtype on CUDA (`bf16`, `16`, or `32` for none); on
CPU and MPS everything runs float32, so the same params give the same bytes
on a CPU machine whatever the precision says.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal

from gac.errors import GacError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DeviceChoice = Literal["auto", "cpu", "cuda", "gpu", "mps"]
Precision = Literal["32", "bf16", "16"]
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "gpu", "mps")


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


def autocast_dtype(device: "torch.device", precision: str) -> "torch.dtype | None":
    """The autocast dtype for `precision` on `device`; None (float32, no autocast) on CPU/MPS or for '32'."""
    import torch

    if device.type != "cuda" or precision == "32":
        return None
    if precision not in ("bf16", "16"):
        raise GacError(f"precision '{precision}' is not known; use 32, bf16 or 16")
    return torch.bfloat16 if precision == "bf16" else torch.float16


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
