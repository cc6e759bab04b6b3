"""Which split a tile belongs to: square blocks of the map, so one piece of ground is in one split only.

Splits are drawn per block of `tile.split_block` px (at least one tile), not per
tile: neighbouring tiles share texture and, with stride < size, pixels, so a
per-tile split would leak the test set into training. Blocks are cells of a
grid in map coordinates (CRS + cell), not of a file: two acquisitions of one
footprint (two dates, or two overlapping scenes) lie on one grid and share its
cells, so every date of a place lands in the same split. Scenes that overlap
(same CRS, intersecting bounds, also through a chain of overlaps) form one
footprint whose grid starts at the union's top-left corner; a scene that
overlaps nothing keeps a grid of its own from its own corner (so its tiles sit
in blocks exactly as before, none cut by a cell edge that no other scene needs).

A tile that reaches into a block of another split is dropped (`split_border`),
which guarantees that tiles of different splits never share ground.
`tile.split_gap` (blocks) leaves a buffer as well: a train or val block within
that many blocks of a block of a split that ranks above it (test > val > train)
is dropped with its tiles (`split_gap`), so spatial autocorrelation across a
split border does not reach the test set. With an archive's own split
(`data.split: official`, e.g. BigEarthNet's) the split comes per scene and
blocks serve only as the clusters of the evaluation's bootstrap.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from gac.errors import GacError

SPLITS = ("train", "val", "test")
GAP = "gap"  # the split of a block left out as a buffer
RANK = {"train": 0, "val": 1, "test": 2}
_EPS = 1e-6  # of a block side: coordinates that differ by float rounding only fall in one cell

BlockKey = tuple[str, float, float]  # (CRS, left, top) of the cell in map units


@dataclass(frozen=True)
class Footprint:
    """A scene's place on the map: CRS, bounds in map units and pixel size."""

    name: str
    crs: str
    left: float
    top: float
    right: float
    bottom: float
    pixel: float

    @classmethod
    def of(cls, name: str, crs: str, transform: tuple[float, ...], height: int, width: int) -> "Footprint":
        left, top, right, bottom = bounds(transform, height, width)
        return cls(name, crs, left, top, right, bottom, abs(transform[0]) or math.hypot(transform[1], transform[3]))


@dataclass(frozen=True)
class Grid:
    """The block grid one footprint's scenes share: origin at its top-left corner, `side` map units per block."""

    crs: str
    x0: float
    y0: float
    side: float

    def cells(self, left: float, top: float, right: float, bottom: float) -> list[BlockKey]:
        """The blocks a rectangle (map units) touches; edges that merely touch a block do not count."""
        i0 = math.floor((left - self.x0) / self.side + _EPS)
        i1 = math.ceil((right - self.x0) / self.side - _EPS) - 1
        j0 = math.floor((self.y0 - top) / self.side + _EPS)
        j1 = math.ceil((self.y0 - bottom) / self.side - _EPS) - 1
        return [self.key(i, j) for j in range(j0, max(j0, j1) + 1) for i in range(i0, max(i0, i1) + 1)]

    def key(self, i: int, j: int) -> BlockKey:
        return (self.crs, round(self.x0 + i * self.side, 6), round(self.y0 - j * self.side, 6))


def bounds(transform: tuple[float, ...], height: int, width: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a raster in map units, from its affine (GDAL order), any orientation."""
    a, b, c, d, e, f = tuple(transform)[:6]
    xs = [c + a * col + b * row for row in (0, height) for col in (0, width)]
    ys = [f + d * col + e * row for row in (0, height) for col in (0, width)]
    return min(xs), max(ys), max(xs), min(ys)


def block_name(key: BlockKey) -> str:
    """A block as text for the tile store's `block` coordinate: CRS and the cell's top-left corner."""
    crs, x, y = key
    return f"{crs} x={x:.10g} y={y:.10g}"


def _overlap(a: Footprint, b: Footprint) -> bool:
    return (a.crs == b.crs and min(a.right, b.right) > max(a.left, b.left)
            and min(a.top, b.top) > max(a.bottom, b.bottom))


def footprint_grids(footprints: list[Footprint], block_px: int) -> dict[str, Grid]:
    """Each scene's block grid: overlapping scenes (same CRS) share one, anchored at their union's top-left corner.

    Overlaps are found through a spatial hash (cells as large as the largest scene), so an archive of many small
    patches is grouped in linear time, not by comparing every pair.
    """
    parent = list(range(len(footprints)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets: dict[tuple, list[int]] = defaultdict(list)
    span = {crs: max(max(f.right - f.left, f.top - f.bottom) for f in footprints if f.crs == crs)
            for crs in {f.crs for f in footprints}}
    for i, fp in enumerate(footprints):
        s = span[fp.crs]
        for bx in range(math.floor(fp.left / s), math.floor(fp.right / s) + 1):
            for by in range(math.floor(fp.bottom / s), math.floor(fp.top / s) + 1):
                for j in buckets[(fp.crs, bx, by)]:
                    if _overlap(fp, footprints[j]):
                        parent[root(i)] = root(j)
                buckets[(fp.crs, bx, by)].append(i)
    groups: dict[int, list[Footprint]] = defaultdict(list)
    for i, fp in enumerate(footprints):
        groups[root(i)].append(fp)
    grids = {}
    for members in groups.values():
        first = min(members, key=lambda f: f.name)
        grid = Grid(first.crs, min(f.left for f in members), max(f.top for f in members), block_px * first.pixel)
        grids.update({f.name: grid for f in members})
    return grids


def assign_blocks(blocks: list[BlockKey], val_fraction: float, test_fraction: float, seed: int,
                  block_px: int) -> dict[BlockKey, str]:
    """Deterministic split per block: a seeded shuffle, then test and val counts by fraction (at least one each
    when asked for)."""
    order = sorted(blocks)
    rng = np.random.default_rng(seed)
    order = [order[i] for i in rng.permutation(len(order))]
    n = len(order)

    def count(fraction: float) -> int:
        return 0 if fraction == 0 else max(1, int(round(fraction * n)))

    n_test, n_val = count(test_fraction), count(val_fraction)
    if n_test + n_val >= n:
        raise GacError(
            f"tile: only {n} spatial block(s) of {block_px} px, too few for val_fraction {val_fraction} and "
            f"test_fraction {test_fraction} with training data left; use more or larger scenes or a smaller "
            "tile.split_block"
        )
    splits = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)
    return dict(zip(order, splits))


def gap_blocks(split_of: dict[BlockKey, str], sides: dict[BlockKey, float], gap: int) -> set[BlockKey]:
    """The blocks within `gap` blocks (Chebyshev distance in map units, edges touching = 0) of a block whose split
    ranks higher (test > val > train): they become the buffer. Found through a spatial hash, not every pair."""
    if gap <= 0 or not split_of:
        return set()
    size = max(sides.values())
    buckets: dict[tuple, list[BlockKey]] = defaultdict(list)
    for key in split_of:
        buckets[(key[0], math.floor(key[1] / size), math.floor(key[2] / size))].append(key)
    reach = gap + 2  # buckets of the largest block's side: enough to hold every block within `gap` blocks

    def near_higher(key: BlockKey) -> bool:
        crs, left, top = key
        side, rank = sides[key], RANK[split_of[key]]
        bx, by = math.floor(left / size), math.floor(top / size)
        for dx in range(-reach, reach + 1):
            for dy in range(-reach, reach + 1):
                for other in buckets.get((crs, bx + dx, by + dy), ()):
                    if RANK[split_of[other]] <= rank:
                        continue
                    o_side = sides[other]
                    dist_x = max(0.0, other[1] - (left + side), left - (other[1] + o_side))
                    dist_y = max(0.0, (other[2] - o_side) - top, (top - side) - other[2])
                    if max(dist_x, dist_y) < gap * side * (1 - _EPS):
                        return True
        return False

    return {key for key, split in split_of.items() if split != "test" and near_higher(key)}


def split_tiles(tiles: list[tuple[str, tuple[float, ...], int]], grids: dict[str, Grid], block_px: int,
                val_fraction: float, test_fraction: float, gap: int, seed: int,
                scene_splits: dict[str, str] | None = None) -> tuple[list[tuple[str | None, str]], dict[str, int]]:
    """Per tile (scene, tile transform, size): (its split or None when dropped, its block's name), and the counts
    dropped by reason (`split_border`, `split_gap`).

    `scene_splits` ({scene: split}) is an archive's own split: used as given, blocks then only name the clusters;
    `official_shared_blocks` counts the blocks holding tiles of more than one official split (ground the
    archive's split does not keep apart).
    """
    touched = []
    for scene, transform, size in tiles:
        grid = grids[scene]
        left, top, right, bottom = bounds(transform, size, size)
        cx, cy = (left + right) / 2, (top + bottom) / 2
        centre = grid.cells(cx, cy, cx, cy)[0]
        touched.append((grid.cells(left, top, right, bottom), centre))
    dropped = {"split_border": 0, "split_gap": 0}
    if scene_splits is not None:
        by_block: dict[BlockKey, set[str]] = defaultdict(set)
        for (scene, _, _), (_, centre) in zip(tiles, touched):
            by_block[centre].add(scene_splits[scene])
        dropped["official_shared_blocks"] = sum(len(s) > 1 for s in by_block.values())
        named = [(scene_splits[scene], block_name(centre)) for (scene, _, _), (_, centre) in zip(tiles, touched)]
        return named, dropped
    sides = {}
    for (scene, _, _), (cells, _) in zip(tiles, touched):
        sides.update({key: grids[scene].side for key in cells})
    split_of = assign_blocks(list(sides), val_fraction, test_fraction, seed, block_px)
    for key in gap_blocks(split_of, sides, gap):
        split_of[key] = GAP
    out = []
    for cells, centre in touched:
        found = {split_of[key] for key in cells}
        if GAP in found:
            dropped["split_gap"] += 1
            out.append((None, block_name(centre)))
        elif len(found) > 1:
            dropped["split_border"] += 1
            out.append((None, block_name(centre)))
        else:
            out.append((found.pop(), block_name(centre)))
    return out, dropped
