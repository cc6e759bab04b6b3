"""One rule for every inference stage's device and precision (gac.device)."""

from __future__ import annotations

import pytest
import torch

from gac.device import autocast, autocast_dtype, resolve_device
from gac.errors import GacError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("choice", "key"), [("cuda", "stage1.infer.device"), ("gpu", "stage3.infer.device"), ("mps", "stage2.infer.device")]
)
def test_an_explicit_device_this_machine_lacks_is_one_line_naming_the_key(no_gpu, choice, key):
    with pytest.raises(GacError) as err:
        resolve_device(choice, key=key)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{key} is '{choice}'") and f"set {key}: auto or cpu" in message


def test_auto_is_the_cpu_without_a_gpu_and_this_ranks_gpu_with_one(no_gpu, monkeypatch):
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1) and chosen == [1]
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")  # an explicit cpu stays on the cpu


def test_unknown_device_names_the_choices():
    with pytest.raises(
        GacError, match=r"stage3\.infer\.device: 'tpu' is not a device; use one of auto, cpu, cuda, gpu, mps"
    ):
        resolve_device("tpu", key="stage3.infer.device")


def test_precision_is_an_autocast_dtype_on_cuda_only():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert autocast_dtype(cuda, "bf16") is torch.bfloat16 and autocast_dtype(cuda, "16") is torch.float16
    assert autocast_dtype(cuda, "32") is None and autocast_dtype(cpu, "bf16") is None
    with autocast(cpu, "bf16"):  # CPU runs float32 whatever precision says: same bytes on a CPU machine
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.float32
