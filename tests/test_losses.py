"""gac.losses against hand-computed values and against pytorch-msssim where it applies."""

from __future__ import annotations

import math

import pytest
import torch

from gac.data.store import S2_BANDS
from gac.losses import (
    MS_SSIM_WEIGHTS,
    TrueColourLPIPS,
    WeightedLoss,
    fill_missing,
    l1,
    lpips_available,
    ms_ssim,
    ms_ssim_loss,
    ms_ssim_scales,
    psnr,
    sam,
)


def _pixel(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def test_l1_hand_value():
    pred = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]])
    target = torch.tensor([[[[0.0, 0.4], [0.3, 0.1]]]])
    assert l1(pred, target).item() == pytest.approx((0.1 + 0.2 + 0.0 + 0.3) / 4)


def test_psnr_hand_value():
    pred = torch.full((1, 1, 4, 4), 0.5)
    target = torch.full((1, 1, 4, 4), 0.6)
    assert psnr(pred, target).item() == pytest.approx(10 * math.log10(1 / 0.01), rel=1e-5)


@pytest.mark.parametrize("side, scales", [(192, 5), (176, 5), (64, 3), (32, 2), (16, 1), (8, 1)])
def test_ms_ssim_scales_fit_the_tile(side, scales):
    n, win = ms_ssim_scales(side)
    assert n == scales
    assert win <= side and win % 2 == 1
    assert side // 2 ** (n - 1) >= win


def test_ms_ssim_equals_pytorch_msssim_at_full_size():
    from pytorch_msssim import ms_ssim as reference

    torch.manual_seed(0)
    x = torch.rand(2, 3, 192, 192)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert ms_ssim(x, y).item() == pytest.approx(reference(x, y, data_range=1.0).item(), abs=2e-5)


def test_ms_ssim_of_flat_images_is_luminance_term_to_its_weight():
    # Flat images: every contrast-structure term is 1, so MS-SSIM = l ** w_last,
    # l = (2ab + C1) / (a^2 + b^2 + C1), w_last the coarsest weight after renormalising 3 scales (64 px).
    a, b = 0.2, 0.3
    c1 = (0.01 * 1.0) ** 2
    lum = (2 * a * b + c1) / (a * a + b * b + c1)
    w_last = MS_SSIM_WEIGHTS[2] / sum(MS_SSIM_WEIGHTS[:3])
    value = ms_ssim(torch.full((1, 2, 64, 64), a), torch.full((1, 2, 64, 64), b))
    assert value.item() == pytest.approx(lum**w_last, rel=1e-5)


@pytest.mark.parametrize("side", [64, 32, 16, 8])
def test_ms_ssim_small_tiles_identity_and_gradient(side):
    torch.manual_seed(1)
    x = torch.rand(2, 12, side, side)
    assert ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    pred = (x + 0.2 * torch.randn_like(x)).requires_grad_(True)
    loss = ms_ssim_loss(pred, x)
    assert 0.0 < loss.item() < 1.0
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_sam_hand_values():
    assert sam(_pixel(1, 0), _pixel(0, 1)).item() == pytest.approx(math.pi / 2, abs=1e-6)
    assert sam(_pixel(1, 1), _pixel(1, 0)).item() == pytest.approx(math.pi / 4, abs=1e-6)
    assert sam(_pixel(1, 2, 3), _pixel(1, 2, 3)).item() < 2e-3  # clamped inside acos's domain
    # The angle ignores brightness: a scaled spectrum has the same angle.
    assert sam(_pixel(2, 0, 2), _pixel(0.1, 0.2, 0.0)).item() == pytest.approx(
        sam(_pixel(1, 0, 1), _pixel(1, 2, 0)).item(), abs=1e-6
    )
    # Mean over pixels: one pixel at pi/2, one at 0-ish.
    pred = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])
    target = torch.tensor([[[[0.0, 1.0]], [[1.0, 1.0]]]])
    assert sam(pred, target).item() == pytest.approx((math.pi / 2 + 0.0) / 2, abs=2e-3)


def test_sam_gradient_is_finite_at_identity():
    x = torch.rand(1, 12, 4, 4, requires_grad=True)
    sam(x, x.detach().clone()).backward()
    assert torch.isfinite(x.grad).all()


def test_fill_missing_makes_nan_pixels_cost_nothing():
    pred = torch.tensor([[[[0.5, 0.5]]]], requires_grad=True)
    target = torch.tensor([[[[float("nan"), 0.1]]]])
    filled = fill_missing(pred, target)
    assert filled[0, 0, 0, 0].item() == 0.5 and filled[0, 0, 0, 1].item() == pytest.approx(0.1)
    loss = l1(pred, filled)
    loss.backward()
    assert loss.item() == pytest.approx(0.4 / 2)
    assert pred.grad[0, 0, 0, 0].item() == 0.0


def test_weighted_loss_is_the_weighted_sum_and_drops_lpips_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty-hub"))
    torch.manual_seed(2)
    pred = torch.rand(2, 12, 32, 32)
    target = torch.rand(2, 12, 32, 32)
    loss = WeightedLoss({"l1": 1.0, "ms_ssim": 0.5, "sam": 0.25, "lpips": 0.1}, S2_BANDS)
    assert "lpips" not in loss.weights and "not at" in loss.lpips_status
    total, terms = loss(pred, target)
    assert set(terms) == {"l1", "ms_ssim", "sam"}
    expected = l1(pred, target) + 0.5 * ms_ssim_loss(pred, target) + 0.25 * sam(pred, target)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss term"):
        WeightedLoss({"l2": 1.0}, S2_BANDS)


def test_lpips_availability_follows_the_hub_cache(monkeypatch, tmp_path):
    """Offline, LPIPS is off with a reason; with trunk weights in the cache it runs (random AlexNet weights here)."""
    import torchvision

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    ok, reason = lpips_available("alex")
    assert not ok and "alexnet-owt-7be5be79.pth" in reason and "offline" in reason
    assert lpips_available("resnet")[0] is False

    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(3)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth")
    ok, reason = lpips_available("alex")
    assert ok, reason
    critic = TrueColourLPIPS(S2_BANDS, "alex")
    x = torch.rand(1, 12, 64, 64) * 0.3
    y = torch.rand(1, 12, 64, 64) * 0.3
    assert critic(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert critic(x, y).item() > 0
    assert not any(p.requires_grad for p in critic.parameters())


def test_real_s2_tile_losses(shared_samples):
    """A real 224 px TerraMesh S2L2A tile: five MS-SSIM scales match pytorch-msssim; SAM ignores brightness, sees band
    swaps."""
    import rasterio
    from pytorch_msssim import ms_ssim as reference

    path = sorted((shared_samples / "S2L2A").glob("*.tif"))[0]
    with rasterio.open(path) as src:
        x = torch.from_numpy(src.read().astype("float32"))[None] / 1e4
    assert x.shape == (1, 12, 224, 224)
    blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    assert ms_ssim_scales(224) == (5, 11)
    assert ms_ssim(blurred, x).item() == pytest.approx(reference(blurred, x, data_range=1.0).item(), abs=2e-5)
    assert 0.5 < ms_ssim(blurred, x).item() < 0.999
    assert sam(0.7 * x, x).item() < 2e-3  # a darker copy has the same spectra
    swapped = x[:, [0, 1, 2, 3, 4, 5, 6, 10, 8, 9, 7, 11]]  # B08 <-> B11
    assert sam(swapped, x).item() > 0.05


def test_spectral_coherence_hand_value():
    from gac.losses import spectral_coherence

    index = {b: i for i, b in enumerate(S2_BANDS)}
    target = torch.full((1, 12, 2, 2), 0.1)
    target[:, index["B08"]] = 0.3  # NDVI (0.3 - 0.1) / 0.4 = 0.5, NDWI -0.5
    pred = target.clone()
    assert spectral_coherence(pred, target, index).item() == pytest.approx(
        0.0, abs=2e-3
    )  # SAM's clamp leaves ~1e-3 rad
    pred[:, index["B04"]] = 0.3  # NDVI 0, NDWI still -0.5: index error 0.5 on top of the spectral angle
    angle = math.acos(
        float((pred[0, :, 0, 0] @ target[0, :, 0, 0]) / (pred[0, :, 0, 0].norm() * target[0, :, 0, 0].norm()))
    )
    assert spectral_coherence(pred, target, index).item() == pytest.approx(angle + 0.5, abs=2e-3)


def test_colour_consistency_hand_value_and_blind_to_position():
    from gac.losses import colour_consistency

    target = torch.tensor([[[[0.0, 0.2], [0.2, 0.0]]]])  # mean 0.1, std 0.1
    assert colour_consistency(torch.flip(target, dims=(-1,)), target).item() == pytest.approx(0.0, abs=1e-7)
    flat = torch.full_like(target, 0.3)  # mean gap 0.2, std gap 0.1
    assert colour_consistency(flat, target).item() == pytest.approx(0.3, abs=1e-6)


def test_weighted_loss_takes_the_new_terms():
    pred = torch.rand(2, 12, 16, 16, generator=torch.Generator().manual_seed(0))
    target = torch.rand(2, 12, 16, 16, generator=torch.Generator().manual_seed(1))
    total, terms = WeightedLoss({"spectral": 0.5, "colour": 2.0}, S2_BANDS)(pred, target)
    assert set(terms) == {"spectral", "colour"}
    assert total.item() == pytest.approx(0.5 * terms["spectral"].item() + 2.0 * terms["colour"].item())
