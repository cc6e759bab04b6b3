"""What `gac train-baseline` leaves in `data/baseline/`, and the one way to load it.

- `model.safetensors`  every tensor of the U-Net (normalisation buffers included)
- `baseline.json`      the config it was built from, the training split's statistics, training summary

`load_baseline` is the entry point for anything that translates with the
baseline (`gac predict-baseline`, `gac translate --until baseline`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gac.data.store import write_whole
from gac.errors import GacError

MODEL_FILE = "model.safetensors"
RECORD_FILE = "baseline.json"


def build_net(record: dict[str, Any]):
    """The U-Net described by a record (config + statistics); weights as initialised."""
    from gac.baseline.model import BaselineUNet

    config, stats = record["config"], record["statistics"]
    return BaselineUNet(
        config["channels"],
        config["depth"],
        config["dropout"],
        stats["s1_mean"],
        stats["s1_std"],
        stats["s2_mean"],
        stats["s2_std"],
    )


def save_baseline(net, out_dir: Path, record: dict[str, Any]) -> Path:
    """Weights and record under a temporary name, renamed into place when both are written."""
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp / MODEL_FILE))
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")

    return write_whole(out_dir, fill)


def write_disabled(out_dir: Path, live_dir: Path) -> None:
    """`baseline.enabled: false`: a record saying so (DVC expects the outs to exist), and no model."""
    out_dir, live_dir = Path(out_dir), Path(live_dir)
    live_dir.mkdir(parents=True, exist_ok=True)
    (live_dir / "metrics.json").write_text(json.dumps({"enabled": False}) + "\n")
    write_whole(
        out_dir,
        lambda tmp: (tmp / RECORD_FILE).write_text(
            json.dumps({"stage": "baseline", "enabled": False}, indent=2) + "\n"
        ),
    )


def read_record(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / RECORD_FILE
    if not path.is_file():
        raise GacError(
            f"{model_dir}: no trained baseline here ({RECORD_FILE} missing); run `gac train-baseline` (dvc repro "
            "train-baseline)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise GacError(f"{path}: not valid JSON; re-run `gac train-baseline`") from None


def load_baseline(model_dir: Path):
    """(the trained U-Net in eval mode, its record). Strict: every tensor of the file must fit the network.

    The module's forward takes S1 in dB, (B, 2, H, W) float32 with H and W
    multiples of 2^depth (NaN allowed, it comes back NaN), and returns
    reflectance x 10^4, (B, 12, H, W), bands B01..B12 without B10.
    """
    from gac.weights import load_strict, read_state_dict

    model_dir = Path(model_dir)
    record = read_record(model_dir)
    if record.get("enabled") is False:
        raise GacError(
            f"{model_dir}: the baseline was not trained (baseline.enabled is false); set baseline.enabled: true and "
            "re-run train-baseline"
        )
    weights = model_dir / MODEL_FILE
    if not weights.is_file():
        raise GacError(f"{weights}: baseline weights missing; re-run `gac train-baseline`")
    net = build_net(record)
    load_strict(net, read_state_dict(weights), weights, "the baseline U-Net")
    net.eval()
    return net, record
