"""`gac evaluate` end to end on the demo tiles, with prediction stores fabricated from the ground truth.

opt_v1 is flat (what stage 1 gives on random weights), opt_v2 a blurred copy,
opt_v3 the truth plus mild noise, opt_v3_on_v1 stronger noise: the metrics must
rank them that way, and every output (JSON, CSV, PNG, COG) must hold what it claims.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from gac.data.store import S2_BANDS, open_store, write_store
from gac.errors import GacError
from gac.params import validate_params
from tests.conftest import run_gac

NOISE = {"opt_v3": 100.0, "opt_v3_on_v1": 400.0, "baseline": 250.0}


def _write_variant(tiles, path: Path, values: np.ndarray, random: bool, name: str) -> None:
    ds = tiles.drop_vars("s1").copy()
    ds["s2"] = (("tile", "band", "y", "x"), values.astype(np.float32))
    ds.attrs = {
        "stage": name,
        "model": f"test-{name}",
        "weights": "random" if random else "/models/x",
        "random_weights": random,
        "params_hash": f"hash-{name}",
    }
    write_store(ds, path, shard_tiles=4)


def make_variants(tiles_path: Path, data_dir: Path) -> None:
    tiles = open_store(tiles_path, need=("s1", "s2")).load()
    truth = tiles.s2.values
    means = np.nanmean(truth, axis=(0, 2, 3))[None, :, None, None]
    _write_variant(tiles, data_dir / "opt_v1.zarr", np.broadcast_to(means, truth.shape), True, "opt_v1")
    _write_variant(
        tiles,
        data_dir / "opt_v2.zarr",
        gaussian_filter(np.nan_to_num(truth, nan=1000.0), sigma=(0, 0, 2, 2)),
        False,
        "opt_v2",
    )
    for seed, (name, noise) in enumerate(NOISE.items()):
        _write_variant(
            tiles,
            data_dir / f"{name}.zarr",
            truth + np.random.default_rng(seed).normal(0, noise, truth.shape),
            False,
            name,
        )


@pytest.fixture(scope="module")
def project(tiles_store, tmp_path_factory) -> Path:
    """A data directory with tiles.zarr and the four variant stores."""
    data = tmp_path_factory.mktemp("data")
    shutil.copytree(tiles_store, data / "tiles.zarr")
    make_variants(data / "tiles.zarr", data)
    return data


@pytest.fixture(scope="module")
def evaluated(project):
    """One full evaluation, tokenizer ceiling included (real TerraMind tiny tokenizer, random weights)."""
    import torch

    from gac.evaluate.run import EvalPaths, evaluate

    torch.set_num_threads(2)
    params = validate_params({"evaluate": {"quicklooks": 2}, "stage1": {"timesteps": 1, "infer": {"batch_size": 8}}})
    out = project / "eval"
    metrics = evaluate(params, EvalPaths(project / "tiles.zarr", project, out))
    return metrics, out, params


def _numbers(tree) -> int:
    return sum(_numbers(v) for v in tree.values()) if isinstance(tree, dict) else 1


def test_metrics_json_is_the_headline_and_details_json_every_number(evaluated):
    metrics, out, _ = evaluated
    from gac.evaluate.run import split_metrics

    on_disk = json.loads((out / "metrics.json").read_text())
    numbers, details, info = split_metrics(metrics)
    assert on_disk == numbers and json.loads((out / "details.json").read_text()) == details
    assert json.loads((out / "provenance.json").read_text()) == info
    assert "provenance" not in on_disk and "lpips_status" not in on_disk  # dvc metrics show lists numbers only
    # the headline: 6 variants x 5 metrics, 2 pairs x 2 metrics x (diff, p), tiles, random_weights
    variants = ["opt_v1", "opt_v2", "opt_v3", "opt_v3_on_v1", "baseline", "tokenizer_ceiling"]
    assert list(on_disk) == ["random_weights", "tiles", *variants, "paired"] and _numbers(on_disk) == 40
    for name in variants:
        assert list(on_disk[name]) == ["psnr", "ssim", "sam_deg", "sar_edge", "gac_score"]
        assert all(on_disk[name][m] == details[name][m] for m in on_disk[name])  # the same numbers, fewer of them
    assert list(on_disk["paired"]) == ["v3_vs_v2", "v3_vs_baseline"]
    for pair, headline in on_disk["paired"].items():
        full = details["paired"][pair]
        assert headline == {m: {"diff": full[m]["diff"], "p": full[m]["p"]} for m in ("psnr", "gac_score")}
    assert on_disk["random_weights"] is True and on_disk["tiles"] == metrics["tiles"]
    # details.json: every metric with its interval, all four paired comparisons, RMSE per band as rows for dvc plots
    assert set(details["paired"]) == {"v2_vs_v1", "v3_vs_v2", "v3_vs_v3_on_v1", "v3_vs_baseline"}
    assert set(details["paired"]["v2_vs_v1"]["ssim"]) == {"diff", "lo", "hi", "p", "n", "clusters"}
    # the cluster bootstrap: the test tiles' map blocks were resampled, and report.md says so
    clusters = details["bootstrap_clusters"]
    assert info["bootstrap_unit"] == "block" and clusters == details["tiles"] == 2  # blocks of one tile (64 px) here
    assert details["paired"]["v2_vs_v1"]["ssim"]["clusters"] == clusters
    assert (
        f"{clusters} map blocks resampled whole (the tiles of a map block drawn together)"
        in (out / "report.md").read_text()
    )
    for name in variants:
        headline = {"psnr", "ssim", "ms_ssim", "sam_deg", "sar_edge", "lpips", "gac_score"}
        intervals = {f"{m}_{end}" for m in headline for end in ("lo", "hi") if metrics[name][m] is not None}
        assert set(details[name]) == headline | intervals
        for m in headline - {"lpips"}:
            assert metrics[name][f"{m}_lo"] <= metrics[name][m] <= metrics[name][f"{m}_hi"]
    bands = details["rmse_per_band"]
    assert [row["band"] for row in bands] == list(S2_BANDS) and [row["band_index"] for row in bands] == list(range(12))
    assert all(set(row) == {"band", "band_index", *variants} for row in bands)
    assert [key for key, value in details.items() if isinstance(value, list)] == ["rmse_per_band"]  # DVC plots it
    assert metrics["opt_v3"]["psnr"] > metrics["opt_v3_on_v1"]["psnr"] > metrics["opt_v1"]["psnr"]
    assert metrics["opt_v3"]["ssim"] > metrics["opt_v2"]["ssim"] > metrics["opt_v1"]["ssim"]
    # Gaussian noise of sigma 100 (x 10^4) is RMSE 0.01 in every band (clipping aside).
    assert bands[3]["band"] == "B04" and bands[3]["opt_v3"] == pytest.approx(0.01, rel=0.05)
    # A flat image has no edges: SAR-edge 0; the truth's own score is the reference.
    assert metrics["opt_v1"]["sar_edge"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["ground_truth"]["sar_edge"] > 0.3
    assert metrics["opt_v3"]["sar_edge"] > metrics["opt_v1"]["sar_edge"]
    # GAC score: half SAR-edge agreement, half PSNR / 40 dB; the truth (infinite PSNR) scores 0.5 + half its edges
    assert metrics["ground_truth"]["gac_score"] == pytest.approx(0.5 + 0.5 * metrics["ground_truth"]["sar_edge"])
    assert metrics["opt_v3"]["gac_score"] > metrics["opt_v1"]["gac_score"]
    assert "gac_score" in (out / "report.md").read_text() or "GAC score" in (out / "report.md").read_text()
    assert metrics["split"] == "test" and metrics["tiles"] >= 1


def test_metrics_record_provenance_and_shout_about_random_weights(evaluated):
    metrics, _, params = evaluated
    prov = metrics["provenance"]
    assert prov["opt_v2"]["weights"] == "/models/x" and prov["opt_v2"]["random_weights"] is False
    assert prov["opt_v3"]["params_hash"] == "hash-opt_v3" and prov["opt_v3"]["model"] == "test-opt_v3"
    assert (
        prov["tokenizer_ceiling"]["weights"] == "random"
        and "terramind_v1_tiny_generate" in prov["tokenizer_ceiling"]["model"]
    )
    assert metrics["random_weights"] is True
    assert metrics["random_weight_variants"] == ["opt_v1", "tokenizer_ceiling"]
    from gac.digest import params_hash

    assert metrics["params_hash"] == params_hash(params, ["seed", "evaluate", "stage1"])
    # LPIPS runs exactly where its trunk weights are cached (never downloaded); the status says which case this is
    from gac.losses import lpips_available

    cached, reason = lpips_available("alex")
    assert metrics["lpips_status"] == reason
    if cached:
        assert all(0.0 <= metrics[v]["lpips"] <= 1.5 for v in ("opt_v1", "opt_v2", "opt_v3"))
    else:
        assert all(
            metrics[v]["lpips"] is None for v in ("opt_v1", "opt_v2", "opt_v3", "opt_v3_on_v1", "tokenizer_ceiling")
        )
    assert metrics["ms_ssim_scales"] == 3  # 64 px tiles


def test_tokenizer_ceiling_on_random_weights_is_flat(evaluated):
    """The tokenizer's diffusion UNet ends in a zero-initialised conv, so random weights decode every image to the band
    means."""
    metrics, out, _ = evaluated
    ceiling = metrics["tokenizer_ceiling"]
    assert ceiling["sar_edge"] == pytest.approx(0.0, abs=1e-6)
    assert ceiling["psnr"] < metrics["opt_v3"]["psnr"]


def test_per_tile_csv_matches_the_aggregates(evaluated):
    metrics, out, _ = evaluated
    with open(out / "per_tile.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["tiles"]
    assert [int(r["tile_index"]) for r in rows] == list(range(len(rows)))
    for column, (name, metric) in {
        "opt_v2_psnr": ("opt_v2", "psnr"),
        "opt_v3_sam_deg": ("opt_v3", "sam_deg"),
        "opt_v1_ssim": ("opt_v1", "ssim"),
    }.items():
        values = [float(r[column]) for r in rows]
        assert np.mean(values) == pytest.approx(metrics[name][metric], abs=1e-5)
    assert np.mean([float(r["ground_truth_sar_edge"]) for r in rows]) == pytest.approx(
        metrics["ground_truth"]["sar_edge"], abs=1e-5
    )
    lpips_column = [r["opt_v3_lpips"] for r in rows]
    if metrics["opt_v3"]["lpips"] is None:  # not cached: an empty cell per tile, not a number
        assert lpips_column == [""] * len(rows)
    else:
        assert np.mean([float(v) for v in lpips_column]) == pytest.approx(metrics["opt_v3"]["lpips"], abs=1e-5)


def test_quicklooks_and_contact_sheet(evaluated):
    from PIL import Image

    metrics, out, _ = evaluated
    pngs = sorted((out / "quicklooks").glob("*.png"))
    assert len(pngs) == min(2, metrics["tiles"])
    sheet = Image.open(out / "contact_sheet.png")
    tile = Image.open(pngs[0])
    # 8 panels (S1, 6 variants, truth) of 128 px; two rows per tile quicklook, one per tile on the sheet.
    assert tile.size[0] == sheet.size[0] >= 8 * 128
    assert tile.size[1] > 2 * 128 and sheet.size[1] > len(pngs) * 128
    pixels = np.asarray(tile.convert("RGB"))
    top = 2 * 14 + 2
    panel = lambda c: pixels[top : top + 128, 2 + c * 130 : 2 + c * 130 + 128]  # noqa: E731
    assert panel(1).std(axis=(0, 1)).max() == 0  # opt_v1 is flat
    assert panel(7).std() > 10  # the truth is not
    # Distributions: a box-plot panel per metric with values (LPIPS only when its weights are cached), 6 variants wide.
    panels = 5 + (metrics["opt_v3"]["lpips"] is not None)
    assert Image.open(out / "distributions.png").size == (round(90 * (1.2 * 6 + 3)), round(90 * 2.2 * panels))


def test_cogs_sit_in_place_and_hold_the_predictions(evaluated, project):
    import rasterio

    metrics, out, _ = evaluated
    tiles = open_store(project / "tiles.zarr", need=("s2",))
    v3 = open_store(project / "opt_v3.zarr")
    test_ids = [str(t) for t, s in zip(tiles.tile.values, tiles.split.values) if s == "test"]
    for name in ("opt_v1", "opt_v2", "opt_v3", "opt_v3_on_v1", "baseline", "tokenizer_ceiling"):
        assert len(list((out / "cogs" / name).glob("*.tif"))) == len(test_ids)
    i = [str(t) for t in tiles.tile.values].index(test_ids[0])
    with rasterio.open(out / "cogs" / "opt_v3" / f"{test_ids[0]}.tif") as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert cog.crs == rasterio.crs.CRS.from_user_input(str(tiles.crs.values[i]))
        assert tuple(cog.transform)[:6] == pytest.approx(tuple(tiles.transform.values[i]))
        assert cog.descriptions == S2_BANDS
        assert cog.tags()["weights"] == "/models/x" and cog.tags()["params_hash"] == "hash-opt_v3"
        np.testing.assert_array_equal(cog.read(), v3.s2.values[i])


def test_report_table_is_markdown_with_the_caveat(evaluated, capsys):
    from gac.evaluate.report import main, results_table

    metrics, out, _ = evaluated
    report = (out / "report.md").read_text()
    assert results_table(metrics) in report and "## How each number is computed" in report
    assert (
        "## Paired comparisons" in report
        and "| opt_v3 − baseline (pipeline against a plain supervised network) |" in report
    )
    # The demo tiles carry the procedural land cover: one table per metric, a column per class present in the split.
    landcover = json.loads((out / "landcover.json").read_text())
    assert set(landcover) <= {"water", "forest", "cropland", "grassland", "bare_soil", "urban"} and len(landcover) >= 2
    assert "**PSNR dB ↑**" in report and "| baseline | " in report.split("## Per land cover")[1]
    assert "- `opt_v3`: test-opt_v3; weights /models/x; params hash hash-opt_v3" in report
    assert main([str(out / "metrics.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == results_table(metrics).strip()
    v3 = metrics["opt_v3"]  # the intervals come from details.json: metrics.json's headline has none
    assert f"| {v3['psnr']:.2f} [{v3['psnr_lo']:.2f}, {v3['psnr_hi']:.2f}] |" in printed
    assert "psnr_lo" not in (out / "metrics.json").read_text()
    table = results_table(metrics)
    lines = table.splitlines()
    assert lines[0].startswith("| variant | PSNR dB")
    assert any(
        line.startswith("| opt_v3: full pipeline") and f"{metrics['opt_v3']['psnr']:.2f}" in line for line in lines
    )
    assert "ground truth (reference)" in table and "RANDOM WEIGHTS (opt_v1, tokenizer_ceiling)" in table
    assert "∞" in results_table({"opt_v3": {**metrics["opt_v3"], "psnr": None}})


def _fast_params(**evaluate):
    return validate_params({"evaluate": {"tokenizer_ceiling": False, "cogs": False, "quicklooks": 1, **evaluate}})


def test_missing_store_is_one_line_unless_allowed(project, tmp_path):
    from gac.evaluate.run import EvalPaths, evaluate

    data = tmp_path / "data"
    data.mkdir()
    for name in ("tiles.zarr", "opt_v1.zarr", "opt_v2.zarr"):
        shutil.copytree(project / name, data / name)
    paths = EvalPaths(data / "tiles.zarr", data, data / "eval")
    with pytest.raises(GacError) as err:
        evaluate(_fast_params(), paths)
    message = str(err.value)
    assert "\n" not in message and "opt_v3.zarr" in message and "evaluate.allow_missing" in message
    assert not (data / "eval" / "metrics.json").exists()
    metrics = evaluate(_fast_params(allow_missing=True), paths)
    assert metrics["missing_variants"] == ["opt_v3", "opt_v3_on_v1", "baseline"]
    assert "opt_v3" not in metrics and metrics["opt_v2"]["psnr"] > 0
    headline = json.loads((data / "eval" / "metrics.json").read_text())  # no pair of HEADLINE_PAIRED was evaluated
    assert list(headline) == ["random_weights", "tiles", "opt_v1", "opt_v2", "paired"] and headline["paired"] == {}
    assert (data / "eval" / "cogs" / "NOT_WRITTEN.txt").is_file()


def test_misaligned_store_is_refused(project, tmp_path):
    from gac.evaluate.run import EvalPaths, evaluate

    data = tmp_path / "data"
    data.mkdir()
    shutil.copytree(project / "tiles.zarr", data / "tiles.zarr")
    v1 = open_store(project / "opt_v1.zarr").load()
    write_store(v1.isel(tile=slice(None, None, -1)), data / "opt_v1.zarr", 4)
    with pytest.raises(GacError, match=r"opt_v1.zarr: tile ids disagree"):
        evaluate(_fast_params(variants=["opt_v1"]), EvalPaths(data / "tiles.zarr", data, data / "eval"))


def test_store_with_other_bands_is_refused(project, tmp_path):
    from gac.evaluate.run import EvalPaths, evaluate

    data = tmp_path / "data"
    data.mkdir()
    shutil.copytree(project / "tiles.zarr", data / "tiles.zarr")
    v1 = open_store(project / "opt_v1.zarr").load()
    write_store(v1.isel(band=slice(0, 6)), data / "opt_v1.zarr", 4)
    with pytest.raises(GacError, match=r"opt_v1.zarr: bands are B01, .* expected the 12 S2L2A bands"):
        evaluate(_fast_params(variants=["opt_v1"]), EvalPaths(data / "tiles.zarr", data, data / "eval"))


def test_params_are_strict():
    with pytest.raises(GacError, match="evaluate.variants"):
        validate_params({"evaluate": {"variants": ["opt_v4"]}})
    with pytest.raises(GacError, match="odd"):
        validate_params({"evaluate": {"sar_edge": {"window": 6}}})
    with pytest.raises(GacError, match="unknown key 'evaluate.alow_missing'; did you mean 'allow_missing'"):
        validate_params({"evaluate": {"alow_missing": True}})


def test_cli_reports_a_missing_store_in_one_line(project, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copytree(project / "tiles.zarr", data / "tiles.zarr")
    (tmp_path / "params.yaml").write_text("evaluate:\n  tokenizer_ceiling: false\n")
    result = run_gac(
        "evaluate",
        "--params",
        str(tmp_path / "params.yaml"),
        "--tiles",
        str(data / "tiles.zarr"),
        "--data-dir",
        str(data),
        "--out",
        str(data / "eval"),
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("gac: error:")]
    assert len(errors) == 1 and "opt_v1.zarr" in errors[0] and "not found" in errors[0]
    assert not (data / "eval").exists()
