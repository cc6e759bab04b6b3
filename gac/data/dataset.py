"""A torch Dataset over tile stores: tiles.zarr alone, or aligned with prediction stores (opt_v1, opt_v2, ...).

Stores are opened lazily in each DataLoader worker (Zarr handles are not shared
across processes). Nodata stays NaN in the tensors, as in inference's batches, and each model fills it the
same way in both (gac.nodata); `valid` marks the pixels where S1 and the ground truth are all finite, so losses
count only those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from gac.data.store import check_aligned, open_store
from gac.errors import GacError


class TileDataset:
    """Items: s1 (2,H,W) dB, s2 (12,H,W) ground truth x1e4, one (12,H,W) per extra store, valid (H,W), month, lat, lon, index."""

    def __init__(self, tiles: Path, split: str | None = None, inputs: Mapping[str, Path] | None = None):
        self.tiles_path = Path(tiles)
        self.input_paths = {name: Path(path) for name, path in (inputs or {}).items()}
        tiles_ds = open_store(self.tiles_path, need=("s1", "s2"), what="tiles store")
        for path in self.input_paths.values():
            check_aligned(tiles_ds, open_store(path, need=("s2",), what="prediction store"), self.tiles_path, path)
        splits = tiles_ds["split"].values.astype(str)
        self.indices = np.flatnonzero(splits == split) if split else np.arange(tiles_ds.sizes["tile"])
        self.tile_ids = tiles_ds["tile"].values.astype(str)[self.indices]
        self.month = tiles_ds["month"].values.astype(np.int64)
        self.lat = tiles_ds["lat"].values.astype(np.float32)
        self.lon = tiles_ds["lon"].values.astype(np.float32)
        self._arrays = None

    def __len__(self) -> int:
        return len(self.indices)

    def _open(self):
        import zarr

        arrays = {"s1": zarr.open_array(self.tiles_path / "s1", mode="r"), "s2": zarr.open_array(self.tiles_path / "s2", mode="r")}
        arrays.update({name: zarr.open_array(path / "s2", mode="r") for name, path in self.input_paths.items()})
        return arrays

    def __getitem__(self, item: int) -> dict:
        import torch

        if self._arrays is None:
            self._arrays = self._open()
        index = int(self.indices[item])
        raw = {name: np.asarray(array[index], dtype=np.float32) for name, array in self._arrays.items()}
        valid = np.isfinite(raw["s1"]).all(0) & np.isfinite(raw["s2"]).all(0)
        sample = {name: torch.from_numpy(value) for name, value in raw.items()}  # NaN stays: gac.nodata
        sample.update(
            valid=torch.from_numpy(valid),
            month=torch.tensor(self.month[index]),
            lat=torch.tensor(self.lat[index]),
            lon=torch.tensor(self.lon[index]),
            index=torch.tensor(index),
        )
        return sample


def train_val_datasets(tiles: Path, stage: str, inputs: Mapping[str, Path] | None = None) -> tuple[TileDataset, TileDataset]:
    """The train and val splits every training stage fits and selects on; an empty split is one line naming the fix."""
    train, val = TileDataset(tiles, "train", inputs), TileDataset(tiles, "val", inputs)
    if len(train) == 0:
        raise GacError(f"{tiles}: no 'train' tiles to train {stage} on; lower tile.val_fraction/test_fraction or add scenes")
    if len(val) == 0:
        raise GacError(f"{tiles}: no 'val' tiles to select {stage}'s checkpoint on; raise tile.val_fraction or add scenes")
    return train, val
