"""Where the model tiles sit on a scene, how their overlaps are blended, and the blocks the output is written in.

Why not terratorch's `tiled_inference`: it takes the whole scene as one
in-memory tensor (a full S1 scene is ~1 GB of input and ~5.8 GB of 12-band
output), so memory would grow with the scene. Here one global tile grid covers
the scene; the output is computed block by block, each block running exactly
the tiles of the global grid that touch it. A tile on a block border belongs
to both blocks with the same seed and values (it runs once and is kept for the
next block: gac.translate.run.TileCache), so the mosaic does not depend on the
block size and blocks have no seams of their own.

Blending: each tile's weight ramps from 0 to 1 across the overlap it shares
with a neighbour (cosine: sin^2, or linear) and is 1 elsewhere, including at
the scene's edges; the two ramps of an overlap sum to one, and the mosaic is
the weighted sum divided by the summed weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from gac.errors import GacError


def tile_offsets(length: int, size: int, overlap: int) -> list[int]:
    """Offsets of tiles of `size` px along an axis of `length` px: the fewest tiles whose neighbours share at least
    `overlap` px, spread evenly from 0 to `length - size`.

    Even spacing, rather than a fixed stride plus one tile flush with the end, never puts a near-duplicate tile
    beside the last one (113 px, tile 64, overlap 16: 0, 24, 49, not 0, 48, 49). A scene shorter than one tile
    gets one tile at 0 (padded).
    """
    if length <= size:
        return [0]
    stride = size - overlap
    count = -(-(length - overlap) // stride)  # ceil: the fewest tiles that cover `length` with that much overlap
    span = length - size
    return [round(k * span / (count - 1)) for k in range(count)]


def ramp(n: int, kind: str) -> np.ndarray:
    """Weights rising over `n` px (the first half of a blend); with the mirrored ramp they sum to 1 px by px."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return np.sin(np.pi / 2 * t) ** 2 if kind == "cosine" else t


def axis_weights(offsets: list[int], size: int, kind: str) -> list[np.ndarray]:
    """Per tile along one axis: 1 in its own part, ramped across each overlap with a neighbour, 0 beyond it.

    The ramp between two neighbours is centred on the middle of the pixels they share, as wide as that shared run
    but never wider than the spacing of those middles: so ramps never meet, exactly two tiles blend at any pixel,
    and the weights of all tiles sum to 1 everywhere (a partition of unity) before any normalising. Where tiles
    overlap by exactly `overlap` px, the ramp spans the whole overlap.
    """
    ends = [start + size for start in offsets]
    middles = [(ends[k] + offsets[k + 1]) / 2 for k in range(len(offsets) - 1)]
    gaps = [b - a for a, b in zip(middles, middles[1:])]
    widths = []
    for k in range(len(middles)):
        near = [gaps[g] for g in (k - 1, k) if 0 <= g < len(gaps)]
        widths.append(int(min([ends[k] - offsets[k + 1], *near])))
    weights = []
    for k, start in enumerate(offsets):
        w = np.ones(size, dtype=np.float64)
        if k > 0:  # rising across the blend with the previous tile; 0 before it
            low = int(round(middles[k - 1] - widths[k - 1] / 2)) - start
            w[:low] = 0.0
            w[low : low + widths[k - 1]] = ramp(widths[k - 1], kind)
        if k + 1 < len(offsets):  # falling across the blend with the next tile; 0 after it
            low = int(round(middles[k] - widths[k] / 2)) - start
            w[low : low + widths[k]] = np.minimum(w[low : low + widths[k]], ramp(widths[k], kind)[::-1])
            w[low + widths[k] :] = 0.0
        weights.append(w)
    return weights


@dataclass(frozen=True)
class TileGrid:
    """The global tile grid of one scene (height x width px) and its output blocks."""

    height: int
    width: int
    size: int
    overlap: int
    blend: str = "cosine"
    block_size: int = 1024

    def __post_init__(self) -> None:
        if self.overlap * 2 > self.size:
            raise GacError(
                f"translate.overlap {self.overlap} is more than half the tile size {self.size}; use at most "
                f"{self.size // 2}"
            )

    @cached_property
    def rows(self) -> list[int]:
        return tile_offsets(self.height, self.size, self.overlap)

    @cached_property
    def cols(self) -> list[int]:
        return tile_offsets(self.width, self.size, self.overlap)

    @cached_property
    def _row_weights(self) -> list[np.ndarray]:
        return axis_weights(self.rows, self.size, self.blend)

    @cached_property
    def _col_weights(self) -> list[np.ndarray]:
        return axis_weights(self.cols, self.size, self.blend)

    @property
    def n_tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    def weight(self, i: int, j: int) -> np.ndarray:
        """(size, size) blend weight of tile (row index i, column index j)."""
        return np.outer(self._row_weights[i], self._col_weights[j])

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """Output blocks (row, col, height, width) in raster order, covering the scene once."""
        step = self.block_size
        return [
            (r, c, min(step, self.height - r), min(step, self.width - c))
            for r in range(0, self.height, step)
            for c in range(0, self.width, step)
        ]

    def tiles_in(self, block: tuple[int, int, int, int]) -> list[tuple[int, int]]:
        """Indices (i, j) of the global tiles that touch a block, in raster order."""
        r, c, h, w = block
        rows = [i for i, o in enumerate(self.rows) if o < r + h and o + self.size > r]
        cols = [j for j, o in enumerate(self.cols) if o < c + w and o + self.size > c]
        return [(i, j) for i in rows for j in cols]
