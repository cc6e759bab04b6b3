"""A Markdown results table from data/eval/metrics.json, for the README and the terminal.

`python -m gac.evaluate.report [data/eval/metrics.json]` prints the table the
README's results section pastes, with the random-weights caveat when it applies,
so the README's numbers always come from a real run.
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
COLUMNS = (("psnr", "PSNR dB ↑", 2), ("ssim", "SSIM ↑", 3), ("ms_ssim", "MS-SSIM ↑", 3), ("sam_deg", "SAM ° ↓", 2), ("lpips", "LPIPS ↓", 3), ("sar_edge", "SAR-edge ↑", 3))


def _cell(value: Any, digits: int, name: str) -> str:
    if value is None:
        return "∞" if name == "psnr" else "n/a"
    return f"{value:.{digits}f}"


def results_table(metrics: dict[str, Any]) -> str:
    """Markdown: a row per variant (and the ground truth's SAR-edge reference), a column per headline metric."""
    header = "| variant | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name in [n for n in ORDER if n in metrics]:
        row = metrics[name]
        lines.append(f"| {LABELS[name]} | " + " | ".join(_cell(row.get(key), digits, key) for key, _, digits in COLUMNS) + " |")
    reference = metrics.get("ground_truth", {}).get("sar_edge")
    if reference is not None:
        lines.append(f"| {LABELS['ground_truth']} | " + " | ".join("" for _ in COLUMNS[:-1]) + f" | {reference:.3f} |")
    notes = [f"{metrics.get('tiles', '?')} {metrics.get('split', '?')} tiles; reflectance /10^4 clipped to [0, 1]."]
    if metrics.get("lpips_status"):
        notes.append(str(metrics["lpips_status"]) + ".")
    if metrics.get("missing_variants"):
        notes.append(f"Not evaluated (store missing or variant switched off): {', '.join(metrics['missing_variants'])}.")
    if metrics.get("random_weights"):
        notes.append(
            f"RANDOM WEIGHTS ({', '.join(metrics.get('random_weight_variants', []))}): these numbers show the pipeline "
            "running end to end, not what TerraMind or Prithvi can do."
        )
    return "\n".join(lines) + "\n\n" + " ".join(notes)


def results_report(metrics: dict[str, Any]) -> str:
    """data/eval/report.md: the table, then what each number means (gac.metrics.CONVENTIONS)."""
    from gac.metrics import CONVENTIONS

    prov = metrics.get("provenance", {})
    made_by = [f"- `{name}`: {p.get('model')}; weights {p.get('weights')}; params hash {p.get('params_hash')}" for name, p in prov.items()]
    conventions = [f"- **{key}**: {text}" for key, text in CONVENTIONS.items()]
    return "\n".join(
        ["# Evaluation", "", results_table(metrics), "", "## Made by", "", *made_by, "", "## How each number is computed", "", *conventions, ""]
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise GacError("usage: python -m gac.evaluate.report METRICS_JSON (the pipeline writes data/eval/metrics.json)")
    path = Path(args[0])
    if not path.is_file():
        raise GacError(f"{path}: metrics not found; run `gac evaluate` (or `dvc repro`) first")
    print(results_table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GacError as exc:
        print(f"gac: error: {exc}", file=sys.stderr)
        sys.exit(2)
