"""Splits keyed by map blocks (every date of one place in one split, an optional buffer) and the cluster bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from gac.data.scenes import Scene
from gac.data.splits import GAP, Footprint, Grid, footprint_grids, gap_blocks
from gac.data.tiling import plan_tiles
from gac.evaluate.stats import bootstrap_interval, paired_difference
from tests.conftest import small_tile_params


def scene(name: str, east: float, north: float, size: int = 256, crs: str = "EPSG:32632") -> Scene:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    s1 = rng.normal(-12, 2, (2, size, size)).astype(np.float32)
    s2 = rng.uniform(100, 3000, (12, size, size)).astype(np.float32)
    return Scene(name, s1, s2, crs, (10.0, 0.0, east, 0.0, -10.0, north), 6)


def by_place(records: list[dict]) -> dict[tuple, tuple[str, str]]:
    return {(r["crs"], r["transform"]): (r["split"], r["block"]) for r in records}


def test_two_dates_of_one_footprint_land_in_the_same_split():
    # Two dates of one 256 px footprint, one date shifted by 32 px, and two other places: 4 x 4 blocks of 64 px each.
    scenes = [
        scene("a_2018-04", 500_000, 5_300_000),
        scene("a_2018-09", 500_000, 5_300_000),
        scene("a_shifted", 500_320, 5_299_680),
        scene("b", 600_000, 5_300_000),
        scene("c", 700_000, 5_300_000),
    ]
    params = small_tile_params(size=32, stride=32, split_block=64)
    records, dropped = plan_tiles(scenes, params, seed=3)
    april = by_place([r for r in records if r["scene"] == "a_2018-04"])
    september = by_place([r for r in records if r["scene"] == "a_2018-09"])
    assert len(april) == 64 and april == september  # 8 x 8 tiles of 32 px, each with the same split and block
    assert len({block for _, block in april.values()}) == 16 and len({s for s, _ in april.values()}) == 3
    # the shifted date lies on the same grid: a tile over the same ground as an April tile has its split and block
    shifted = by_place([r for r in records if r["scene"] == "a_shifted"])
    same_ground = set(shifted) & set(april)
    assert len(same_ground) == 49 and all(shifted[k] == april[k] for k in same_ground)  # 7 x 7 tiles overlap exactly
    # 32 px tiles on 64 px blocks of one grid never straddle two blocks
    assert dropped["split_border"] == 0 and all(r["block"].startswith("EPSG:32632 x=") for r in records)
    # a scene on its own keeps its own grid: the 256 px of "b" are cut into blocks from its own corner
    blocks_b = {r["block"] for r in records if r["scene"] == "b"}
    assert "EPSG:32632 x=600000 y=5300000" in blocks_b and len(blocks_b) == 16


def test_overlapping_scenes_share_one_grid_at_their_union_corner():
    grids = footprint_grids(
        [
            Footprint.of("a", "EPSG:32632", (10, 0, 1000, 0, -10, 5000), 100, 100),
            Footprint.of("b", "EPSG:32632", (10, 0, 1500, 0, -10, 5300), 100, 100),
            Footprint.of("c", "EPSG:32633", (10, 0, 1000, 0, -10, 5000), 100, 100),
            Footprint.of("d", "EPSG:32632", (10, 0, 2500, 0, -10, 5000), 100, 100),
        ],
        block_px=32,
    )
    # a and b overlap (500 m x 700 m): one grid from x 1000, y 5300; d only touches b's right edge: its own grid
    assert grids["a"] == grids["b"] == Grid("EPSG:32632", 1000.0, 5300.0, 320.0)
    assert grids["c"] == Grid("EPSG:32633", 1000.0, 5000.0, 320.0) and grids["d"].x0 == 2500.0
    # hand-checked cells: the 320 m square from (1320, 4980) is cell (1, 1) exactly; a 100 m one across x 1320 and
    # y 4980 touches four
    assert grids["a"].cells(1320, 4980, 1640, 4660) == [("EPSG:32632", 1320.0, 4980.0)]
    assert grids["a"].cells(1300, 5000, 1400, 4900) == [
        ("EPSG:32632", 1000.0, 5300.0),
        ("EPSG:32632", 1320.0, 5300.0),
        ("EPSG:32632", 1000.0, 4980.0),
        ("EPSG:32632", 1320.0, 4980.0),
    ]


def test_the_gap_leaves_no_train_block_next_to_a_test_block():
    # Hand-checked on a row of five 1 m blocks: train test train train val
    row = [("m", float(x), 0.0) for x in range(5)]
    split_of = dict(zip(row, ["train", "test", "train", "train", "val"]))
    sides = {key: 1.0 for key in row}
    assert gap_blocks(split_of, sides, 0) == set()
    assert gap_blocks(split_of, sides, 1) == {row[0], row[2], row[3]}  # beside test, beside test, beside val
    assert gap_blocks(split_of, sides, 2) == {row[0], row[2], row[3]}  # val at 4 is 2 from test at 1: kept
    assert gap_blocks(split_of, sides, 3) == {row[0], row[2], row[3], row[4]}

    scenes = [scene(f"s{i}", 500_000 + 10_000 * i, 5_300_000) for i in range(3)]
    fractions = dict(size=32, stride=32, split_block=32, val_fraction=0.05, test_fraction=0.05)
    records, dropped = plan_tiles(scenes, small_tile_params(**fractions, split_gap=1), seed=1)
    plain, plain_dropped = plan_tiles(scenes, small_tile_params(**fractions), seed=1)

    def cell(record):  # (scene, block row, block col): one tile is one block here
        return record["scene"], record["row_off"] // 32, record["col_off"] // 32

    def touching(recs, a, b):
        cells_a = {cell(r) for r in recs if r["split"] == a}
        return sum(
            (s, i + di, j + dj) in cells_a
            for s, i, j in (cell(r) for r in recs if r["split"] == b)
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
        )

    assert touching(plain, "test", "train") > 0 and plain_dropped["split_gap"] == 0  # without a gap they touch
    assert touching(records, "test", "train") == 0 and touching(records, "val", "train") == 0
    assert touching(records, "test", "val") == 0
    assert dropped["split_gap"] == len(plain) - len(records) > 0
    assert {r["split"] for r in records} == {"train", "val", "test"} and GAP not in {r["split"] for r in records}


def test_the_cluster_bootstrap_is_wider_than_the_tile_bootstrap_on_correlated_tiles():
    # Two blocks of four tiles each, every tile of a block alike: 2 independent observations, not 8.
    values = [0.0] * 4 + [1.0] * 4
    blocks = ["a"] * 4 + ["b"] * 4
    # Hand-checked: a draw of 2 blocks has mean 0 (p 1/4), 0.5 (1/2) or 1 (1/4): the 95% interval is [0, 1]
    assert bootstrap_interval(values, resamples=2000, seed=0, clusters=blocks) == (0.0, 1.0)
    low, high = bootstrap_interval(values, resamples=2000, seed=0)
    assert 0.1 <= low <= 0.25 and 0.75 <= high <= 0.9  # 8 draws of a tile: the mean's sd is 0.18, not 0.5
    # clusters as large as one tile are the tile bootstrap, bit for bit
    assert bootstrap_interval(values, seed=4, clusters=list(range(8))) == bootstrap_interval(values, seed=4)
    # unequal clusters: a draw's mean is over all the tiles it holds (a: 2 tiles of 1, b: 6 of 0; a+b -> 2/8)
    assert bootstrap_interval([1, 1, 0, 0, 0, 0, 0, 0], 1000, 0, clusters=list("aabbbbbb")) == pytest.approx((0.0, 1.0))


def test_the_paired_test_counts_clusters_not_tiles():
    # 10 tiles, 0.3 better on every one, but only in 2 blocks: the tiles' test is sure, the blocks' cannot be
    rng = np.random.default_rng(0)
    b = rng.normal(20, 3, 10)
    a = b + 0.3 + rng.normal(0, 0.05, 10)
    tiles = paired_difference(a, b, resamples=1000, seed=0)
    blocks = paired_difference(a, b, resamples=1000, seed=0, clusters=["x"] * 5 + ["y"] * 5)
    assert tiles["p"] == pytest.approx(2 / 2**10) and "clusters" not in tiles
    assert blocks["p"] == pytest.approx(0.5) and blocks["clusters"] == 2 and blocks["n"] == 10  # exact: 2 / 2**2
    assert blocks["diff"] == tiles["diff"]
