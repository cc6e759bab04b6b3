"""Markdown from data/eval/: the results table, paired comparisons and per-class tables.

`python -m gac.evaluate.report [data/eval/metrics.json]` prints the table the
README's results section pastes (mean and bootstrap interval per cell, read from
the details.json beside metrics.json, whose headline has no intervals), the
sentence saying which differences are significant, and the random-weights
caveat when it applies, so the README's numbers always come from a real run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gac.errors import GacError

ORDER = ("opt_v1", "opt_v2", "opt_v3", "opt_v3_on_v1", "baseline", "tokenizer_ceiling")
LABELS = {
    "opt_v1": "opt_v1: TerraMind alone (stage 1)",
    "opt_v2": "opt_v2: stages 1+2",
    "opt_v3": "opt_v3: full pipeline (1+2+3)",
    "opt_v3_on_v1": "stage 3 on opt_v1 (1+3)",
    "baseline": "supervised U-Net baseline (pix2pix-style, L1)",
    "tokenizer_ceiling": "tokenizer ceiling (truth round trip)",
    "ground_truth": "ground truth (reference)",
}
COLUMNS = (
    ("psnr", "PSNR dB ↑", 2),
    ("ssim", "SSIM ↑", 3),
    ("ms_ssim", "MS-SSIM ↑", 3),
    ("sam_deg", "SAM ° ↓", 2),
    ("lpips", "LPIPS ↓", 3),
    ("sar_edge", "SAR-edge ↑", 3),
    ("gac_score", "GAC score ↑", 3),
)
LOWER_IS_BETTER = {"sam_deg", "lpips", "rmse"}
PAIR_LABELS = {
    "v2_vs_v1": "opt_v2 − opt_v1 (stage 2's gain)",
    "v3_vs_v2": "opt_v3 − opt_v2 (stage 3's gain)",
    "v3_vs_v3_on_v1": "opt_v3 − stage 3 on opt_v1 (stage 2's gain under stage 3)",
    "v3_vs_baseline": "opt_v3 − baseline (pipeline against a plain supervised network)",
}
SHORT_PAIR = {
    "v2_vs_v1": "v2 vs v1",
    "v3_vs_v2": "v3 vs v2",
    "v3_vs_v3_on_v1": "v3 vs 1+3",
    "v3_vs_baseline": "v3 vs baseline",
}
ALPHA = 0.05


def _cell(value: Any, digits: int, name: str) -> str:
    if value is None:
        return "∞" if name == "psnr" else "n/a"
    return f"{value:.{digits}f}"


def _with_interval(row: dict[str, Any], name: str, digits: int) -> str:
    cell = _cell(row.get(name), digits, name)
    low, high = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if row.get(name) is None or low is None or high is None:
        return cell
    return f"{cell} [{low:.{digits}f}, {high:.{digits}f}]"


def significant(result: dict[str, Any] | None) -> bool:
    """A paired difference counts as significant when its p-value is below ALPHA and its interval excludes zero."""
    return bool(result) and result["p"] < ALPHA and (result["lo"] > 0 or result["hi"] < 0)


UNIT_WORDS = {"block": ("map block", "map blocks"), "scene": ("scene", "scenes"), "tile": ("tile", "tiles")}


def resampled(metrics: dict[str, Any]) -> str:
    """What the bootstrap and the paired tests resampled, in words: the cluster bootstrap's unit and count."""
    unit = metrics.get("bootstrap_unit", "tile")
    count = metrics.get("bootstrap_clusters", metrics.get("tiles", "?"))
    one, many = UNIT_WORDS.get(unit, (unit, unit))
    if unit == "tile":
        return f"{count} tiles resampled one by one (as if independent)"
    return f"{count} {one if count == 1 else many} resampled whole (the tiles of a {one} drawn together)"


FEW_CLUSTERS = 10  # below this many clusters a percentile bootstrap understates the spread (Cameron et al. 2008)


def few_clusters_note(metrics: dict[str, Any]) -> str | None:
    """A warning when the bootstrap resampled so few clusters that its intervals mean little; None otherwise."""
    unit, count = metrics.get("bootstrap_unit", "tile"), metrics.get("bootstrap_clusters")
    if unit == "tile" or not isinstance(count, int) or count >= FEW_CLUSTERS:
        return None
    many = UNIT_WORDS.get(unit, (unit, unit))[1]
    return (
        f"Only {count} {many}: a bootstrap over so few understates the uncertainty (with 2 its interval just spans "
        f"the two {many}' means), and no signed-rank p-value can fall below 0.05 with fewer than 6; "
        f"evaluate on more {many} (a larger test split or a smaller tile.split_block) before reading differences."
    )


def significance_sentence(metrics: dict[str, Any]) -> str:
    """One sentence, generated from details.json's `paired` section, naming which comparisons differ significantly."""
    paired = metrics.get("paired") or {}
    if not paired:
        return "No paired comparison was possible (a variant of every pair is missing)."
    digits = dict((key, d) for key, _, d in COLUMNS)
    found, none = [], []
    for key, per_metric in paired.items():
        hits = []
        for name, _, _ in COLUMNS:
            result = per_metric.get(name)
            if significant(result):
                better = (result["diff"] < 0) if name in LOWER_IS_BETTER else (result["diff"] > 0)
                hits.append(
                    f"{name.replace('_deg', '')} {result['diff']:+.{digits[name]}f} "
                    f"({'better' if better else 'worse'}, p={result['p']:.3f})"
                )
        (found if hits else none).append(
            f"{SHORT_PAIR.get(key, key)}: " + ", ".join(hits) if hits else SHORT_PAIR.get(key, key)
        )
    level = round(100 * float(metrics.get("confidence", 0.95)))
    head = (
        f"On these {metrics.get('tiles', '?')} {metrics.get('split', 'test')} tiles, the differences that are "
        "significant "
        f"(Wilcoxon signed-rank p < {ALPHA} and a {level}% bootstrap interval excluding zero, "
        f"{resampled(metrics)}) are "
    )
    body = "; ".join(found) if found else "none"
    tail = f"; not significant in any metric: {', '.join(none)}." if none else "."
    return head + body + tail


def results_table(metrics: dict[str, Any]) -> str:
    """Markdown: a row per variant (mean [bootstrap interval]) and the ground truth's SAR-edge and GAC-score reference,
    then the notes."""
    header = "| variant | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name in [n for n in ORDER if n in metrics]:
        row = metrics[name]
        lines.append(
            f"| {LABELS[name]} | " + " | ".join(_with_interval(row, key, digits) for key, _, digits in COLUMNS) + " |"
        )
    reference = metrics.get("ground_truth", {})
    if (
        reference.get("sar_edge") is not None
    ):  # the truth's own SAR-edge (and GAC) score: what a prediction is read against
        cells = [
            _cell(reference[key], digits, key) if reference.get(key) is not None else "" for key, _, digits in COLUMNS
        ]
        lines.append(f"| {LABELS['ground_truth']} | " + " | ".join(cells) + " |")
    level = round(100 * float(metrics.get("confidence", 0.95)))
    notes = [
        f"{metrics.get('tiles', '?')} {metrics.get('split', '?')} tiles; mean [{level}% bootstrap interval, "
        f"{resampled(metrics)}, {metrics.get('bootstrap_resamples', '?')} resamples]; reflectance /10^4 clipped "
        "to [0, 1]."
    ]
    if few_clusters_note(metrics):
        notes.append(few_clusters_note(metrics))
    if metrics.get("paired"):
        notes.append(significance_sentence(metrics))
    if metrics.get("lpips_status"):
        notes.append(str(metrics["lpips_status"]) + ".")
    if metrics.get("missing_variants"):
        notes.append(
            f"Not evaluated (store missing or variant switched off): {', '.join(metrics['missing_variants'])}."
        )
    if metrics.get("random_weights"):
        notes.append(
            f"RANDOM WEIGHTS ({', '.join(metrics.get('random_weight_variants', []))}): these numbers show the pipeline "
            "running end to end, not what TerraMind or Prithvi can do."
        )
    return "\n".join(lines) + "\n\n" + " ".join(notes)


def paired_table(metrics: dict[str, Any]) -> str:
    """Markdown: a row per comparison, a cell per metric: mean difference [interval], p-value (significant ones in
    bold)."""
    paired = metrics.get("paired") or {}
    if not paired:
        return "No paired comparison: a variant of every pair is missing."
    shown = [(key, label, digits) for key, label, digits in COLUMNS if any(key in per for per in paired.values())]
    lines = ["| a − b | " + " | ".join(label for _, label, _ in shown) + " |", "|" + "---|" * (len(shown) + 1)]
    for key, per_metric in paired.items():
        cells = []
        for name, _, digits in shown:
            r = per_metric.get(name)
            if r is None:
                cells.append("n/a")
                continue
            text = f"{r['diff']:+.{digits}f} [{r['lo']:+.{digits}f}, {r['hi']:+.{digits}f}], p={r['p']:.3f}"
            cells.append(f"**{text}**" if significant(r) else text)
        lines.append(f"| {PAIR_LABELS.get(key, key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def landcover_tables(metrics: dict[str, Any], key: str = "landcover") -> list[str]:
    """One small table per metric: a row per variant, a column per land-cover class (pixels of that class in the split);
    `key` "labels": per archive label (the pixels of the tiles that carry it)."""
    per_class = metrics.get(key) or {}
    if not per_class:
        return [
            "No land-cover layer in the tile store (set `data.landcover` to a raster, or use the demo), so no "
            "per-class breakdown."
        ]
    classes = list(per_class)
    variants = [n for n in ORDER if any(n in per_class[c] for c in classes)]
    intro = (
        (
            "Pixel-wise metrics over the split's pixels of each class (PSNR pools squared errors over the class's "
            "pixels "
            "and bands; SAM is the mean angle over them). SSIM, MS-SSIM, LPIPS and SAR-edge are windowed or "
            "image-level "
            "and are not split by class."
        )
        if key == "landcover"
        else (
            "The archive's labels are per patch, several at once: each column pools every pixel of the split's tiles "
            "whose patch carries that label (metrics as above)."
        )
    )
    out = [
        intro,
        "",
        "| pixels | " + " | ".join(classes) + " |",
        "|" + "---|" * (len(classes) + 1),
        "| count | " + " | ".join(str(next(iter(per_class[c].values()), {}).get("pixels", 0)) for c in classes) + " |",
        "",
    ]
    for name, label, digits in (
        ("psnr", "PSNR dB ↑", 2),
        ("sam_deg", "SAM ° ↓", 2),
        ("rmse", "RMSE (reflectance) ↓", 4),
    ):
        out += [f"**{label}**", "", "| variant | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
        for v in variants:
            out.append(
                f"| {v} | " + " | ".join(_cell(per_class[c].get(v, {}).get(name), digits, name) for c in classes) + " |"
            )
        out.append("")
    return out


def results_report(metrics: dict[str, Any]) -> str:
    """data/eval/report.md: the table, the paired comparisons, per-class tables, then what each number means."""
    from gac.metrics import CONVENTIONS

    prov = metrics.get("provenance", {})
    made_by = [
        f"- `{name}`: {p.get('model')}; weights {p.get('weights')}; params hash {p.get('params_hash')}"
        for name, p in prov.items()
    ]
    conventions = [f"- **{key}**: {text}" for key, text in CONVENTIONS.items()]
    level = round(100 * float(metrics.get("confidence", 0.95)))
    return "\n".join(
        [
            "# Evaluation",
            "",
            results_table(metrics),
            "",
            "## Paired comparisons",
            "",
            f"Mean per-tile difference a − b over the same tiles, its {level}% bootstrap interval, and the two-sided "
            "Wilcoxon "
            f"signed-rank p-value; bold where p < {ALPHA} and the interval excludes zero. For SAM and LPIPS lower is "
            "better. "
            f"Resampled: {resampled(metrics)}; "
            + (
                "the signed-rank test runs on each one's mean difference, as tiles of one are not independent."
                if metrics.get("bootstrap_unit", "tile") != "tile"
                else "the signed-rank test runs on the tiles."
            ),
            "",
            paired_table(metrics),
            "",
            "## Per land cover",
            "",
            *landcover_tables(metrics),
            "",
            *(["## Per archive label", "", *landcover_tables(metrics, "labels"), ""] if metrics.get("labels") else []),
            "## Distributions and pictures",
            "",
            "- `distributions.png`: a box plot per metric, a box per variant (quartiles, whiskers, mean as a "
            "triangle), every tile a point.",
            "- `contact_sheet.png`: per tile, S1 | variants | truth in true colour, then each variant's mean "
            "|prediction - truth| over "
            "the 12 bands on one fixed scale (gac.evaluate.quicklooks.ERROR_RANGE reflectance = brightest; white = no "
            "data).",
            "",
            "## Made by",
            "",
            *made_by,
            "",
            "## How each number is computed",
            "",
            *conventions,
            "",
        ]
    )


def read_results(path: Path) -> dict[str, Any]:
    """metrics.json with the details.json, provenance.json and landcover.json beside it: what `gac evaluate` returned.

    details.json holds every number metrics.json's headline holds and more (intervals, all paired comparisons), key by
    key, so it replaces the headline's entries; an evaluation from before details.json existed reads as it was written.
    """
    path = Path(path)
    if not path.is_file():
        raise GacError(f"{path}: metrics not found; run `gac evaluate` (or `dvc repro`) first")
    result = json.loads(path.read_text())
    for name in ("details.json", "provenance.json"):
        beside = path.with_name(name)
        if beside.is_file():
            result.update(json.loads(beside.read_text()))
    labels = path.with_name("labels.json")
    if labels.is_file():
        result["labels"] = json.loads(labels.read_text())
    landcover = path.with_name("landcover.json")
    if landcover.is_file():
        result["landcover"] = json.loads(landcover.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(results_table(read_results(Path(args[0]) if args else Path("data/eval/metrics.json"))))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GacError as exc:
        print(f"gac: error: {exc}", file=sys.stderr)
        sys.exit(2)
