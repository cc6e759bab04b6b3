"""Metadata the refiner is conditioned on: acquisition month and a location/biome proxy.

The data carry no biome label, so location stands in for it in two forms:

- the tile centre as a unit vector on the sphere (cos lat cos lon, cos lat sin
  lon, sin lat): continuous everywhere, no seam at the dateline or the poles;
- a coarse climate-zone proxy from absolute latitude (tropical < 23.5 deg,
  subtropical < 35, temperate < 55, boreal < 66.5, polar), one-hot, which is
  roughly what drives vegetation type and snow, the things the refiner must
  get right that the SAR-derived opt_v1 tends to miss.

The month is cyclic (sin, cos of 2 pi m / 12) so December sits next to January;
month 0 (unknown) gives (0, 0) and a 0 "month known" flag. The hemisphere sign
is part of the vector (sin lat), so the head can learn that July is summer in
the north and winter in the south.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CLIMATE_ZONE_EDGES = (
    23.5,
    35.0,
    55.0,
    66.5,
)  # |lat| upper bounds: tropical, subtropical, temperate, boreal; then polar
N_FEATURES = 3 + 3 + len(CLIMATE_ZONE_EDGES) + 1


def climate_zone(lat: Tensor) -> Tensor:
    """Index 0..4 of the coarse climate zone for each latitude (degrees)."""
    edges = torch.tensor(CLIMATE_ZONE_EDGES, dtype=lat.dtype, device=lat.device)
    return torch.bucketize(lat.abs(), edges, right=False)


def encode_metadata(month: Tensor, lat: Tensor, lon: Tensor) -> Tensor:
    """(B,) month 0-12, lat, lon in degrees -> (B, N_FEATURES) float features."""
    lat = lat.float()
    lon = lon.float()
    known = (month > 0).float()
    angle = 2 * math.pi * (month.float() - 1) / 12
    season = torch.stack([torch.sin(angle) * known, torch.cos(angle) * known, known], dim=1)
    phi, lam = torch.deg2rad(lat), torch.deg2rad(lon)
    place = torch.stack([torch.cos(phi) * torch.cos(lam), torch.cos(phi) * torch.sin(lam), torch.sin(phi)], dim=1)
    zone = torch.nn.functional.one_hot(climate_zone(lat), len(CLIMATE_ZONE_EDGES) + 1).float()
    return torch.cat([season, place, zone], dim=1)
