"""`gac evaluate`: every variant against the ground truth of one split, written for DVC and for people.

Outputs under `out_dir` (data/eval):

- metrics.json: the headline, at most 40 numbers under short stable keys, so
  `dvc metrics diff` fits a screen and `dvc exp show` a terminal: per variant
  the mean PSNR, SSIM, SAM, SAR-edge and GAC score (`opt_v3.psnr`), the paired
  differences of HEADLINE_PAIRED with their p-value (`paired.v3_vs_v2.psnr.diff`,
  `.p`), `tiles`, and `random_weights` (true when any variant ran on random
  weights: every metrics file says so).
- details.json: every number (a DVC out, not a metric; report.md reads it):
  the same per variant plus MS-SSIM, LPIPS and each metric's bootstrap interval
  (`opt_v3.psnr_lo`, `opt_v3.psnr_hi`; a cluster bootstrap over the tiles'
  blocks, `evaluate.bootstrap_unit`), the ground truth's own SAR-edge and GAC
  score, all paired comparisons (`paired.v3_vs_baseline.psnr` with `diff`,
  `lo`, `hi`, `p`, `n` tiles, `clusters`; see gac.evaluate.stats), the
  bootstrap settings (`bootstrap_clusters`: how many were resampled), and
  `rmse_per_band`, a row per band with each variant's
  RMSE (the one list in the file, which `dvc plots` draws).
- provenance.json: the strings behind those numbers: model, weights,
  random_weights and params hash of every store, the LPIPS status, the split,
  which variants ran on random weights or were not evaluated.
- labels.json: per label of an archive that has them (BigEarthNet's 19
  classes, tiles.zarr's `labels`; null otherwise), every variant's PSNR, RMSE
  and SAM over the pixels of the split's tiles that carry it, and their count.
- landcover.json: per land-cover class (where tiles.zarr has a `landcover`
  layer; null otherwise), every variant's PSNR, RMSE and SAM over the split's
  pixels of that class (gac.evaluate.landcover).
- report.md: the results table (gac.evaluate.report) and the conventions
  behind every number (gac.metrics.CONVENTIONS), for people and the README.
- per_tile.csv: one row per tile, a column per variant and metric
  (`opt_v3_psnr`), and `tile_index` for the x axis of `dvc plots`.
- quicklooks/<tile>.png and contact_sheet.png: S1 | variants | ground truth
  (the sheet adds an |prediction - truth| row per tile on a fixed scale).
- distributions.png: a box plot per metric, a box per variant, every tile a point.
- cogs/<variant>/<tile>.tif: the predictions as Cloud-Optimized GeoTIFFs.

Variants are the prediction stores data/<name>.zarr named in
`evaluate.variants`, plus the tokenizer ceiling computed here. A missing store
is an error unless `evaluate.allow_missing` is true; then it is skipped and
listed under `missing_variants`, as is a variant switched off where it is made
(`baseline.enabled: false` writes a store that only says so).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gac.data.store import S2_BANDS, check_aligned, open_store, partial_path, replace_dir
from gac.digest import params_hash
from gac.errors import GacError
from gac.evaluate.report import results_report
from gac.evaluate.stats import paired_comparisons, with_intervals
from gac.export import safe_name, write_cog
from gac.metrics import SCALAR_METRICS, LpipsMetric, aggregate, gac_score, json_safe, sar_edge, tile_metrics

log = logging.getLogger(__name__)

CEILING = "tokenizer_ceiling"
GROUND_TRUTH = "ground_truth"
# Store attributes that say what made a prediction; copied into metrics.json.
PROVENANCE_KEYS = (
    "stage",
    "model",
    "backbone",
    "input",
    "adapter",
    "model_dir",
    "weights",
    "random_weights",
    "params_hash",
    "gac_version",
)
# What goes to provenance.json rather than metrics.json, so `dvc metrics show/diff` list numbers only.
INFO_KEYS = (
    "random_weight_variants",
    "split",
    "missing_variants",
    "lpips_status",
    "params_hash",
    "provenance",
    "bootstrap_unit",
)
# metrics.json's headline (5 metrics x 6 variants + 2 pairs x 2 metrics x 2 + 2 = 40 numbers); the rest: details.json.
HEADLINE_METRICS = ("psnr", "ssim", "sam_deg", "sar_edge", "gac_score")
HEADLINE_PAIRED = {"v3_vs_v2": ("psnr", "gac_score"), "v3_vs_baseline": ("psnr", "gac_score")}
HEADLINE_PAIRED_FIELDS = ("diff", "p")
CSV_METRICS = ("psnr", "ssim", "ms_ssim", "sam_deg", "sar_edge", "lpips", "gac_score")


@dataclass(frozen=True)
class EvalPaths:
    tiles: Path
    data_dir: Path  # holds each variant as <name>.zarr
    out_dir: Path

    def variant(self, name: str) -> Path:
        return self.data_dir / f"{name}.zarr"


def _truth_reference(truth_edges: list[float]) -> dict[str, float | None]:
    """The ground truth's own scores: its SAR-edge agreement and the GAC score that gives (its PSNR is infinite, counted
    as 40 dB)."""
    edge = float(np.nanmean(truth_edges)) if truth_edges else None
    return {"sar_edge": edge, "gac_score": gac_score(math.inf, edge)}


def _provenance(attrs: dict[str, Any], path: Path) -> dict[str, Any]:
    kept = {key: attrs[key] for key in PROVENANCE_KEYS if key in attrs}
    lacking = [key for key in ("weights", "random_weights", "params_hash") if key not in kept]
    if lacking:
        log.warning("%s: attrs lack %s; metrics.json records them as null", path, ", ".join(lacking))
        kept.update({key: None for key in lacking})
    return kept


def load_variants(params, tiles, paths: EvalPaths) -> tuple[dict[str, Any], list[str]]:
    """Open each variant store named in params, aligned with tiles.zarr; missing ones fail unless allowed."""
    stores, missing = {}, []
    for name in params.evaluate.variants:
        path = paths.variant(name)
        if not path.exists():
            if params.evaluate.allow_missing:
                log.warning("%s: variant %s not found; skipped (evaluate.allow_missing is true)", path, name)
                missing.append(name)
                continue
            raise GacError(
                f"{path}: prediction store for variant '{name}' not found; run `dvc repro` to make it, "
                f"or remove '{name}' from evaluate.variants, or set evaluate.allow_missing: true"
            )
        store = open_store(path, need=(), what=f"prediction store ({name})")
        if store.attrs.get("enabled") is False:  # e.g. baseline.enabled: false wrote a store that only says so
            log.warning("%s: variant %s was switched off where it is made; skipped", path, name)
            missing.append(name)
            continue
        store = open_store(path, need=("s2",), what=f"prediction store ({name})")
        check_aligned(tiles, store, paths.tiles, path)
        bands = tuple(str(b) for b in store.s2.coords["band"].values) if "band" in store.s2.coords else S2_BANDS
        if bands != S2_BANDS:
            raise GacError(
                f"{path}: bands are {', '.join(bands)}, expected the 12 S2L2A bands {', '.join(S2_BANDS)}; re-run the "
                "stage that made it"
            )
        stores[name] = store
    return stores, missing


def _split_indices(tiles, split: str, path: Path) -> np.ndarray:
    splits = tiles.split.values.astype(str)
    idx = np.flatnonzero(splits == split)
    if idx.size == 0:
        present = ", ".join(sorted(set(splits))) or "none"
        raise GacError(
            f"{path}: no tiles in split '{split}' (present: {present}); set evaluate.split to one of them or re-tile"
        )
    return idx


def bootstrap_clusters(tiles, idx: np.ndarray, unit: str, path: Path) -> np.ndarray | None:
    """The cluster label of each evaluated tile for `evaluate.bootstrap_unit` (None: every tile its own)."""
    if unit == "tile":
        return None
    if unit not in tiles.coords:
        raise GacError(
            f"{path}: the tile store has no '{unit}' coordinate to resample by (evaluate.bootstrap_unit: "
            f"{unit}); re-run `gac tile` (dvc repro tile) to record it, or set "
            "evaluate.bootstrap_unit: scene"
        )
    return tiles[unit].values[idx].astype(str)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return round(value, 6) if isinstance(value, float) else value


def write_per_tile_csv(path: Path, tile_ids, scenes, rows: dict[str, list[dict]], truth_edges: list[float]) -> None:
    """Wide table: a row per tile, `<variant>_<metric>` columns; infinite PSNR and unavailable LPIPS are empty."""
    names = list(rows)
    header = (
        ["tile_index", "tile", "scene"]
        + [f"{n}_{m}" for n in names for m in CSV_METRICS]
        + [f"{GROUND_TRUTH}_sar_edge"]
    )
    lines = []
    for i, tile in enumerate(tile_ids):
        line = [i, str(tile), str(scenes[i])]
        line += [_csv_value(rows[n][i].get(m)) for n in names for m in CSV_METRICS]
        line.append(_csv_value(truth_edges[i]))
        lines.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(lines)
    os.replace(tmp, path)


def _fresh_dir(path: Path) -> Path:
    tmp = partial_path(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_quicklooks(out_dir: Path, tile_ids, s1, truth, preds: dict[str, np.ndarray], count: int) -> int:
    from gac.evaluate.quicklooks import contact_sheet, tile_quicklook

    chosen = range(min(count, len(tile_ids)))
    tmp = _fresh_dir(out_dir / "quicklooks")
    sheet = []
    for i in chosen:
        panels = {name: values[i] for name, values in preds.items()}
        tile_quicklook(tmp / f"{safe_name(tile_ids[i])}.png", str(tile_ids[i]), s1[i], panels, truth[i])
        sheet.append((str(tile_ids[i]), s1[i], panels, truth[i]))
    replace_dir(tmp, out_dir / "quicklooks")
    if sheet:
        contact_sheet(out_dir / "contact_sheet.png", sheet)
    return len(sheet)


def write_cogs(
    out_dir: Path,
    tiles,
    idx: np.ndarray,
    preds: dict[str, np.ndarray],
    provenance: dict[str, dict],
    enabled: bool = True,
) -> int:
    tmp = _fresh_dir(out_dir / "cogs")
    if not enabled:  # DVC expects the out to exist
        (tmp / "NOT_WRITTEN.txt").write_text("evaluate.cogs is false: no GeoTIFFs were written\n")
        replace_dir(tmp, out_dir / "cogs")
        return 0
    crs = tiles.crs.values[idx].astype(str)
    transforms = tiles.transform.values[idx]
    tile_ids = tiles.tile.values[idx].astype(str)
    count = 0
    for name, values in preds.items():
        tags = {"variant": name, **{k: v for k, v in provenance.get(name, {}).items() if v is not None}}
        for i, tile in enumerate(tile_ids):
            write_cog(tmp / name / f"{safe_name(tile)}.tif", values[i], crs[i], transforms[i], S2_BANDS, tags)
            count += 1
    replace_dir(tmp, out_dir / "cogs")
    return count


def headline(details: dict[str, Any], variants: list[str]) -> dict[str, Any]:
    """metrics.json from details.json's numbers: HEADLINE_METRICS per variant, HEADLINE_PAIRED's diffs and p-values."""
    paired = details.get("paired", {})
    return {
        "random_weights": details["random_weights"],
        "tiles": details["tiles"],
        **{name: {m: details[name].get(m) for m in HEADLINE_METRICS} for name in variants},
        "paired": {
            pair: {m: {f: paired[pair][m][f] for f in HEADLINE_PAIRED_FIELDS} for m in names if m in paired[pair]}
            for pair, names in HEADLINE_PAIRED.items()
            if pair in paired
        },
    }


def split_metrics(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(metrics.json: the headline, for `dvc metrics`; details.json: every number; provenance.json: strings and lists).

    The per-class metrics go to landcover.json of their own (classes x variants x metrics would swamp a reader).
    """
    details = {
        key: value for key, value in result.items() if key not in INFO_KEYS and key not in ("landcover", "labels")
    }
    info = {key: result[key] for key in INFO_KEYS if key in result}
    return headline(details, list(result.get("provenance", {}))), details, info


def rmse_per_band(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variant's per-band RMSE, taken out of its summary, as a row per band (`dvc plots` draws it by band)."""
    rmse = {name: summary.pop("rmse", {}) for name, summary in summaries.items()}
    return [
        {"band_index": i, "band": band, **{name: values.get(band) for name, values in rmse.items()}}
        for i, band in enumerate(S2_BANDS)
    ]


def evaluate(params, paths: EvalPaths) -> dict[str, Any]:
    """Score every variant on `params.evaluate.split`: write metrics, table, quicklooks, COGs; return every result."""
    cfg = params.evaluate
    tiles = open_store(paths.tiles, need=("s1", "s2"), what="tile store")
    stores, missing = load_variants(params, tiles, paths)
    idx = _split_indices(tiles, cfg.split, paths.tiles)
    tile_ids = tiles.tile.values[idx].astype(str)
    scenes = tiles.scene.values[idx].astype(str) if "scene" in tiles.coords else np.array([""] * len(idx))
    clusters = bootstrap_clusters(tiles, idx, cfg.bootstrap_unit, paths.tiles)
    # Only the split's tiles are read (one chunk per tile), not the whole store.
    truth = tiles.s2.isel(tile=idx).values.astype(np.float32)
    s1 = tiles.s1.isel(tile=idx).values.astype(np.float32)
    preds = {name: store.s2.isel(tile=idx).values.astype(np.float32) for name, store in stores.items()}
    provenance = {name: _provenance(dict(store.attrs), paths.variant(name)) for name, store in stores.items()}
    sections = ["seed", "evaluate", "stage1"] if cfg.tokenizer_ceiling else ["evaluate"]
    if cfg.tokenizer_ceiling:
        from gac.evaluate.ceiling import tokenizer_ceiling

        preds[CEILING], provenance[CEILING] = tokenizer_ceiling(truth, tile_ids, params.stage1, params.seed)
    if not preds:
        raise GacError(
            f"no variant to evaluate: every store in evaluate.variants is missing ({', '.join(missing)}) and "
            "evaluate.tokenizer_ceiling is false"
        )

    lpips = LpipsMetric(enabled=cfg.lpips)
    log.info("%s", lpips.reason)
    edge_options = {"window": cfg.sar_edge.window, "looks": cfg.sar_edge.looks, "sigma": cfg.sar_edge.sigma}
    rows = {
        name: [tile_metrics(values[i], truth[i], s1[i], lpips, edge_options) for i in range(len(idx))]
        for name, values in preds.items()
    }
    truth_edges = [sar_edge(truth[i], s1[i], **edge_options) for i in range(len(idx))]

    landcover = None
    if "landcover" in tiles.data_vars:
        from gac.evaluate.landcover import per_class

        names = {int(k): str(v) for k, v in dict(tiles.attrs.get("landcover_classes", {})).items()}
        landcover = per_class(preds, truth, tiles.landcover.isel(tile=idx).values, names)

    labels = None
    if "labels" in tiles.data_vars:  # an archive's multi-label classes per tile (BigEarthNet's 19)
        from gac.evaluate.landcover import per_label

        labels = per_label(preds, truth, tiles.labels.isel(tile=idx).values, [str(n) for n in tiles.label.values])

    random_variants = sorted(name for name, prov in provenance.items() if prov.get("random_weights"))
    if random_variants:
        log.warning(
            "RANDOM WEIGHTS: %s ran on random weights; these metrics show the pipeline working, not the models' skill",
            ", ".join(random_variants),
        )
    from gac.losses import ms_ssim_scales

    metrics: dict[str, Any] = {
        "random_weights": bool(random_variants),
        "random_weight_variants": random_variants,
        "split": cfg.split,
        "tiles": int(len(idx)),
        **{
            name: with_intervals(
                aggregate(variant_rows), variant_rows, cfg.bootstrap_resamples, params.seed, cfg.confidence, clusters
            )
            for name, variant_rows in rows.items()
        },
        GROUND_TRUTH: _truth_reference(truth_edges),
        "paired": paired_comparisons(rows, cfg.bootstrap_resamples, params.seed, cfg.confidence, clusters),
        "confidence": cfg.confidence,
        "bootstrap_resamples": cfg.bootstrap_resamples,
        "bootstrap_unit": cfg.bootstrap_unit,
        "bootstrap_clusters": int(len(idx) if clusters is None else len(set(clusters))),
        "missing_variants": missing,
        "lpips_status": lpips.reason,
        "ms_ssim_scales": ms_ssim_scales(int(truth.shape[-1]))[0],
        "params_hash": params_hash(params, sections),
        "provenance": provenance,
        "landcover": landcover,
        "labels": labels,
    }
    for name in rows:
        metrics[name].pop("tiles", None)
    metrics["rmse_per_band"] = rmse_per_band({name: metrics[name] for name in rows})

    out = paths.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_per_tile_csv(out / "per_tile.csv", tile_ids, scenes, rows, truth_edges)
    drawn = write_quicklooks(out, tile_ids, s1, truth, preds, cfg.quicklooks)
    from gac.evaluate.plots import distribution_plot

    distribution_plot(out / "distributions.png", rows, f"{len(idx)} {cfg.split} tiles")
    cogs = write_cogs(out, tiles, idx, preds, provenance, enabled=cfg.cogs)
    metrics = json_safe(metrics)
    _write_text(out / "report.md", results_report(metrics))
    numbers, details, info = split_metrics(metrics)
    _write_text(out / "metrics.json", json.dumps(numbers, indent=2) + "\n")
    _write_text(out / "details.json", json.dumps(details, indent=2) + "\n")
    _write_text(out / "provenance.json", json.dumps(info, indent=2) + "\n")
    _write_text(out / "landcover.json", json.dumps(metrics["landcover"], indent=2) + "\n")
    _write_text(out / "labels.json", json.dumps(metrics["labels"], indent=2) + "\n")
    log.info(
        "evaluated %d %s tiles, %d variants; %d quicklooks, %d COGs under %s",
        len(idx),
        cfg.split,
        len(rows),
        drawn,
        cogs,
        out,
    )
    return metrics


__all__ = ["CEILING", "GROUND_TRUTH", "SCALAR_METRICS", "EvalPaths", "evaluate", "load_variants", "write_per_tile_csv"]
