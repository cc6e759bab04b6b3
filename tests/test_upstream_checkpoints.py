"""`weights: <dir>` with files laid out as upstream's hub files (built by terratorch, not by GAC): stages 1, 2 and 3."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.upstream_checkpoints import prithvi_hub_state, tokenizer_hub_state, write_terramind_dir

NAME = "terramind_v1_tiny_generate"
TILE = 32


@pytest.fixture(scope="module")
def tokenizer_state():
    return tokenizer_hub_state()


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory, tokenizer_state):
    return write_terramind_dir(tmp_path_factory.mktemp("hub"), NAME, tokenizer_state)


@pytest.mark.parametrize(("inputs", "key"), [(["S1RTC"], "stage1.weights"), (["S1RTC", "S2L2A"], "stage3.weights")])
def test_terramind_hub_files_load_whole_for_stage1_and_stage3(hub_dir, tokenizer_state, inputs, key):
    from gac.terramind import TOKENIZER_FILE, TOKENS_KEY, build_generator, hub_files

    hub = torch.load(hub_dir / hub_files(NAME)[1], weights_only=True)
    model = build_generator(NAME, inputs, str(hub_dir), tile_size=TILE, key=key)
    assert model.gac_token_feedback is True and model.gac_weights.provenance()["random_weights"] is False
    own = model.sampler.model.state_dict()
    # every tensor the model holds came from the file (the position tables are rebuilt for the tile size) ...
    for name, value in own.items():
        if not name.endswith("pos_emb"):
            assert torch.equal(value, hub[name]), name
    # ... including the S2L2A token embedding iterative decoding feeds tokens back through
    assert f"encoder_embeddings.{TOKENS_KEY}.token_emb.weight" in own
    # ... and the file's other pre-training modalities were skipped, not loaded somewhere
    assert "encoder_embeddings.tok_lulc@224.token_emb.weight" in hub and not any("lulc" in k for k in own)
    if "S2L2A" in inputs:
        assert torch.equal(
            own["encoder_embeddings.untok_sen2l2a@224.proj.weight"],
            hub["encoder_embeddings.untok_sen2l2a@224.proj.weight"],
        )
    for name, value in model.tokenizer[TOKENS_KEY].state_dict().items():
        assert torch.equal(value, tokenizer_state[name]), name
    assert (hub_dir / TOKENIZER_FILE).is_file()


def test_iterative_decoding_uses_the_files_token_embedding(hub_dir):
    from gac.terramind import Decoding, build_generator, sample_tokens

    model = build_generator(NAME, ["S1RTC"], str(hub_dir), tile_size=TILE)
    s1 = torch.randn(2, 2, TILE, TILE, generator=torch.Generator().manual_seed(0)) * 3 - 12
    one = sample_tokens(model, {"S1RTC": s1}, [1, 2], Decoding(decoding_steps=1, temperature=0.0))
    four = sample_tokens(model, {"S1RTC": s1}, [1, 2], Decoding(decoding_steps=4, temperature=0.0))
    assert not torch.equal(one, four)  # the tokens fed back change what is predicted next


def test_a_file_without_the_token_embedding_decodes_in_one_step_and_says_so(tmp_path, tokenizer_state, caplog):
    from gac.terramind import Decoding, build_generator, sample_tokens

    directory = write_terramind_dir(tmp_path / "no-feedback", NAME, tokenizer_state, drop_token_feedback=True)
    with caplog.at_level(logging.WARNING, logger="gac.terramind"):
        model = build_generator(NAME, ["S1RTC"], str(directory), tile_size=TILE)
        said = [r.getMessage() for r in caplog.records if "no S2L2A token embedding" in r.getMessage()]
        assert len(said) == 1 and "\n" not in said[0] and str(directory) in said[0]
        assert model.gac_token_feedback is False
        s1 = torch.randn(1, 2, TILE, TILE, generator=torch.Generator().manual_seed(0)) * 3 - 12
        four = sample_tokens(model, {"S1RTC": s1}, [5], Decoding(decoding_steps=4, temperature=0.0))
        one = sample_tokens(model, {"S1RTC": s1}, [5], Decoding(decoding_steps=1, temperature=0.0))
    assert torch.equal(four, one)
    assert any("decoding_steps 4 -> 1" in r.getMessage() for r in caplog.records)


def test_prithvi_hub_file_loads_strictly_into_stage2s_backbone(tmp_path):
    from gac.data.store import PRITHVI_BANDS
    from gac.refine.backbone import build_backbone

    state = prithvi_hub_state("prithvi_eo_v2_tiny_tl")
    assert any(k.startswith("decoder.") for k in state)  # the whole MAE, as pre-training saved it
    torch.save(state, tmp_path / "Prithvi_EO_V2_tiny_TL.pt")
    model, weights = build_backbone("prithvi_eo_v2_tiny_tl", str(tmp_path), list(PRITHVI_BANDS))
    assert weights.provenance()["random_weights"] is False
    for name, value in model.state_dict().items():
        if "pos_embed" not in name:
            assert torch.equal(value, state[f"encoder.{name}"]), name
