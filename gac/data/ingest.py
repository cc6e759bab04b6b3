"""The scenes the pipeline starts from: generated demo pairs, or a checked copy of the user's directory.

Copying real pairs under data/scenes lets DVC hash and version exactly what was
tiled; the check happens here so a broken pair fails before anything is copied.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gac import __version__
from gac.data.readers import Inputs, reference_file
from gac.data.scenes import find_pairs, read_pair
from gac.data.store import partial_path, replace_dir
from gac.digest import json_digest
from gac.data.archive import parse_source, write_catalogue


def prepare_scenes(params, out: Path) -> dict:
    out = Path(out)
    tmp = partial_path(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    if params.data.source == "demo":
        from gac.data.synth import write_demo

        names = write_demo(tmp, params.seed, params.data.demo_scenes, params.data.demo_size)
        source = "demo (synthetic, procedural land cover)"
    elif parse_source(params.data.source):  # an archive read where it lies: a catalogue, not a copy
        names, source = write_catalogue(params, tmp, *parse_source(params.data.source))
    else:
        root = Path(params.data.source)
        pairs = find_pairs(root)
        for pair in pairs:  # every pair checked (files, units, offset) before anything is copied: no half-written copy
            read_pair(pair, params.tile.reproject, Inputs.from_params(params.data))
        for pair in pairs:
            for path in pair.files:  # in the source's own layout (stacks, VV/VH files, band folders): read the same
                target = tmp / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        names = [pair.name for pair in pairs]
        source = str(Path(params.data.source).resolve())
        if params.data.landcover:
            from gac.data.landcover import resample_onto, scene_path

            for pair in pairs:
                resample_onto(Path(params.data.landcover), reference_file(pair.s2), scene_path(tmp, pair.name),
                              params.data.landcover_classes)
    manifest = {"gac_version": __version__, "source": source, "scenes": names,
                # the keys dvc.yaml gives `synth` (data.max_tiles is the tile stage's)
                "params_hash": json_digest({"seed": params.seed, "data": params.data.model_dump(mode="json", exclude={"max_tiles"})})}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    replace_dir(tmp, out)
    return {"scenes": len(names), "source": source}
