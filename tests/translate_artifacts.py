"""Trained-model directories for `gac translate` tests, made the way the training stages save them, without training.

Each model is built by the project's own builders and saved by the project's
own savers, with its trainable tensors moved off their initial values so a
round trip through the files is really exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TILE = 32
PARAMS = {
    "seed": 3,
    "tile": {"size": TILE, "shard_tiles": 4},
    "baseline": {"channels": 8, "depth": 2},
    "translate": {"overlap": 8, "timesteps": 1, "block_size": 64, "infer": {"batch_size": 8}},
}


def params(**translate):
    from gac.params import validate_params

    return validate_params({**PARAMS, "translate": {**PARAMS["translate"], **translate}})


def _perturb(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))


def make_baseline(p, out: Path) -> Path:
    from gac.baseline.saved import build_net, save_baseline

    stats = {"s1_mean": [-11.0, -18.0], "s1_std": [3.0, 3.0], "s2_mean": [1000.0] * 12, "s2_std": [500.0] * 12}
    record = {
        "stage": "baseline",
        "enabled": True,
        "config": p.baseline.training_dict(),
        "statistics": stats,
        "random_weights": False,
    }
    torch.manual_seed(0)
    net = build_net(record)
    _perturb(net, 1, 0.02)
    return save_baseline(net, out, record)


def make_stage2(p, out: Path, **overrides) -> Path:
    from gac.refine.build import build_refiner, save_refiner

    config = {**p.stage2.training_dict(), **overrides}
    refiner, info = build_refiner(config)
    _perturb(refiner, 2)
    return save_refiner(refiner, out, {"config": config, "backbone_fingerprint": info["backbone_fingerprint"]})


def make_stage3(p, out: Path) -> Path:
    from gac.ground.job import stage3_target
    from gac.tuning.lora import save_adapter
    from gac.tuning.train import build_lora_generator

    net, _ = build_lora_generator(stage3_target(p, out / "unused-optical-store"), p.stage3, TILE, p.seed)
    with torch.no_grad():  # LoRA B starts at zero: give the adapter an effect
        for name, param in net.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(4))
    base = net.get_base_model()
    record = {
        "stage": "stage3",
        "model": p.stage3.model,
        "inputs": [p.stage1.input, "S2L2A"],
        **base.gac_weights.provenance(),
        "params_hash": "test",
    }
    out.mkdir(parents=True, exist_ok=True)
    save_adapter(net, out, record)
    return out


def make_artifacts(p, root: Path) -> dict[str, Path]:
    return {
        "baseline": make_baseline(p, root / "baseline"),
        "stage2": make_stage2(p, root / "stage2"),
        "stage3": make_stage3(p, root / "stage3"),
    }


def write_s1(
    path: Path, values: np.ndarray, crs: str = "EPSG:32633", transform=None, tags: dict | None = None, dtype="float32"
) -> Path:
    """A GeoTIFF as a user would bring it: bands first, NaN nodata, UTM 10 m unless told otherwise."""
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    transform = transform or from_origin(500000, 5000000, 10, 10)
    profile = dict(
        driver="GTiff",
        width=values.shape[2],
        height=values.shape[1],
        count=values.shape[0],
        dtype=dtype,
        crs=crs,
        transform=transform,
        nodata=float("nan") if dtype.startswith("float") else 0,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(dtype))
        dst.update_tags(**(tags or {"ACQUISITION_DATE": "2024-06-15"}))
    return path


def smooth_s1(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A spatially smooth dB field (VV around -11, VH around -18): any seam in a translation of it comes from tiling."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 2)
    vv = -11 + 3 * np.sin(xx / 23.0 + phase[0]) * np.cos(yy / 31.0)
    vh = -18 + 2 * np.cos(xx / 29.0) * np.sin(yy / 19.0 + phase[1])
    return np.stack([vv, vh]).astype(np.float32)
