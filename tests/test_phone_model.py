"""The phone input end to end: extracted into the store, read by the cache as the model's frame
input, trained on, rendered (from the store and recomputed), packaged with a model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from koemorph.config import load_config
from koemorph.errors import InputError
from koemorph.features import phones as ph
from koemorph.model import build_model
from koemorph.training.checkpoint import load_model
from pipeline.render import render
from tests.checkpointkit import SMALL, save_untrained, widen
from tests.storekit import build_store

pytest.importorskip("pocketsphinx")

# phone models without the source column of a transcript (as the bundled ones): see test_text_phones.py
PHONES = ["features.phones=true", "model.mel_bands=1", "features.phones_text=false"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("phones")
    store = build_store(root, [("train", 3.0), ("train", 2.0), ("val", 2.0)], overrides=PHONES)
    stats = json.loads((root / "features.stats.json").read_text())
    cfg = load_config(None, SMALL + PHONES + ["features.egemaps=false"])
    torch.manual_seed(0)
    model = widen(build_model(cfg.model, cfg.features), hidden_bias=True)
    ckpt = save_untrained(root / "model.pt", model, cfg, {"mel": stats["mel"], "ids": stats["ids"]})
    return {"root": root, "store": store, "ckpt": ckpt, "data": root / "data"}


def test_the_cache_appends_phone_shares_to_the_mel(env):
    from koemorph.data.cache import FeatureCache

    cache = FeatureCache(env["store"], use_egemaps=False, use_phones=True)
    plain = FeatureCache(env["store"], use_egemaps=False)
    fid = "train__spk0_000"
    frames, mel = cache.load(fid)["mel"], plain.load(fid)["mel"]
    assert cache.n_phones == 40 and frames.shape == (mel.shape[0], 80 + 40)
    assert np.array_equal(frames[:, :80], mel) and np.allclose(frames[:, 80:].sum(1), 1.0)
    assert np.array_equal(cache.frame_pad, np.concatenate([plain.mel_pad, ph.silence_row()]))
    n = frames.shape[0]
    window = cache.slice(fid, "mel", n - 5, n + 5)
    assert np.array_equal(window[:5], frames[-5:]) and (window[5:] == cache.frame_pad).all()
    lazy = FeatureCache(env["store"], use_egemaps=False, use_phones=True, in_memory=False)
    assert np.array_equal(lazy.slice(fid, "mel", -3, 40), cache.slice(fid, "mel", -3, 40))


def test_a_store_without_phones_is_named(tmp_path):
    from koemorph.data.cache import FeatureCache

    store = build_store(tmp_path, [("train", 1.0)], overrides=["features.phones=false"])
    with pytest.raises(InputError, match="no phones array: extract with features.phones=true") as info:
        FeatureCache(store, use_egemaps=False, use_phones=True)
    assert "train__spk0_000" in str(info.value)


def test_rendered_values_are_the_model_on_the_training_frames(env, tmp_path):
    from koemorph.data.cache import FeatureCache
    from koemorph.io.tracks import read_track
    from koemorph.model.infer import predict_file

    computed, stored = tmp_path / "computed", tmp_path / "stored"
    render(env["data"], computed, str(env["ckpt"]), workers=0)
    render(env["data"], stored, str(env["ckpt"]), workers=0, store=env["store"])
    model, _ = load_model(env["ckpt"])
    cache = FeatureCache(env["store"], use_egemaps=False, use_phones=True)
    f = cache.load("train__spk0_000")
    want = predict_file(model, f["mel"], None, 30, pad_mel=cache.frame_pad)
    for out in (stored, computed):
        got = read_track(out / "train/spk0_000.jsonl").values
        assert got.shape == want.shape and np.abs(got - want).max() <= 2e-5
    silent = f["mel"].copy()
    silent[:, 80:] = ph.silence_row()
    no_phones = predict_file(model, silent, None, 30, pad_mel=cache.frame_pad)
    assert np.abs(no_phones - want).max() > 1e-3  # the phones reach the output


def test_a_short_run_trains_on_phones_and_renders(env, tmp_path):
    from koemorph.training.loop import train

    cfg = load_config(None, SMALL + PHONES + ["features.egemaps=false", "train.epochs=1"])
    res = train(cfg, env["store"], out_dir=tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    model, meta = load_model(res["last"])
    assert meta["config"].features.phones and model.mel_stream.groups == 2 and model.n_phones == 40
    summary = render(env["data"], tmp_path / "r", str(res["last"]), workers=0, store=env["store"])
    assert summary["ok files"] == 3 and summary["error files"] == 0


def test_phones_alone_need_no_mel_bands():
    cfg = load_config(None, SMALL + PHONES + ["model.mel_bands=0", "model.mel_summary=0"])
    model = build_model(cfg.model, cfg.features).eval()
    spans = model.spans
    frames = torch.zeros(1, 6 + spans.context - 1 + spans.lookahead, 120)
    frames[..., 80 + ph.PHONE_INDEX["M"]] = 1.0
    out = model(frames, None, torch.arange(6)[None])["blendshapes"]
    assert out.shape == (1, 6, 52) and model.mel_stream.groups == 1
    mel_moved = frames.clone()
    mel_moved[..., :80] = 5.0
    assert torch.equal(model(mel_moved, None, torch.arange(6)[None])["blendshapes"], out)  # mel unread


def test_a_phone_model_streams_its_frames_as_phones_are_decided(env, tmp_path):
    import soundfile as sf

    from koemorph.inference.stream import Streamer
    from koemorph.io.tracks import read_track

    audio, _ = sf.read(env["data"] / "train/spk0_000.wav", dtype="float32")
    streamer = Streamer.from_checkpoint(env["ckpt"])
    parts = [streamer.push(audio[a : a + 528]) for a in range(0, audio.size, 528)]  # 33 ms chunks
    early = sum(len(p) for p in parts)
    parts.append(streamer.flush())
    values = np.concatenate([p.values for p in parts])
    render(env["data"], tmp_path / "r", str(env["ckpt"]), workers=0)
    rendered = read_track(tmp_path / "r/train/spk0_000.jsonl").values
    assert values.shape == rendered.shape and np.isfinite(values).all()
    assert [p.start for p in parts] == list(np.cumsum([0] + [len(p) for p in parts[:-1]]))
    assert early >= 0.5 * len(values)  # frames come while the audio plays, not all at the end


@pytest.mark.parametrize("chunk_s", [0.01, 0.033, 0.1, 1.0])
def test_a_live_phone_model_streams_exactly_its_rendered_frames(env, tmp_path, chunk_s):
    """``features.phones_decoding: live``: render computes the phones a stream decodes, so streaming
    in any chunks gives render's frames; the second utterance too (the decoder's mean starts over)."""
    import soundfile as sf

    from koemorph.inference.stream import Streamer
    from koemorph.io.tracks import read_track
    from tests.test_phones import speak

    live = SMALL + PHONES + ["features.egemaps=false", "features.phones_decoding=live"]
    cfg = load_config(None, live)
    torch.manual_seed(0)
    model = widen(build_model(cfg.model, cfg.features), hidden_bias=True)
    stats = json.loads((env["root"] / "features.stats.json").read_text())
    ckpt = save_untrained(tmp_path / "live.pt", model, cfg, {"mel": stats["mel"], "ids": stats["ids"]})
    (tmp_path / "in").mkdir()
    x = speak("Bob met a maple man by the pool.")[0]
    sf.write(tmp_path / "in" / "a.wav", x, 16_000, subtype="FLOAT")
    render(tmp_path / "in", tmp_path / "out", str(ckpt), workers=0)
    want = read_track(tmp_path / "out" / "a.jsonl").values
    streamer, n = Streamer.from_checkpoint(ckpt), round(chunk_s * 16_000)
    for _ in range(2):
        parts = [streamer.push(x[a : a + n]).values for a in range(0, x.size, n)]
        got = np.concatenate([*parts, streamer.flush().values])
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
    assert np.ptp(want, axis=0).max() > 0.05  # the outputs move: the comparison means something


def test_package_model_writes_a_card_that_model_info_prints(env, tmp_path):
    from cli.main import app
    from koemorph.inference.bundled import describe

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    voices = {f"spk{i}": {"engine": "espeak", "synth_voice": f"en+v{i}", "gender": "f"} for i in range(3)}
    origin = {f"spk{i}_{i:03d}": {"engine": "espeak", "voice": f"spk{i}"} for i in range(3)}
    meta = {"engines": ["espeak"], "minutes": 0.1, "seed": 0, "voices": voices, "origin": origin}
    (corpus / "corpus.json").write_text(json.dumps(meta))
    fold = {"engine": "espeak", "methods": {"model": {"lip r": 0.61}, "ridge": {"lip r": 0.33}}}
    (tmp_path / "scores.json").write_text(json.dumps([fold]))
    out = tmp_path / "release.pt"
    runner = CliRunner()
    args = ["package-model", str(env["ckpt"]), "--corpus", str(corpus), "-o", str(out)]
    result = runner.invoke(app, [*args, "--scores", str(tmp_path / "scores.json")])
    assert result.exit_code == 0, result.output
    card = describe(out)
    assert [v["voice"] for v in card["data"]["voices"]] == ["spk0", "spk1"]  # the train split's voices
    assert card["inputs"] == ["log-mel", "phones (adapted)"] and "MIT" in card["licence"]
    assert "optimizer" not in torch.load(out, weights_only=True)
    printed = runner.invoke(app, ["model-info", "--model", str(out)])
    assert printed.exit_code == 0 and "spk1" in printed.output and "0.610" in printed.output
    plain = runner.invoke(app, ["model-info", "--model", str(env["ckpt"])])
    assert plain.exit_code == 0 and "no model card" in plain.output
    missing = runner.invoke(app, ["model-info", "--model", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "nope.pt: no such checkpoint file" in missing.output
    renders = render(env["data"], tmp_path / "r", str(out), workers=0)
    assert renders["ok files"] == 3


def test_the_onnx_runtime_renders_a_phone_model_as_torch_does(env, tmp_path):
    pytest.importorskip("onnxruntime")
    from koemorph.io.tracks import read_track

    outs = {}
    for runtime in ("torch", "onnx"):
        summary = render(env["data"], tmp_path / runtime, str(env["ckpt"]), workers=0, runtime=runtime)
        assert summary["ok files"] == 3, summary
        outs[runtime] = read_track(tmp_path / runtime / "train/spk0_000.jsonl").values
    assert np.abs(outs["onnx"] - outs["torch"]).max() <= 1e-4


def test_render_names_the_phones_with_a_transcript_beside_the_audio(env, tmp_path):
    import shutil

    from koemorph.config import RenderConfig
    from koemorph.inference.manifest import read_manifest
    from koemorph.io.tracks import read_track

    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    (data / "train/spk0_000.txt").write_text("Bob bought a map, Zyxw.")
    ckpt = str(env["ckpt"])
    plain = render(data, tmp_path / "plain", ckpt, workers=0, post=RenderConfig(transcripts=False))
    told = render(data, tmp_path / "told", ckpt, workers=0, store=env["store"])
    assert "files with a transcript" not in plain and told["files with a transcript"] == 1
    assert told["unknown words left out"] == 1
    records = read_manifest(tmp_path / "told")
    used = records.pop("train/spk0_000.jsonl")
    assert used.transcript == "train/spk0_000.txt" and used.unknown_words == ["zyxw"]
    assert used.features.startswith("store:")  # the mel from the store, the phones from the words
    assert records and all(r.transcript is None and r.unknown_words is None for r in records.values())
    for name in ["train/spk0_000.jsonl", *records]:
        a = read_track(tmp_path / "plain" / name).values
        b = read_track(tmp_path / "told" / name).values
        moved = np.abs(a - b).max() > 1e-3  # computed and stored features agree to float rounding
        assert moved == (name == "train/spk0_000.jsonl"), name
    from koemorph.preview.build import model_values

    shown = model_values(data / "train/spk0_000.wav", ckpt, load_config(None), 30, tmp_path / "work")
    assert np.abs(shown - read_track(tmp_path / "told/train/spk0_000.jsonl").values).max() <= 2e-5

    (data / "train/spk0_000.txt").write_bytes(b"\xffBob")  # edited into something unreadable
    again = render(data, tmp_path / "told", ckpt, workers=0)
    assert again["error files"] == 1 and again["skipped files"] == len(records)
    assert (
        again["errors"][0]
        == f"{data / 'train/spk0_000.txt'}: the transcript is not UTF-8 text (byte 0: invalid start byte)"
    )


def test_training_reads_the_warps_its_store_was_extracted_with(env, tmp_path):
    """A store records its feature settings; one written before ``features.phones_warps`` existed
    holds one unwarped decode, whatever the config asks for."""
    import shutil

    from koemorph.training.setup import open_store

    store = tmp_path / "features.zarr"
    shutil.copytree(env["store"], store)
    shutil.copy(env["root"] / "features.results.jsonl", tmp_path)
    stats = json.loads((env["root"] / "features.stats.json").read_text())
    assert stats["features"]["phones_warps"] == [1.0]
    del stats["features"]["phones_warps"]
    (tmp_path / "features.stats.json").write_text(json.dumps(stats))
    warped = ["features.egemaps=false", "features.phones_decoding=whole", "features.phones_warps=[0.9,1.1]"]
    cfg = load_config(None, SMALL + PHONES + warped)
    run_cfg, _ = open_store(cfg, store, None, {})
    assert cfg.features.phones_warps == (0.9, 1.1) and run_cfg.features.phones_warps == (1.0,)


def test_render_reads_confident_recognised_words_of_a_file_without_a_transcript(env, tmp_path, monkeypatch):
    """Beside the store's speech-like noise, flite saying a sentence PocketSphinx hears exactly: its
    words are confident and rename its phones; words heard in noise that are not leave them."""
    import shutil

    from koemorph.config import RenderConfig
    from koemorph.features.words import MIN_LOG_POSTERIOR
    from koemorph.inference.manifest import read_manifest
    from koemorph.io.audio import write_wav
    from koemorph.io.tracks import read_track
    from tests.test_words import MISTAKE, flite

    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    write_wav(data / "said.wav", flite(MISTAKE))
    (data / "train/spk0_000.txt").write_text("Bob bought a map.")
    ckpt, hear = str(env["ckpt"]), RenderConfig(recognise_words=True)
    render(data, tmp_path / "plain", ckpt, workers=0)
    heard = render(data, tmp_path / "heard", ckpt, workers=0, post=hear)
    records = read_manifest(tmp_path / "heard")
    told = records.pop("train/spk0_000.jsonl")
    assert told.transcript and not told.recognise_words and told.recognised_words is None
    said = records["said.jsonl"]
    assert said.recognised_words == MISTAKE.lower().rstrip(".") and said.recognised_words_used
    used = {name for name, r in records.items() if r.recognised_words_used}
    assert heard["files with a transcript"] == 1 and heard["files with recognised words"] == len(used)
    for name, r in records.items():
        assert r.recognise_words and isinstance(r.recognised_words, str), name
        logp = r.recognised_log_posterior
        assert r.recognised_words_used == (logp is not None and logp >= MIN_LOG_POSTERIOR), name
        a, b = (read_track(tmp_path / d / name).values for d in ("plain", "heard"))
        assert (np.abs(a - b).max() > 1e-3) == (name in used), name  # unused words leave the phones
    assert len(used) < len(records)
    assert render(data, tmp_path / "heard", ckpt, workers=0, post=hear)["skipped files"] == len(records) + 1
    import koemorph.features.words

    with monkeypatch.context() as m:  # another word search: the files whose words it heard are rendered again
        m.setattr(koemorph.features.words, "SEARCH_VERSION", koemorph.features.words.SEARCH_VERSION + 1)
        changed = render(data, tmp_path / "heard", ckpt, workers=0, post=hear)
    assert changed["ok files"] == len(records) and changed["skipped files"] == 1
    off = render(data, tmp_path / "heard", ckpt, workers=0)  # the setting is part of what is skipped
    assert off["skipped files"] == 1 and "files with recognised words" not in off
    for name in records:
        a, b = (read_track(tmp_path / d / name).values for d in ("plain", "heard"))
        assert np.abs(a - b).max() <= 1e-3, name
