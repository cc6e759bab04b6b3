"""Translate whole S1 scenes block by block: resumable, split between torchrun ranks, memory bounded by the block size.

For each scene, `DIR/<stem>.partial/` holds a Zarr store with one chunk per
output block (uint16 reflectance, and float32 spread with uncertainty) and a
marker file per finished block. A run killed at any moment (SIGKILL included)
resumes with the blocks that have no marker; a run with other inputs, params
or models starts that directory afresh. Under `torchrun --nproc-per-node N
--no-python gac translate ...` each rank takes every N-th pending block of
every scene and writes only its chunks; once all blocks of all scenes are on
disk, rank 0 assembles the COGs while the other ranks end (none waits on a
collective while it writes). Every tile has its own seeds, so a resumed run
writes the same bytes as an uninterrupted one with the same batch size and
threads; N processes (other thread counts, other batches) agree with one
within float kernels' spread (README, "Reproducibility").

Only when the COG, the uncertainty COG and the quicklook are complete (each
written under a temporary name and renamed) is the partial directory removed.

Tiles on a block border are run once per rank, not once per block: their
outputs wait in a `TileCache` for the rank's next block that needs them, so
the work per km2 does not grow with the number of blocks (a resumed run or
another rank recomputes such a tile with the same seeds).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gac import __version__
from gac.data.readers import Inputs
from gac.data.store import S2_BANDS, chunk_files, mark_done, partial_path
from gac.digest import json_digest
from gac.errors import GacError
from gac.export import safe_name
from gac.translate.chain import Artifacts, Chain, check_artifacts
from gac.translate.grid import TileGrid
from gac.translate.params import STAGES
from gac.translate.source import GapFill, S1Scene, find_s1_inputs, open_gap_fill, open_s1, parse_date

log = logging.getLogger(__name__)

NODATA = 0  # the S2 L2A convention for uint16 reflectance x 10^4
MARKERS = "done"


@dataclass(frozen=True)
class Outputs:
    """The files one scene gives under the output directory."""

    out_dir: Path
    stem: str

    @property
    def image(self) -> Path:
        return self.out_dir / f"{self.stem}.tif"

    @property
    def uncertainty(self) -> Path:
        return self.out_dir / f"{self.stem}_uncertainty.tif"

    @property
    def quicklook(self) -> Path:
        return self.out_dir / f"{self.stem}.png"

    @property
    def partial(self) -> Path:
        return partial_path(self.out_dir / self.stem)


def check_outputs(outputs: Outputs, overwrite: bool, fingerprint: dict[str, Any]) -> None:
    """An existing result is only replaced when asked, or by the run that left its partial directory.

    A run with the same fingerprint (inputs, params, models) that was interrupted, even while renaming its
    finished files into place, resumes and writes the same result; any other run needs `--overwrite`.
    """
    if overwrite or BlockStore.fingerprint_of(outputs.partial) == fingerprint:
        return
    for path in (outputs.image, outputs.uncertainty, outputs.quicklook):
        if path.exists():
            raise GacError(f"{path}: already exists; pass --overwrite to replace it, or choose another --out")


@dataclass
class Options:
    """What the command line adds to params for one run."""

    artifacts: Artifacts = field(default_factory=Artifacts)
    fill_s2: Path | None = None
    cloud_mask: Path | None = None
    date: str | None = None
    overwrite: bool = False
    progress: bool = True


def to_uint16(values: np.ndarray) -> np.ndarray:
    """Reflectance x 10^4 as L2A stores it: rounded, NaN -> 0 (nodata); a valid pixel rounding to 0 becomes 1 so it
    stays valid."""
    out = np.nan_to_num(values, nan=0.0)  # one float copy, rounded and clipped in place: a block's, not three
    np.clip(np.rint(out, out=out), 1, 65535, out=out)
    out = out.astype(np.uint16)
    out[np.isnan(values)] = NODATA
    return out


class BlockStore:
    """The finished blocks of one scene: Zarr chunks (one per block) plus a marker file per block."""

    def __init__(self, root: Path, fingerprint: dict[str, Any], height: int, width: int, block: int, uncertainty: bool):
        self.root, self.fingerprint = Path(root), fingerprint
        self.shape, self.block, self.uncertainty = (len(S2_BANDS), height, width), block, uncertainty

    @staticmethod
    def fingerprint_of(root: Path) -> dict[str, Any] | None:
        """What the unfinished run in `root` was made with; None when there is none."""
        meta = Path(root) / "run.json"
        return json.loads(meta.read_text()) if meta.is_file() else None

    def open(self) -> int:
        """Create, or keep a matching unfinished run; returns the number of blocks already done. Rank 0 only."""
        import zarr

        if self.root.exists():
            if self.fingerprint_of(self.root) == self.fingerprint:
                return len(list((self.root / MARKERS).glob("*")))
            log.info("%s: left by a run with other inputs or settings; starting afresh", self.root)
            shutil.rmtree(self.root)
        (self.root / MARKERS).mkdir(parents=True)
        chunks = (len(S2_BANDS), self.block, self.block)
        zarr.create_array(self.root / "image.zarr", shape=self.shape, chunks=chunks, dtype="uint16", fill_value=NODATA)
        if self.uncertainty:
            zarr.create_array(
                self.root / "spread.zarr", shape=self.shape, chunks=chunks, dtype="float32", fill_value=np.nan
            )
        (self.root / "run.json").write_text(json.dumps(self.fingerprint, indent=2, sort_keys=True) + "\n")
        return 0

    def _marker(self, index: int) -> Path:
        return self.root / MARKERS / f"{index:06d}"

    def pending(self, n_blocks: int, rank: int = 0, world: int = 1) -> list[int]:
        todo = [k for k in range(n_blocks) if not self._marker(k).exists()]
        return todo[rank::world]

    def write(self, index: int, block: tuple[int, int, int, int], image: np.ndarray, spread: np.ndarray | None) -> None:
        import zarr

        r, c, h, w = block
        region = (slice(None), slice(r, r + h), slice(c, c + w))
        zarr.open_array(self.root / "image.zarr", mode="r+")[region] = image
        written = chunk_files(self.root / "image.zarr", region)
        if spread is not None:
            zarr.open_array(self.root / "spread.zarr", mode="r+")[region] = spread
            written += chunk_files(self.root / "spread.zarr", region)
        mark_done(self._marker(index), written)  # last: a block is done only once its chunks are on disk

    def read(self, name: str, block: tuple[int, int, int, int]) -> np.ndarray:
        import zarr

        r, c, h, w = block
        return zarr.open_array(self.root / f"{name}.zarr", mode="r")[:, r : r + h, c : c + w]


def _fill_outside(s1: np.ndarray, inside_h: int, inside_w: int) -> np.ndarray:
    """A scene smaller than one tile: mirror it into the tile (as terratorch's tiled inference pads) rather than feed
    blanks."""
    pad_h, pad_w = s1.shape[1] - inside_h, s1.shape[2] - inside_w
    if not pad_h and not pad_w:
        return s1
    return np.pad(
        s1[:, :inside_h, :inside_w],
        ((0, 0), (0, pad_h), (0, pad_w)),
        mode="reflect" if min(inside_h, inside_w) > 1 else "edge",
    )


def feather_weights(replace: np.ndarray, feather: int) -> np.ndarray:
    """Per pixel, how much of the translation it takes: 1 on every pixel to replace, fading to 0 over `feather` px.

    The fade runs on the clear side of the mask's edge, not inside it: a masked pixel takes the
    translation whole, so no cloud survives anywhere in the mask, at the scene border included
    (a fade inside the mask kept up to 75% of the cloud in its first pixel). The clear pixels next
    to a mask are the least trustworthy ones anyway (SCL under-detects cloud edges, haze and the
    rims of shadows), so letting the translation into them both hides the seam and covers that
    fringe. Clear pixels more than `feather` px from every masked pixel keep the S2 values.
    """
    from scipy.ndimage import distance_transform_edt

    if not replace.any():
        return np.zeros(replace.shape, dtype=np.float64)
    distance = distance_transform_edt(~replace)  # px from each clear pixel to the nearest pixel to replace
    return np.where(replace, 1.0, np.where(distance > feather, 0.0, 1.0 - distance / (feather + 1)))


class TileCache:
    """Each tile of a scene runs once per rank, in a batch fixed by the grid; its output waits for this rank's blocks.

    Why: a tile on a block border touches two to four blocks; run once per
    block, a 4096 px scene did 9.8% more tile runs per km2 than a 1024 px one.
    Why batches fixed by the grid: float kernels depend on the batch (README,
    "Reproducibility"), so a tile always runs beside the same tiles, those its
    owner block (the first block in raster order it touches) runs first,
    whichever blocks a resumed run or another torchrun rank still has to do:
    a resumed run still writes the same bytes. Such a rank re-runs the owner
    batches of the tiles it needs from other ranks' blocks.

    Memory: tiles a later block of this rank needs are kept until that block is
    done: about one row of tiles across the scene (the row straddling the border
    below the current row of blocks) plus one column, per uncertainty sample;
    with 224 px tiles on a 10980 px scene about 53 tiles of 2.4 MB.
    """

    def __init__(self, grid: TileGrid, mine: list[tuple[int, int, int, int]], batch_size: int) -> None:
        from gac.runner import iter_batches

        owner: dict[tuple[int, int], int] = {}
        self.batches: list[list[tuple[int, int]]] = []
        self.batch_of: dict[tuple[int, int], int] = {}
        for k, block in enumerate(grid.blocks()):
            own = [tile for tile in grid.tiles_in(block) if owner.setdefault(tile, k) == k]
            for batch in iter_batches(range(len(own)), batch_size):
                for b in batch:
                    self.batch_of[own[b]] = len(self.batches)
                self.batches.append([own[b] for b in batch])
        self.uses = Counter(tile for block in mine for tile in grid.tiles_in(block))  # this rank's blocks per tile
        self.kept: dict[tuple[int, int, int], np.ndarray] = {}

    @property
    def runs(self) -> int:
        """Tile runs this rank's blocks take: every tile of every batch holding a tile they touch."""
        return sum(len(self.batches[i]) for i in {self.batch_of[tile] for tile in self.uses})

    def get(self, tile: tuple[int, int], sample: int) -> np.ndarray | None:
        return self.kept.get((*tile, sample))

    def put(self, tile: tuple[int, int], sample: int, pred: np.ndarray, in_block: bool) -> None:
        """Keep a tile's output if a block after the current one needs it."""
        if self.uses[tile] > int(in_block):
            self.kept[(*tile, sample)] = np.array(pred, copy=True)  # not a view that would keep the whole batch

    def block_done(self, tiles: list[tuple[int, int]], samples: int) -> None:
        for tile in tiles:
            self.uses[tile] -= 1
            if self.uses[tile] <= 0:
                for k in range(samples):
                    self.kept.pop((*tile, k), None)


@dataclass
class SceneJob:
    """One scene's translation: the grid, the chain and where it goes."""

    params: Any
    scene: S1Scene
    grid: TileGrid
    chain: Chain
    samples: int
    gap_fill: GapFill | None = None
    cache: TileCache | None = None  # set per rank by compute_scene; None runs every tile of each block

    def _tile_key(self, i: int, j: int) -> str:
        return f"{self.scene.stem}:{self.grid.rows[i]}:{self.grid.cols[j]}"

    def _s1_window(self, tiles: list[tuple[int, int]]) -> tuple[int, int, np.ndarray, np.ndarray]:
        """(top, left, S1 as read with NaN at nodata, S1 as the models take it) of the window under `tiles`."""
        grid, size = self.grid, self.grid.size
        top, left = min(grid.rows[i] for i, _ in tiles), min(grid.cols[j] for _, j in tiles)
        bottom, right = max(grid.rows[i] for i, _ in tiles) + size, max(grid.cols[j] for _, j in tiles) + size
        s1 = self.scene.read(top, left, bottom - top, right - left)
        return (
            top,
            left,
            s1,
            _fill_outside(s1, min(bottom, self.scene.height) - top, min(right, self.scene.width) - left),
        )

    def _run(self, batch: list[tuple[int, int]], sample: int, window) -> np.ndarray:
        """The chain's outputs for one batch of tiles (indices into the grid) and uncertainty sample.

        `window` is the block's `_s1_window`; a batch reaching beyond it (a tile owned by another block, see
        TileCache) reads its own.
        """
        from gac.data.tiling import tile_centres_lonlat
        from gac.runner import Batch
        from gac.terramind import tile_seed

        grid, size = self.grid, self.grid.size
        rows = np.array([grid.rows[i] for i, _ in batch])
        cols = np.array([grid.cols[j] for _, j in batch])
        top, left, _, model_s1 = window
        if (
            rows.min() < top
            or cols.min() < left
            or rows.max() + size > top + model_s1.shape[1]
            or (cols.max() + size > left + model_s1.shape[2])
        ):
            top, left, _, model_s1 = self._s1_window(batch)
        crops = np.stack(
            [model_s1[:, y - top : y - top + size, x - left : x - left + size] for y, x in zip(rows, cols)]
        )
        lon, lat = (
            v.astype(np.float32) for v in tile_centres_lonlat(self.scene.crs, self.scene.transform, rows, cols, size)
        )
        keys = [self._tile_key(i, j) for i, j in batch]
        noise_seeds = [tile_seed(self.params.seed, key) for key in keys]
        token_seeds = noise_seeds if sample == 0 else [tile_seed(self.params.seed, f"{key}:{sample}") for key in keys]
        return self.chain(
            Batch(
                s1=crops.astype(np.float32, copy=False),
                month=np.full(len(batch), self.scene.month, dtype=np.int64),
                lat=lat,
                lon=lon,
                token_seeds=token_seeds,
                noise_seeds=noise_seeds,
            )
        )

    def compute(self, block: tuple[int, int, int, int], bar=None) -> tuple[np.ndarray, np.ndarray | None]:
        """(12, h, w) blended mean reflectance and its spread over samples (None for one sample), NaN at nodata."""
        grid, size = self.grid, self.grid.size
        # outside compute_scene (a block on its own) a cache of this block alone: every tile runs once
        cache = self.cache or TileCache(grid, [block], self.params.translate.infer.batch_size)
        r, c, h, w = block
        tiles = grid.tiles_in(block)
        window = self._s1_window(tiles)
        top, left, s1, _ = window
        in_block = set(tiles)
        mean = m2 = None
        for k in range(self.samples):
            total = np.zeros((len(S2_BANDS), h, w), dtype=np.float64)
            weight = np.zeros((h, w), dtype=np.float64)

            def add(tile: tuple[int, int], tile_pred: np.ndarray) -> None:
                i, j = tile
                y, x = grid.rows[i], grid.cols[j]
                # the part of this tile inside the block, in block and in tile coordinates
                y0, y1 = max(y, r), min(y + size, r + h)
                x0, x1 = max(x, c), min(x + size, c + w)
                part = tile_pred[:, y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float64)
                wt = grid.weight(i, j)[y0 - y : y1 - y, x0 - x : x1 - x] * np.isfinite(part[0])
                total[:, y0 - r : y1 - r, x0 - c : x1 - c] += np.nan_to_num(part) * wt
                weight[y0 - r : y1 - r, x0 - c : x1 - c] += wt

            added: set[tuple[int, int]] = set()
            for tile in tiles:
                if tile in added:
                    continue
                kept = cache.get(tile, k)
                if kept is not None:
                    add(tile, kept)
                    added.add(tile)
                    continue
                batch = cache.batches[cache.batch_of[tile]]
                for other, pred in zip(batch, self._run(batch, k, window)):
                    if other in in_block and other not in added:
                        add(other, pred)
                        added.add(other)
                    cache.put(other, k, pred, other in in_block)
                if bar is not None:
                    bar.update(len(batch))
            with np.errstate(invalid="ignore", divide="ignore"):
                sample = np.divide(total, weight, out=total)  # in place: one (12, h, w) float64 block fewer
            if mean is None:
                mean, m2 = sample, (np.zeros_like(sample) if self.samples > 1 else None)
            else:  # Welford: one pass over the samples, one block of each in memory
                delta = sample - mean
                mean = mean + delta / (k + 1)
                m2 = m2 + delta * (sample - mean)
        cache.block_done(tiles, self.samples)
        radar_gap = np.isnan(s1[:, r - top : r - top + h, c - left : c - left + w]).any(axis=0)
        mean[:, radar_gap] = np.nan
        spread = None
        if self.samples > 1:
            spread = np.sqrt(m2 / (self.samples - 1))
            spread[:, radar_gap] = np.nan
        if self.gap_fill is not None:
            mean, spread = self._fill(block, mean, spread)
        return mean, spread

    def _fill(self, block, translated: np.ndarray, spread: np.ndarray | None):
        """Masked pixels (cloud, shadow, cirrus) and S2 nodata from the translation alone; clear pixels from S2, the
        translation fading into those within `feather` px of a masked one (feather_weights)."""
        r, c, h, w = block
        f = self.gap_fill.feather
        s2, replace = self.gap_fill.read(r - f, c - f, h + 2 * f, w + 2 * f)  # margin: neighbouring blocks' masks
        alpha = feather_weights(replace, f)[f : f + h, f : f + w]
        s2, replace = s2[:, f : f + h, f : f + w], replace[f : f + h, f : f + w]
        alpha = np.where(replace | np.isfinite(translated).all(axis=0), alpha, 0.0)  # clear, no radar: S2 alone
        blended = alpha * np.nan_to_num(translated) + (1 - alpha) * np.nan_to_num(s2)
        filled = np.where(replace, translated, blended)  # exactly the translation: NaN where the radar has none
        filled = np.where(alpha == 0, s2, filled)  # exactly the S2 values, no arithmetic on them
        if spread is not None:
            spread = np.where(alpha == 0, 0.0, alpha * spread)
        return filled, spread


def _fingerprint(
    scene: S1Scene, grid: TileGrid, samples: int, gap_fill: GapFill | None, reads: dict[str, Any]
) -> dict[str, Any]:
    """Everything a scene's blocks depend on: a partial directory with another fingerprint is not resumed."""

    def files(paths) -> dict[str, list[int]]:
        return {str(p.resolve()): [p.stat().st_size, p.stat().st_mtime_ns] for p in paths}

    return {
        "input": files(scene.files),
        "reads": reads,
        "samples": samples,
        "block_size": grid.block_size,
        "gap_fill": None if gap_fill is None else files(gap_fill.files),
    }


def _tags(job: SceneJob, reads: dict[str, Any], records: dict[str, dict]) -> dict[str, Any]:
    chain, gap_fill = job.chain, job.gap_fill
    return {
        "GAC_VERSION": __version__,
        "STAGES": " ".join(STAGES[chain.until]),
        "UNTIL": chain.until,
        "PARAMS_HASH": json_digest(reads),
        "ADAPTERS": json.dumps({stage: record["digest"] for stage, record in records.items()}, sort_keys=True),
        "WEIGHTS": json.dumps(chain.weights, sort_keys=True),
        "RANDOM_WEIGHTS": str(any(chain.random_weights.values())).lower(),
        "SOURCE": job.scene.path.name,
        "MONTH": job.scene.month,
        "UNCERTAINTY_SAMPLES": job.samples,
        "GAP_FILL": gap_fill.s2_path.name if gap_fill is not None else "none",
        "UNITS": "reflectance x 10^4",
        "SEED": job.params.seed,
    }


def compute_scene(
    job: SceneJob, outputs: Outputs, fingerprint: dict[str, Any], ranks, progress: bool
) -> tuple[BlockStore, dict[str, Any]]:
    """Compute this rank's pending blocks of one scene into its partial directory; returns the store and a summary."""
    from tqdm import tqdm

    grid, scene = job.grid, job.scene
    blocks = grid.blocks()
    store = BlockStore(outputs.partial, fingerprint, scene.height, scene.width, grid.block_size, job.samples > 1)
    if ranks.rank == 0:
        done = store.open()
        if done:
            log.info("%s: resuming, %d of %d block(s) already written", outputs.partial, done, len(blocks))
    ranks.barrier()
    mine = store.pending(len(blocks), ranks.rank, ranks.world)
    ranks.barrier()  # every rank has its list before any marks a block done
    job.cache = TileCache(grid, [blocks[k] for k in mine], job.params.translate.infer.batch_size)
    runs = job.cache.runs * job.samples
    log.info("rank %d/%d: %s, %d block(s), %d tile run(s)", ranks.rank, ranks.world, scene.stem, len(mine), runs)
    started = time.perf_counter()
    bar = tqdm(
        total=runs,
        unit="tile",
        desc=f"{scene.stem}[{ranks.rank}]",
        disable=not progress,
        position=ranks.rank,
        dynamic_ncols=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tiles [{elapsed}<{remaining} ETA, "
        "{rate_noinv_fmt}]",
    )
    with bar:
        for k in mine:
            mean, spread = job.compute(blocks[k], bar)
            store.write(k, blocks[k], to_uint16(mean), None if spread is None else spread.astype(np.float32))
    seconds = time.perf_counter() - started
    area_km2 = scene.height * scene.width * 1e-4  # 10 m pixels
    return store, {
        "scene": scene.stem,
        "blocks": len(mine),
        "tile_runs": runs,
        "seconds": seconds,
        "km2": area_km2,
        "out": str(outputs.image),
    }


def write_outputs(store: BlockStore, outputs: Outputs, scene: S1Scene, tags: dict[str, Any], blocks) -> None:
    """The COG(s) and the quicklook from the finished blocks, then the partial directory goes.

    A `<stem>_uncertainty.tif` left by an earlier run (one with --uncertainty, replaced with --overwrite) goes too:
    beside the new image it would describe another result.
    """
    from gac.evaluate.quicklooks import scene_quicklook
    from gac.export import cog_from_blocks

    georef = dict(crs=scene.crs, transform=scene.transform, width=scene.width, height=scene.height)
    cog_from_blocks(
        outputs.image,
        georef,
        "uint16",
        NODATA,
        S2_BANDS,
        tags,
        ((b, store.read("image", b)) for b in blocks),
        store.root,
    )
    if store.uncertainty:
        names = [f"{band} std" for band in S2_BANDS]
        spread_tags = {**tags, "UNITS": "reflectance x 10^4, standard deviation over the uncertainty samples"}
        cog_from_blocks(
            outputs.uncertainty,
            georef,
            "float32",
            float("nan"),
            names,
            spread_tags,
            ((b, store.read("spread", b)) for b in blocks),
            store.root,
        )
    elif outputs.uncertainty.exists():
        outputs.uncertainty.unlink()
    scene_quicklook(outputs.image, outputs.quicklook)
    shutil.rmtree(store.root)


def effective_params(params, until: str | None, uncertainty: int | None):
    """params with the command line's --until / --uncertainty in the translate section (what the outputs record)."""
    update = {k: v for k, v in (("until", until), ("uncertainty", uncertainty)) if v is not None}
    if not update:
        return params
    from gac.translate.params import TranslateParams

    translate = TranslateParams.model_validate({**params.translate.model_dump(), **update})
    return params.model_copy(update={"translate": translate})


def _reads(params, tile_size: int) -> dict[str, Any]:
    """The params a translation depends on (besides the models' own files): what PARAMS_HASH covers."""
    p = params
    return {
        "seed": p.seed,
        "tile_size": tile_size,
        "stage1": {k: getattr(p.stage1, k) for k in ("model", "input", "weights", "capped_decoder")},
        "stage1_finetune": p.stage1_finetune.enabled,
        "stage2": {"backbone": p.stage2.backbone, "bands": list(p.stage2.bands)},
        "stage3": {"model": p.stage3.model, "weights": p.stage3.weights},
        **p.data.model_dump(mode="json", include={"s1_units", "s1_nodata", "s2_offset"}),
        "translate": {
            **p.translate.model_dump(mode="json", exclude={"scenes", "block_size", "infer"}),
            "precision": p.translate.infer.precision,
        },
    }


def translate(params, inputs: list[Path], out_dir: Path, options: Options) -> list[dict[str, Any]]:
    """Translate S1 scenes into `out_dir`; every input is checked before any model is built or file written."""
    t = params.translate
    out_dir = Path(out_dir)
    tile_size = t.tile_size or params.tile.size
    if t.until == "baseline" and t.uncertainty > 1:
        raise GacError(
            f"uncertainty {t.uncertainty} with until: baseline: the baseline U-Net is deterministic, its spread is 0; "
            "use --until v1, v2 or v3 (TerraMind's token sampling) or drop --uncertainty"
        )
    if (options.fill_s2 is None) != (options.cloud_mask is None):
        raise GacError("gap-filling needs both --fill-s2 S2.tif and --cloud-mask MASK.tif (an SCL layer or a 0/1 mask)")
    files = find_s1_inputs(inputs)
    if options.fill_s2 is not None and len(files) != 1:
        raise GacError(
            f"--fill-s2 fills one scene, but {len(files)} inputs were given; translate the scene to fill on its own"
        )
    month = parse_date(options.date) if options.date else None
    records = check_artifacts(params, t.until, options.artifacts)
    reads = {**_reads(params, tile_size), "adapters": {stage: record["digest"] for stage, record in records.items()}}
    scenes: list[S1Scene] = []
    gap_fill = None
    try:
        grids = []
        for path in files:
            scenes.append(open_s1(path, t.reproject, month, Inputs.from_params(params.data)))
            grids.append(TileGrid(scenes[-1].height, scenes[-1].width, tile_size, t.overlap, t.blend, t.block_size))
        if options.fill_s2 is not None:
            gap_fill = open_gap_fill(
                options.fill_s2, options.cloud_mask, scenes[0], params.data.s2_offset, t.cloud_classes, t.feather
            )
        planned = []
        for scene, grid in zip(scenes, grids):
            fingerprint = _fingerprint(scene, grid, t.uncertainty, gap_fill, reads)
            check_outputs(Outputs(out_dir, safe_name(scene.stem)), options.overwrite, fingerprint)
            planned.append((scene, grid, fingerprint))
        for scene in scenes:
            if not scene.month:
                log.warning(
                    "%s: no acquisition date in its tags; month unknown to the refiner (as for undated training "
                    "tiles); pass --date YYYY-MM-DD",
                    scene.path,
                )
        return _run(params, planned, gap_fill, records, reads, out_dir, tile_size, options.progress, options.artifacts)
    finally:
        for scene in scenes:
            scene.close()
        if gap_fill is not None:
            gap_fill.close()


def _run(
    params,
    planned: list[tuple[S1Scene, TileGrid, dict[str, Any]]],
    gap_fill,
    records,
    reads: dict[str, Any],
    out_dir: Path,
    tile_size: int,
    progress: bool,
    artifacts: Artifacts,
) -> list[dict[str, Any]]:
    """Every rank computes its blocks of every scene; once all are on disk, rank 0 alone writes the outputs.

    No rank waits on a collective while rank 0 writes COGs and quicklooks (minutes for a full scene with
    uncertainty): the others end after the last barrier.
    """
    from gac.device import use_deterministic
    from gac.refine.backbone import return_freed_memory
    from gac.runner import start_ranks

    use_deterministic(params.deterministic)  # here, after the checks: a user's mistake is told before torch is imported
    t = params.translate
    ranks, device = start_ranks(t.infer.device, "translate.infer.device")
    try:
        chain = Chain(params, t.until, artifacts, tile_size, device)
        return_freed_memory()  # what building freed (the tokenizer encoders) would otherwise stay resident all run
        if any(chain.random_weights.values()):
            log.warning(
                "RANDOM WEIGHTS: %s; the translation shows what the code does, not what the models can do",
                ", ".join(f"{s} {w}" for s, w in chain.weights.items()),
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        computed = []
        for scene, grid, fingerprint in planned:
            job = SceneJob(params, scene, grid, chain, t.uncertainty, gap_fill)
            outputs = Outputs(out_dir, safe_name(scene.stem))
            computed.append((job, outputs, *compute_scene(job, outputs, fingerprint, ranks, progress)))
        ranks.barrier()  # every block of every scene is on disk
        if ranks.rank == 0:
            for job, outputs, store, _ in computed:
                write_outputs(store, outputs, job.scene, _tags(job, reads, records), job.grid.blocks())
        return [summary for *_, summary in computed]
    finally:
        ranks.close()
