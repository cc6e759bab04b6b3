"""The initial-state cache (gac.init_cache): a cached build is the plain build, byte for byte, and a cache that does
not fit is rebuilt."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from gac import init_cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GAC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(init_cache.SWITCH, "1")
    return tmp_path / "cache" / "init"


def assert_same_tensors(a: nn.Module, b: nn.Module) -> None:
    """Every parameter and buffer (non-persistent too): same names, values, dtypes and memory layout."""
    sa, sb = init_cache.initial_state(a), init_cache.initial_state(b)
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and sa[key].stride() == sb[key].stride(), key
        assert torch.equal(sa[key], sb[key]), key


class Toy(nn.Module):
    """Shared parameter, non-persistent buffer, and a random draw after the parameters."""

    def __init__(self, width=4):
        super().__init__()
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, width)
        self.b.weight = self.a.weight
        self.register_buffer("table", torch.arange(width, dtype=torch.float32) * 0.5, persistent=False)


def seeded_toy(width=4, seed=0):
    def build():
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return Toy(width)

    return build


def test_a_cached_toy_is_the_plain_one_shared_parameters_and_all(cache):
    identity = {"name": "toy", "seed": 0}
    first = init_cache.cached_build(seeded_toy(), identity)
    assert len(list(cache.iterdir())) == 1
    second = init_cache.cached_build(seeded_toy(), identity)
    plain = seeded_toy()()
    assert_same_tensors(second, plain)
    assert_same_tensors(first, plain)
    assert second.b.weight is second.a.weight  # still one parameter
    assert not any(p.is_meta for p in second.parameters())
    x = torch.ones(2, 4)
    assert torch.equal(second.b(second.a(x)), plain.b(plain.a(x)))


def test_deterministic_mode_neither_changes_a_cached_build_nor_stays_changed(cache):
    """In deterministic mode torch.empty fills memory with NaNs: the meta build turns that off while it runs (it would
    write every parameter once) and back on after."""
    import torch.utils.deterministic

    identity = {"name": "toy", "seed": 0}
    init_cache.cached_build(seeded_toy(), identity)
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.utils.deterministic.fill_uninitialized_memory
        with init_cache._empty_parameters():
            assert not torch.utils.deterministic.fill_uninitialized_memory  # no NaNs written into parameters-to-be
        assert_same_tensors(init_cache.cached_build(seeded_toy(), identity), seeded_toy()())
        assert torch.utils.deterministic.fill_uninitialized_memory
    finally:
        torch.use_deterministic_algorithms(False)


def test_other_identity_other_file_and_the_switch_writes_nothing(cache, monkeypatch):
    paths = {init_cache.cache_path({"name": "toy", "seed": s, "width": w}) for s in (0, 1) for w in (4, 8)}
    assert len(paths) == 4
    init_cache.cached_build(seeded_toy(), {"name": "toy", "seed": 0})
    init_cache.cached_build(seeded_toy(seed=1), {"name": "toy", "seed": 1})
    assert len(list(cache.iterdir())) == 2
    monkeypatch.setenv(init_cache.SWITCH, "0")
    init_cache.cached_build(seeded_toy(seed=2), {"name": "toy", "seed": 2})
    assert len(list(cache.iterdir())) == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other shapes"])
def test_a_damaged_cache_file_is_rebuilt_with_one_line(cache, caplog, damage):
    identity = {"name": "toy", "seed": 0}
    init_cache.cached_build(seeded_toy(), identity)
    path = init_cache.cache_path(identity)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a torch file" * 100)
    else:  # a file another build wrote under this name
        torch.save({"tensors": init_cache.initial_state(seeded_toy(width=8)()), "rng": None}, path)
    with caplog.at_level(logging.WARNING, logger="gac.init_cache"):
        rebuilt = init_cache.cached_build(seeded_toy(), identity)
    lines = [r for r in caplog.records if r.name == "gac.init_cache"]
    assert len(lines) == 1 and "rebuilding" in lines[0].getMessage() and str(path) in lines[0].getMessage()
    assert_same_tensors(rebuilt, seeded_toy()())
    assert_same_tensors(init_cache.cached_build(seeded_toy(), identity), rebuilt)  # the file is whole again


def test_continues_rng_leaves_the_rng_where_a_plain_build_leaves_it(cache):
    def draws_after(build_way):
        torch.manual_seed(5)
        build_way()
        return torch.rand(3)

    build = lambda: Toy(16)  # noqa: E731  (draws from the caller's seeded RNG)
    plain = draws_after(build)
    identity = {"name": "toy-rng"}
    missed = draws_after(lambda: init_cache.cached_build(build, identity, continues_rng=True))
    hit = draws_after(lambda: init_cache.cached_build(build, identity, continues_rng=True))
    assert torch.equal(plain, missed) and torch.equal(plain, hit)


def test_cached_terramind_tiny_equals_the_plain_build_and_generates_the_same(cache, monkeypatch):
    from gac.terramind import Decoding, build_generator, generate

    args = ("terramind_v1_tiny_generate", ["S1RTC"], "random")
    monkeypatch.setenv(init_cache.SWITCH, "0")
    plain = build_generator(*args, tile_size=32, seed=3)
    monkeypatch.setenv(init_cache.SWITCH, "1")
    build_generator(*args, tile_size=32, seed=3)  # writes the cache
    assert len(list(cache.iterdir())) == 1
    cached = build_generator(*args, tile_size=32, seed=3)  # reads it
    assert_same_tensors(cached, plain)
    assert list(cached.state_dict()) == list(plain.state_dict())
    mae = cached.sampler.model
    key = "tok_sen2l2a@224"
    assert mae.encoder_embeddings[key].mod_emb is mae.decoder_embeddings[key].mod_emb  # shared as in pre-training
    assert cached.gac_weights.kind == "random"
    s1 = torch.linspace(-25, 0, 2 * 32 * 32).reshape(1, 2, 32, 32)
    decoding = Decoding(timesteps=1)
    out_cached = generate(cached, {"S1RTC": s1}, [11], decoding)
    out_plain = generate(plain, {"S1RTC": s1}, [11], decoding)
    assert torch.equal(out_cached, out_plain)
    other = init_cache.cache_path({"name": args[0], "inputs": ["S1RTC"], "tile_size": 32, "seed": 4, "code": "x"})
    assert not other.exists()


def test_cached_prithvi_equals_the_plain_build_with_a_band_it_never_saw(cache, monkeypatch, tmp_path):
    from gac.refine.backbone import build_backbone

    name, channels = "prithvi_eo_v2_tiny_tl", ["B02", "B03", "B04", "B8A", "B11", "B12"]
    monkeypatch.setenv(init_cache.SWITCH, "0")
    pretrained, _ = build_backbone(name, "random", channels)
    checkpoint = tmp_path / "prithvi.pt"
    torch.save(pretrained.state_dict(), checkpoint)
    plain, _ = build_backbone(name, str(checkpoint), [*channels, "VV"])  # VV's patch-embedding channel drawn at load
    monkeypatch.setenv(init_cache.SWITCH, "1")
    missed, _ = build_backbone(name, str(checkpoint), [*channels, "VV"])
    hit, _ = build_backbone(name, str(checkpoint), [*channels, "VV"])
    assert len(list(cache.iterdir())) == 1
    for model in (missed, hit):
        assert_same_tensors(model, plain)
    x = torch.linspace(0, 1, 7 * 32 * 32).reshape(1, 7, 1, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(hit(x), plain(x)))


def test_the_size_cap_removes_the_least_recently_used_states_first(cache, monkeypatch):
    """Three Toy states of ~1 KiB each under a cap of 2.5 of them: writing the third removes the one used longest
    ago (the second: the first was read after the second was written), never the one just written."""
    import os

    paths = []
    for width in (16, 17, 18):
        torch.manual_seed(0)
        init_cache.cached_build(lambda: Toy(width), {"name": "toy", "width": width})
        paths.append(init_cache.cache_path({"name": "toy", "width": width}))
        os.utime(paths[-1], (1000 + width, 1000 + width))  # distinct ages, oldest first
        if width == 17:
            first = paths[0].stat().st_size
            monkeypatch.setenv(init_cache.LIMIT, str(2.5 * first / 2**30))
            init_cache.cached_build(lambda: Toy(16), {"name": "toy", "width": 16})  # read: the first is now newest
    assert paths[0].exists() and not paths[1].exists() and paths[2].exists()
