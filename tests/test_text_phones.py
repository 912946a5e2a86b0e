"""Transcripts in training (``features.phones_text``): extract stores each transcribed file's phones
renamed with its words, the cache shows them with a source column of 1, training mixes them with
the recognised ones (``augment.text_phones``), and render sets the column when it has a transcript."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from koemorph.config import RenderConfig, load_config
from koemorph.data.manifest import build_manifest, load_manifest
from koemorph.features import phones as ph
from koemorph.model import build_model
from pipeline.extract import extract
from pipeline.render import render
from tests.checkpointkit import SMALL, save_untrained, widen
from tests.storekit import write_pair

pytest.importorskip("pocketsphinx")

TEXT = ["features.phones=true", "model.mel_bands=1", "features.egemaps=false"]
WORDS = {"train/spk0_000": "Bob bought a map by the pool.", "train/spk1_001": "Maybe."}


def _extract(root, cfg):
    build_manifest(root / "data", root / "m.jsonl", cfg.data)
    summary = extract(root / "m.jsonl", root / "features.zarr", cfg, workers=1)
    assert summary["error files"] == 0, summary
    return {r["id"]: r for r in map(json.loads, (root / "features.results.jsonl").open())}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    for i, (split, seconds) in enumerate([("train", 3.0), ("train", 2.0), ("val", 2.0)]):
        write_pair(root / "data", f"{split}/spk{i}_{i:03d}", seconds, seed=i)
    for rel, words in WORDS.items():
        (root / "data" / f"{rel}.txt").write_text(words + "\n")
    cfg = load_config(None, SMALL + TEXT)
    records = _extract(root, cfg)
    stats = json.loads((root / "features.stats.json").read_text())
    torch.manual_seed(0)
    model = widen(build_model(cfg.model, cfg.features), hidden_bias=True)
    ckpt = save_untrained(root / "model.pt", model, cfg, {"mel": stats["mel"], "ids": stats["ids"]})
    return {"root": root, "cfg": cfg, "records": records, "ckpt": ckpt, "store": root / "features.zarr"}


def test_extract_stores_renamed_phones_for_the_files_with_a_transcript(env):
    from koemorph.data.store import open_arrays
    from koemorph.features.transcript import transcript_phone_features
    from koemorph.io.audio import load_audio

    entries = {e.id: e for e in load_manifest(env["root"] / "m.jsonl")}
    assert entries["train__spk0_000"].transcript_path.endswith("train/spk0_000.txt")
    assert entries["val__spk2_002"].transcript_path is None
    has = {i: "phones_text" in r["arrays"] for i, r in env["records"].items()}
    assert has == {"train__spk0_000": True, "train__spk1_001": True, "val__spk2_002": False}
    samples = load_audio(env["root"] / "data/train/spk0_000.wav")
    want, _ = transcript_phone_features(samples, env["cfg"].features, WORDS["train/spk0_000"] + "\n")
    stored = open_arrays(env["store"], "train__spk0_000")
    assert np.array_equal(stored["phones_text"][:], want)
    assert not np.array_equal(want, stored["phones"][:])  # renamed: not the recognised phones


def test_an_edited_or_removed_transcript_redoes_that_array_only(env, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(env["root"], root)
    (root / "data/train/spk0_000.txt").write_text("Mop the deck.\n")
    (root / "data/train/spk1_001.txt").unlink()
    records = _extract(root, env["cfg"])
    assert records["train__spk0_000"]["computed"] == ["phones_text"]
    assert (
        records["train__spk1_001"]["computed"] == []
        and "phones_text" not in records["train__spk1_001"]["arrays"]
    )
    assert records["val__spk2_002"]["status"] == "cached"
    again = _extract(root, env["cfg"])
    assert {r["status"] for r in again.values()} == {"cached"}


def test_the_cache_shows_the_renamed_phones_with_source_1(env):
    from koemorph.data.cache import FeatureCache

    cache = FeatureCache(env["store"], use_egemaps=False, use_phones=True, use_text=True)
    assert cache.n_phones == 41 and cache.frame_pad[-1] == 0.0
    assert cache.has_text("train__spk0_000") and not cache.has_text("val__spk2_002")
    f = cache.load("train__spk0_000")
    mel, text = f["mel"], f["text"]
    assert mel.shape == text.shape == (mel.shape[0], 80 + 41)
    assert (mel[:, -1] == 0).all() and (text[:, -1] == 1).all()
    assert np.array_equal(mel[:, :80], text[:, :80]) and not np.array_equal(mel[:, 80:120], text[:, 80:120])
    lazy = FeatureCache(env["store"], use_egemaps=False, use_phones=True, use_text=True, in_memory=False)
    for name in ("mel", "text"):
        assert np.array_equal(
            lazy.slice("train__spk0_000", name, -5, 40), cache.slice("train__spk0_000", name, -5, 40)
        )
    assert "text" not in cache.load("val__spk2_002")
    # the cache a config's model reads (as the benchmarks open it): phones and their source column
    from_config = FeatureCache.for_features(env["store"], env["cfg"].features)
    assert from_config.n_phones == ph.input_columns(env["cfg"].features) == 41


def test_phone_swap_draws_phones_never_the_source_column(env):
    """``augment.phone_swap`` redraws speech segments among the 40 phone shares only: the source
    column stays 0 and every swapped row is one phone."""
    from koemorph.config import AugmentConfig
    from koemorph.data.cache import FeatureCache
    from koemorph.training.augment import augment_batch

    cache = FeatureCache.for_features(env["store"], env["cfg"].features)
    frames = torch.as_tensor(cache.load("train__spk0_000")["mel"][None].repeat(8, 0))
    off = {"shift_bins": 0, "gain_db": 0.0, "tilt_db": 0.0, "egemaps_noise": 0.0, "text_phones": 0.0}
    swap = AugmentConfig(**off, phone_swap=1.0)
    out = augment_batch({"mel": frames}, np.random.default_rng(0), swap, cache)
    shares, source = out["mel"][..., 80:120], out["mel"][..., 120]
    assert (source == 0).all() and torch.allclose(shares.sum(-1), torch.ones(1))
    assert not torch.equal(shares, frames[..., 80:120])  # segments were redrawn


def test_training_shows_each_row_one_source_drawn_from_the_seed(env):
    from koemorph.data.cache import FeatureCache
    from koemorph.training.augment import use_text
    from koemorph.training.batches import BlockDataset, collate
    from koemorph.training.sampling import Block

    cache = FeatureCache(env["store"], use_egemaps=False, use_phones=True, use_text=True)
    data = BlockDataset(cache, ["train__spk0_000", "val__spk2_002"], 10, 3, 1)
    items = [
        data[Block(file=f, start=5, span=4, positions=(0, 1, 2, 3), mask=(True,) * 4, dense=True)]
        for f in (0, 1, 0, 1)
    ]
    assert np.array_equal(items[1]["text"], items[1]["mel"])  # no transcript: the recognised phones
    batch = collate(items * 4)
    picked = use_text(batch["mel"], batch["text"], np.random.default_rng(3), 0.5, 80)
    from_text = picked[:, -1, -1] == 1  # the source column of the window's last frame (in the file)
    assert 0 < int(from_text[::2].sum()) < 8 and not from_text[1::2].any()  # only rows of a transcribed file
    assert torch.equal(picked[from_text], batch["text"][from_text]) and torch.equal(
        picked[~from_text], batch["mel"][~from_text]
    )
    half = use_text(
        batch["mel"][8:], batch["text"][8:], np.random.default_rng(3), 0.5, 80, (np.arange(8, 16), 16)
    )
    assert torch.equal(half, picked[8:])  # a rank's rows draw as in the whole batch
    assert torch.equal(use_text(batch["mel"], batch["text"], np.random.default_rng(3), 0.0, 80), batch["mel"])


def test_render_sets_the_source_column_when_it_has_a_transcript(env, tmp_path):
    from koemorph.data.cache import FeatureCache
    from koemorph.inference.stream import Streamer
    from koemorph.io.audio import load_audio
    from koemorph.io.tracks import read_track
    from koemorph.model.infer import predict_file
    from koemorph.training.checkpoint import load_model

    data = env["root"] / "data"
    told = render(data, tmp_path / "told", str(env["ckpt"]), workers=0, store=env["store"])
    plain = render(
        data, tmp_path / "plain", str(env["ckpt"]), workers=0, post=RenderConfig(transcripts=False)
    )
    assert told["files with a transcript"] == 2 and plain["ok files"] == 3
    model, _ = load_model(env["ckpt"])
    cache = FeatureCache(env["store"], use_egemaps=False, use_phones=True, use_text=True)
    f = cache.load("train__spk0_000")
    for out, frames in (("told", f["text"]), ("plain", f["mel"])):
        want = predict_file(model, frames, None, 30, pad_mel=cache.frame_pad)
        got = read_track(tmp_path / out / "train/spk0_000.jsonl").values
        assert np.abs(got - want).max() <= 2e-5, out
    assert np.abs(f["text"][:, 80:] - f["mel"][:, 80:]).max() == 1.0  # the two inputs differ
    streamer = Streamer.from_checkpoint(env["ckpt"])  # a stream has no transcript: source 0
    audio = load_audio(data / "train/spk0_000.wav")
    streamed = np.concatenate([streamer.push(audio).values, streamer.flush().values])
    assert streamed.shape == got.shape and np.isfinite(streamed).all()


def test_a_short_run_trains_on_both_and_old_models_keep_40_columns(env, tmp_path):
    from koemorph.training.checkpoint import load_model
    from koemorph.training.loop import train

    cfg = load_config(None, SMALL + TEXT + ["train.epochs=1", "augment.text_phones=1.0"])
    res = train(cfg, env["store"], out_dir=tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    model, meta = load_model(res["last"])
    assert meta["config"].features.phones_text and model.n_phones == ph.NUM_PHONES + 1
    plain = load_config(None, SMALL + TEXT + ["features.phones_text=false"])
    assert build_model(plain.model, plain.features).n_phones == ph.NUM_PHONES
