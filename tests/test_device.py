"""One rule for every inference stage's device and precision (gac.device)."""

from __future__ import annotations

import os

import pytest
import torch

import gac.device
from gac.device import autocast, autocast_dtype, cpu_native_bf16, resolve_device, run_dtype
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


def test_precision_is_an_autocast_dtype_on_cuda_and_float32_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(gac.device, "cpu_native_bf16", lambda *a, **k: False)
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert autocast_dtype(cuda, "bf16") is torch.bfloat16 and autocast_dtype(cuda, "16") is torch.float16
    assert autocast_dtype(cuda, "32") is None and autocast_dtype(cpu, "bf16") is None
    with autocast(cpu, "bf16"):  # CPU runs float32 whatever precision says: same bytes on a CPU machine
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.float32


EPYC_FLAGS = "flags\t\t: fpu sse sse2 avx f16c avx2 fma bmi2 sha_ni vaes"  # this project's AVX2 machine, shortened
SAPPHIRE_RAPIDS_FLAGS = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
COOPER_LAKE_FLAGS = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16"
ICE_LAKE_FLAGS = "flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni"  # AVX-512 without bf16: oneDNN emulates it
GRAVITON3_FEATURES = "processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16 svebf16"


@pytest.mark.parametrize(
    ("cpuinfo", "max_isa", "native"),
    [
        (EPYC_FLAGS, "", False),
        (ICE_LAKE_FLAGS, "", False),
        (COOPER_LAKE_FLAGS, "", True),
        (SAPPHIRE_RAPIDS_FLAGS, "", True),
        (GRAVITON3_FEATURES, "", True),
        (SAPPHIRE_RAPIDS_FLAGS, "AVX2", False),  # oneDNN capped below bf16: emulated, so not native
        (SAPPHIRE_RAPIDS_FLAGS, "avx512_core_vnni", False),
        (SAPPHIRE_RAPIDS_FLAGS, "AVX512_CORE_AMX", True),
        (EPYC_FLAGS, "ALL", False),  # no cap does not make bf16 native
        ("", "", False),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags_and_oneDNN_cap(cpuinfo, max_isa, native):
    assert cpu_native_bf16(cpuinfo, max_isa) is native


def test_native_bf16_reads_this_machine_and_the_environment(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_native_bf16() is False and cpu_native_bf16(SAPPHIRE_RAPIDS_FLAGS) is False
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert cpu_native_bf16(SAPPHIRE_RAPIDS_FLAGS) is True
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert cpu_native_bf16() is cpu_native_bf16(flags, "")


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(on: bool, measured_psnr: float | None = None):
        monkeypatch.setattr(gac.device, "cpu_native_bf16", lambda *a, **k: on)
        monkeypatch.setattr(gac.device, "CPU_BF16_MEASURED_PSNR", measured_psnr)

    return set_native


def test_cpu_honours_bf16_only_where_native(native_bf16, caplog):
    cpu = torch.device("cpu")
    caplog.set_level("INFO", logger="gac.device")
    gac.device._SAID.clear()
    native_bf16(False)
    assert autocast_dtype(cpu, "bf16") is None and run_dtype(cpu, "bf16") == "float32"
    assert autocast_dtype(cpu, "bf16") is None  # said once, not per batch
    assert caplog.text.count("no native bfloat16") == 1
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.float32
    native_bf16(True)
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16 and run_dtype(cpu, "bf16") == "bfloat16"
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    assert autocast_dtype(cpu, "16") is None and autocast_dtype(cpu, "32") is None  # float16 is a CUDA setting
    assert run_dtype(torch.device("mps"), "bf16") == "float32"


def test_auto_is_bf16_on_cuda_and_on_native_cpus_only_within_the_quality_bound(native_bf16):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert autocast_dtype(cuda, "auto") is torch.bfloat16 and run_dtype(cuda, "auto") == "bfloat16"
    bound = gac.device.CPU_BF16_MIN_PSNR
    native_bf16(True, measured_psnr=bound + 0.1)
    assert autocast_dtype(cpu, "auto") is torch.bfloat16
    native_bf16(True, measured_psnr=bound - 0.1)
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "bf16") is torch.bfloat16  # bf16 as asked
    native_bf16(False, measured_psnr=bound + 10)
    assert autocast_dtype(cpu, "auto") is None and run_dtype(cpu, "auto") == "float32"


def test_unknown_precision_names_the_choices():
    with pytest.raises(GacError, match=r"precision 'fp8' is not known; use auto, 32, bf16, 16"):
        autocast_dtype(torch.device("cpu"), "fp8")
