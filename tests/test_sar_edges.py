"""SAR-edge agreement: the definition's properties, its gradient, and real S1/S2 pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gac.sar_edges import (
    edge_agreement,
    gradient_magnitude,
    lee_filter,
    margin,
    optical_edge_map,
    sar_edge_agreement,
    sar_edge_loss,
    sar_edge_map,
)

torch.set_num_threads(2)
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "terramesh-samples"


def _scene(size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A field boundary (vertical) and a river (horizontal band) in S1 dB with speckle, and a matching S2 image."""
    torch.manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    field = (xx >= size // 2).double()
    river = ((yy >= size // 3) & (yy < size // 3 + 6)).double()
    vv = -8.0 - 4.0 * field - 12.0 * river
    vh = vv - 7.0
    clean = torch.stack([vv, vh]).unsqueeze(0)
    # Multiplicative speckle (gamma, 4.4 looks) in linear power.
    gamma = torch.distributions.Gamma(torch.tensor(4.4), torch.tensor(4.4))
    speckle = gamma.sample((1, 2, size, size)).double()
    s1 = 10 * torch.log10(10 ** (clean / 10) * speckle)
    refl = 1500 + 1500 * field - 1200 * river
    s2 = refl.expand(12, size, size).clone().unsqueeze(0)
    s2[:, 7] += 2000 * field  # NIR brighter over the vegetated field
    return s2, s1


def test_lee_filter_keeps_constant_and_reduces_speckle():
    flat = torch.full((1, 2, 32, 32), -10.0, dtype=torch.float64)
    assert torch.allclose(lee_filter(flat), flat, atol=1e-9)
    s2, s1 = _scene()
    filtered = lee_filter(s1)
    # Homogeneous left half, away from the river: speckle std in dB drops by more than half.
    for channel in (0, 1):
        patch = (0, channel, slice(2, 18), slice(4, 28))
        assert filtered[patch].std() < 0.5 * s1[patch].std()
        # Mean power preserved there to within 5 %.
        ratio = (10 ** (filtered[patch] / 10)).mean() / (10 ** (s1[patch] / 10)).mean()
        assert abs(float(ratio) - 1) < 0.05


def test_gradient_magnitude_of_a_step_by_hand():
    step = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    step[..., 4:] = 1.0
    mag = gradient_magnitude(step)
    # Sobel x across a unit step: 1 + 2 + 1 = 4 on the two columns either side of it, 0 elsewhere.
    assert torch.allclose(mag[0, 0, 3, 3], torch.tensor(4.0, dtype=torch.float64))
    assert torch.allclose(mag[0, 0, 3, 4], torch.tensor(4.0, dtype=torch.float64))
    assert float(mag[0, 0, 3, 1]) < 1e-5


def test_own_edges_score_one_and_are_maximal():
    s2, s1 = _scene()
    edges = optical_edge_map(s2)
    assert torch.allclose(edge_agreement(edges, edges), torch.ones(1, dtype=edges.dtype), atol=1e-9)
    # Any other map scores less than the map itself.
    other = sar_edge_map(s1)
    assert float(edge_agreement(edges, other)) < 1 - 1e-3
    assert float(edge_agreement(edges, 3 * edges + 0.5)) == pytest.approx(1.0, abs=1e-9)


def test_matching_scene_scores_high_and_unrelated_low():
    s2, s1 = _scene()
    match = float(sar_edge_agreement(s2, s1))
    rotated = float(sar_edge_agreement(torch.rot90(s2, 1, dims=(-2, -1)), s1))
    flat = float(sar_edge_agreement(torch.full_like(s2, 1234.0), s1))
    assert match > 0.6
    assert rotated < match - 0.3
    assert flat == pytest.approx(0.0, abs=1e-6)
    # Brightness and contrast of the whole image do not change the score.
    assert float(sar_edge_agreement(2 * s2 + 300, s1)) == pytest.approx(match, abs=1e-6)


def test_nodata_is_excluded_not_propagated():
    s2, s1 = _scene()
    holed = s2.clone()
    holed[..., 40:50, 5:15] = float("nan")
    score = float(sar_edge_agreement(holed, s1))
    assert np.isfinite(score) and score > 0.5


def test_loss_is_differentiable_and_descends():
    s2, s1 = _scene()
    pred = torch.full_like(s2, 1500.0) + 10 * torch.randn_like(s2, generator=torch.Generator().manual_seed(1))
    pred.requires_grad_(True)
    loss = sar_edge_loss(pred, s1)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    before = float(loss.detach())
    with torch.no_grad():
        stepped = pred - 2e5 * pred.grad
    assert float(sar_edge_loss(stepped, s1)) < before


def test_half_precision_inputs_are_computed_in_float32():
    s2, s1 = _scene()
    reference = float(sar_edge_agreement(s2.float(), s1.float()))
    pred = s2.bfloat16().requires_grad_(True)
    score = sar_edge_agreement(pred, s1.bfloat16())
    assert score.dtype == torch.float32 and float(score.detach()) == pytest.approx(reference, abs=0.02)
    score.sum().backward()
    assert pred.grad is not None and pred.grad.dtype == torch.bfloat16 and torch.isfinite(pred.grad.float()).all()


def test_too_small_tiles_fail_clearly():
    with pytest.raises(ValueError, match="larger tiles"):
        sar_edge_agreement(
            torch.zeros(1, 12, 2 * margin(), 2 * margin()), torch.zeros(1, 2, 2 * margin(), 2 * margin())
        )


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"real TerraMesh samples not present at {SAMPLES}")
def test_real_pairs_agree_better_than_mismatched_pairs():
    import rasterio

    names = sorted(p.name for p in (SAMPLES / "S1RTC").glob("*.tif"))
    s1 = torch.stack([torch.from_numpy(rasterio.open(SAMPLES / "S1RTC" / n).read().astype(np.float64)) for n in names])
    s2 = torch.stack([torch.from_numpy(rasterio.open(SAMPLES / "S2L2A" / n).read().astype(np.float64)) for n in names])
    matched = sar_edge_agreement(s2, s1)
    shuffled = sar_edge_agreement(s2, torch.roll(s1, 1, dims=0))
    assert (matched > shuffled).all(), (matched, shuffled)
    assert float(matched.mean()) > 0.2


def _textured(size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left half rough (forest/town: strong texture in both), right half smooth (water), in S1 dB and S2 reflectance."""
    g = torch.Generator().manual_seed(seed)
    rough = (torch.arange(size) < size // 2).double().expand(size, size)
    pattern = torch.rand(size, size, generator=g, dtype=torch.float64)
    gamma = torch.distributions.Gamma(torch.tensor(4.4), torch.tensor(4.4))
    speckle = gamma.sample((1, 2, size, size)).double()
    s1 = 10 * torch.log10(10 ** ((-10.0 + 8.0 * rough * pattern).expand(1, 2, size, size) / 10) * speckle)
    s2 = (1500 + 1500 * rough * pattern).expand(1, 12, size, size).clone()
    return s2, s1


def test_texture_agreement_follows_the_radars_roughness():
    from gac.sar_edges import sar_texture_agreement

    torch.manual_seed(0)
    s2, s1 = _textured()
    match = float(sar_texture_agreement(s2, s1))
    mirrored = float(sar_texture_agreement(torch.flip(s2, dims=(-1,)), s1))  # rough where the radar is smooth
    assert match > 0.5 and mirrored < -0.3
    assert float(sar_texture_agreement(torch.full_like(s2, 1234.0), s1)) == pytest.approx(0.0, abs=1e-6)
    assert float(sar_texture_agreement(2 * s2 + 300, s1)) == pytest.approx(match, abs=1e-6)


def test_sar_consistency_is_the_mean_of_edge_and_texture_losses_and_has_a_gradient():
    from gac.sar_edges import sar_consistency_loss, sar_texture_agreement

    s2, s1 = _scene()
    pred = (s2 + 10 * torch.randn_like(s2, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    loss, parts = sar_consistency_loss(pred, s1)
    expected = 1 - 0.5 * (sar_edge_agreement(pred, s1) + sar_texture_agreement(pred, s1))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-9)
    assert set(parts) == {"sar_edge", "sar_texture"}
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert float(sar_consistency_loss(torch.full_like(s2, 1500.0), s1)[0]) == pytest.approx(1.0, abs=1e-6)


def test_agreement_map_is_high_where_the_optical_image_follows_the_radar():
    from gac.sar_edges import agreement_map

    s2, s1 = _scene()
    reach = margin()
    # the optical image misses the river the radar sees: low agreement along the river's edges, high on the field edge
    # (hand-checked: 0.06 along the river, 0.61 on the field edge, 0.85 along the river for the full image)
    no_river = s2.clone()
    no_river[:] = s2[..., :1, :].expand_as(s2)  # every row like the first (field boundary only)
    weights = agreement_map(no_river, s1)[0, 0]
    assert weights.shape == (64, 64) and float(weights.max()) <= 1.0
    assert float(weights[:reach].sum()) == 0.0  # border margin: no weight
    river_edge = weights[64 // 3 - 1 : 64 // 3 + 1, reach:-reach].mean()
    field_edge = weights[reach : 64 // 3 - 4, 31:33].mean()
    assert float(river_edge) < 0.2 < 0.5 < float(field_edge)
    # the image that has the river agrees with the radar along it
    assert float(agreement_map(s2, s1)[0, 0, 64 // 3 - 1 : 64 // 3 + 1, reach:-reach].mean()) > 0.6


def test_identity_loss_keeps_the_input_where_it_agrees_with_the_radar():
    from gac.sar_edges import agreement_map, identity_loss

    s2, s1 = _scene()
    pred = (s2 + 500.0).requires_grad_(True)  # 0.05 reflectance off the reference everywhere
    ones, zeros = torch.ones(1, 1, 64, 64, dtype=s2.dtype), torch.zeros(1, 1, 64, 64, dtype=s2.dtype)
    assert float(identity_loss(pred, s2, ones).detach()) == pytest.approx(
        0.05
    )  # full agreement: a plain L1 in reflectance
    assert float(identity_loss(pred, s2, zeros).detach()) == 0.0  # no agreement: free to move
    half = ones.clone()
    half[..., 32:] = 0
    assert float(identity_loss(pred, s2, half).detach()) == pytest.approx(0.025)  # averaged over every pixel
    # with the agreement map: only the pixels the radar confirms pull the prediction back
    weights = agreement_map(s2, s1)
    loss = identity_loss(pred, s2, weights)
    loss.backward()
    assert 0 < float(loss.detach()) < 0.05
    pulled = pred.grad.abs().sum(1)[0]
    assert torch.equal(pulled > 0, weights[0, 0] > 0)
    # no data in the reference: no error and no gradient there, and nothing NaN
    pred.grad = None
    holed = s2.clone()
    holed[..., 40, 40] = float("nan")
    identity_loss(pred, holed, ones).backward()
    assert torch.isfinite(pred.grad).all() and float(pred.grad[..., 40, 40].abs().sum()) == 0.0
