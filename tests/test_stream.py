"""The streamer: equal to `koemorph render` for any chunk size, resets, bounded state, bad chunks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
import soxr

from koemorph import grid
from koemorph.inference.stream import Streamer, StreamError
from koemorph.io.tracks import read_track
from pipeline.render import render
from tests.streamkit import babble, make_checkpoint


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    ckpt = make_checkpoint(root / "mel.pt", egemaps=False)
    tree = root / "in"
    tree.mkdir()
    audio = {"a": babble(7.3, seed=3), "b": babble(4.1, seed=5)}
    for name, x in audio.items():
        sf.write(tree / f"{name}.wav", x, 16_000, subtype="FLOAT")
    x44 = soxr.resample(audio["b"], 16_000, 44_100).astype(np.float32)
    sf.write(tree / "b44.wav", x44, 44_100, subtype="FLOAT")
    audio["b44"] = x44
    out = root / "out"
    render(tree, out, str(ckpt), workers=0)
    rendered = {name: read_track(out / f"{name}.jsonl").values for name in audio}
    return {"ckpt": ckpt, "audio": audio, "rendered": rendered}


def stream(streamer: Streamer, x: np.ndarray, chunk: int) -> np.ndarray:
    """Push ``x`` in chunks of ``chunk`` samples, then flush; checks frame indices are consecutive."""
    parts, k = [], 0
    for i in range(0, x.size, chunk):
        frames = streamer.push(x[i : i + chunk])
        assert frames.start == k and np.array_equal(frames.times, np.arange(k, k + len(frames)) / 30)
        parts.append(frames.values)
        k += len(frames)
    last = streamer.flush()
    assert last.start == k
    return np.concatenate([*parts, last.values])


@pytest.mark.parametrize("chunk_s", [0.01, 0.033, 0.1, 1.0])
def test_any_chunk_size_gives_the_rendered_frames(env, chunk_s):
    x, want = env["audio"]["a"], env["rendered"]["a"]
    got = stream(Streamer.from_checkpoint(env["ckpt"]), x, int(chunk_s * 16_000))
    assert got.shape == want.shape == (grid.num_frames_for_samples(x.size), 52)
    assert np.abs(got - want).max() <= 1e-5  # JSONL keeps 6 decimals
    assert np.ptp(want, axis=0).max() > 0.05  # the outputs move: the comparison means something


def test_lookahead_frames_wait_for_audio_and_flush_emits_them(env):
    streamer = Streamer.from_checkpoint(env["ckpt"])
    x = env["audio"]["a"]
    first = streamer.push(x[:16_000])  # 1 s: mel rows up to centre + n_fft/2 <= 16000, minus L
    rows = max(k for k in range(40) if round(k * 16_000 / 30) + 512 <= 16_000) + 1
    assert len(first) == rows - streamer.latency_frames
    assert len(streamer.flush()) == grid.num_frames_for_samples(16_000) - len(first)


def test_other_sample_rate_is_resampled_in_stream(env):
    """44.1 kHz chunks go through a streaming soxr resampler: within 1e-4 of rendering the 44.1 kHz file."""
    x, want = env["audio"]["b44"], env["rendered"]["b44"]
    got = stream(Streamer.from_checkpoint(env["ckpt"], rate=44_100), x, 1455)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4


def test_reset_and_flush_start_new_utterances(env):
    streamer = Streamer.from_checkpoint(env["ckpt"])
    a, b = env["audio"]["a"], env["audio"]["b"]
    for i in range(0, 3 * 16_000, 4000):  # half an utterance, abandoned
        streamer.push(a[i : i + 4000])
    streamer.reset()
    assert np.abs(stream(streamer, b, 2000) - env["rendered"]["b"]).max() <= 1e-5
    # after a flush the next push is frame 0 of a new utterance (smoothing reset)
    assert np.abs(stream(streamer, a, 3000) - env["rendered"]["a"]).max() <= 1e-5


def test_state_stays_bounded(env):
    streamer = Streamer.from_checkpoint(env["ckpt"])
    sp, chunk = streamer.spans, 533
    x = np.tile(env["audio"]["a"], 3)  # 22 s: several times the 1 s context
    peak_rows = peak_audio = 0
    for i in range(0, x.size, chunk):
        streamer.push(x[i : i + chunk])
        peak_rows = max(peak_rows, streamer._mel.shape[0])
        peak_audio = max(peak_audio, streamer._mels._buf.size)
    assert peak_rows <= sp.context - 1 + sp.lookahead + 2
    assert peak_audio <= 1024 + chunk
    assert streamer.next_frame > 600


def test_int16_and_stereo_chunks_equal_float_mono(env):
    x = env["audio"]["b"]
    pcm = np.round(np.clip(x, -1, 32767 / 32768) * 32768).astype(np.int16)
    want = stream(Streamer.from_checkpoint(env["ckpt"]), pcm.astype(np.float32) / 32768, 1600)
    got = stream(Streamer.from_checkpoint(env["ckpt"]), np.stack([pcm, pcm], axis=1), 1600)
    assert np.abs(got - want).max() <= 1e-6


def test_bad_chunks_get_clear_errors_and_leave_the_stream_usable(env):
    x = env["audio"]["b"]
    streamer = Streamer.from_checkpoint(env["ckpt"], name="mic")
    streamer.push(x[:8000])
    nan = x[8000:9000].copy()
    nan[10] = np.nan
    bad = {
        "NaN/Inf sample": nan,
        "dtype int32 not accepted": x[8000:9000].astype(np.int32),
        "expected a numpy array": [0.0] * 100,
        "shape (10, 2, 2)": np.zeros((10, 2, 2), np.float32),
    }
    for message, chunk in bad.items():
        with pytest.raises(StreamError, match="^mic: chunk [0-9]+: ") as err:
            streamer.push(chunk)
        assert message in str(err.value)
    with pytest.raises(StreamError, match="sample rate changed from 16000 to 48000 Hz mid-stream"):
        streamer.push(x[8000:9000], rate=48_000)
    rest = [streamer.push(x[i : i + 1000]).values for i in range(8000, x.size, 1000)]
    got = np.concatenate([*rest, streamer.flush().values])
    assert np.abs(got - env["rendered"]["b"][-len(got) :]).max() <= 1e-5  # nothing was half-applied
    streamer.push(x[:1000], rate=48_000)  # a new utterance may change the rate
    assert streamer.rate == 48_000


@pytest.fixture(scope="module")
def ege_env(tmp_path_factory):
    """A model with the emotion stream, and 22 s of audio: past openSMILE's first 20-s context."""
    root = tmp_path_factory.mktemp("stream_egemaps")
    ckpt = make_checkpoint(root / "ege.pt", egemaps=True)
    (root / "in").mkdir()
    x = babble(22.0, seed=11)
    sf.write(root / "in" / "long.wav", x, 16_000, subtype="FLOAT")
    render(root / "in", root / "out", str(ckpt), workers=0)
    return {"ckpt": ckpt, "x": x, "want": read_track(root / "out" / "long.jsonl").values}


@pytest.mark.parametrize("chunk_s", [0.01, 0.033, 0.1, 1.0])
def test_egemaps_model_streams_the_rendered_frames(ege_env, chunk_s):
    streamer = Streamer.from_checkpoint(ege_env["ckpt"])
    assert streamer.use_egemaps
    got = stream(streamer, ege_env["x"], int(chunk_s * 16_000))
    want = ege_env["want"]
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5  # goal: <= 5e-3


def test_streamed_egemaps_windows_equal_the_one_pass_windows():
    """openSMILE's streaming engine (two instances fed as audio arrives) against the whole-file
    list-mode pass, as bench_egemaps.py measures agreement; the held windows stay bounded."""
    from koemorph.config import load_config
    from koemorph.features.egemaps import egemaps
    from koemorph.features.streaming import EgemapsStream

    cfg = load_config(None, []).features
    x = babble(26.0, seed=2)
    _, native, _ = egemaps(x, cfg)
    live = EgemapsStream(cfg, {"mean": [0.0] * 88, "std": [1.0] * 88})
    got, peak = {}, 0
    for i in range(0, x.size, 4000):
        live.push(x[i : i + 4000])
        got.update(live.windows)
        frame = live.frames_ready(grid.num_frames_for_samples(i + 4000))
        live.forget_before(frame - 30)
        peak = max(peak, len(live.windows))
    live.push(np.zeros(0, np.float32), final=True)
    got.update(live.windows)
    rows = np.array([got[j] for j in range(len(native))])
    rel = np.abs(rows - native) / (np.abs(native) + 1e-6)
    assert len(native) == 86 and np.median(np.median(rel, axis=0)) < 0.01  # bench_egemaps' measure
    assert (rows == native).mean() > 0.99  # in fact bit-identical on this signal
    assert peak <= 8 and live._early.smile is None and live._late.smile is None


def test_whole_model_path_gives_the_same_frames(env, monkeypatch):
    """Models the incremental forward does not cover are called whole on each block: same frames."""
    from koemorph.inference import incremental

    monkeypatch.setattr(incremental, "supports", lambda model: False)
    streamer = Streamer.from_checkpoint(env["ckpt"])
    assert streamer._inc is None
    got = stream(streamer, env["audio"]["b"], 533)
    assert np.abs(got - env["rendered"]["b"]).max() <= 1e-5


def level_env(env) -> tuple:
    """``(model, meta with training levels around audio a's, a)``: a's speech level 1 dB below their
    median, 3 dB above their low end."""
    from koemorph.config import load_config
    from koemorph.features.level import speech_level_db
    from koemorph.features.mel import log_mel
    from koemorph.training.checkpoint import load_model
    from tests.checkpointkit import SMALL

    x = env["audio"]["a"]
    level = speech_level_db(log_mel(x, load_config(None, SMALL).features))
    model, meta = load_model(env["ckpt"])
    trained = {"low": level - 3, "median": level + 1, "high": level + 3, "files": 2}
    return model, {**meta, "stats": {**meta["stats"], "level": trained}}, x


def hissed(x: np.ndarray, gain: float) -> np.ndarray:
    """``x`` times ``gain`` over a faint steady hiss (so that silence has a level too)."""
    return x * np.float32(gain) + np.random.default_rng(0).normal(0, 1e-4, x.size).astype(np.float32)


def test_progress_line_says_how_far_the_input_level_lies_from_training(env):
    """The progress line tells the user to raise (or lower) the input gain when the stream's recent
    speech level lies outside the model's training levels, and by how much the stream scales it."""
    import io
    import time

    from koemorph.inference import live

    model, meta, x = level_env(env)
    lines, gains = {}, {}
    for name, gain in (("same", 1.0), ("quiet", 0.01), ("loud", 3.0), ("hiss", 0.0)):
        audio = hissed(x, gain)
        streamer = Streamer(model, meta)
        chunks = ((audio[i : i + 1600], time.perf_counter()) for i in range(0, audio.size, 1600))
        progress = io.StringIO()
        gains[name] = live.run(streamer, chunks, [], 0.1, progress=progress)["gain_db"]
        lines[name] = progress.getvalue().splitlines()[-1]
    assert lines["same"].endswith("; input level -1 dB from training"), lines["same"]
    # quiet: scaled by the largest gain (40 dB); loud: from its first second's level, near the file's
    assert re.search(
        r"; input level -41 dB from training, scaled \+4[01] dB: raise the input gain$", lines["quiet"]
    )
    assert re.search(
        r"; input level \+9 dB from training, scaled -(8|9|10) dB: lower the input gain$", lines["loud"]
    )
    assert "input level" not in lines["hiss"]
    assert gains["same"] == gains["hiss"] == 0.0 and gains["quiet"] == 40.0 and gains["loud"] < -8
    plain = Streamer(model, {**meta, "stats": {k: v for k, v in meta["stats"].items() if k != "level"}})
    assert plain.level.advice() is None and stream(plain, x, 1600).shape[0] and plain.level.advice() is None
    assert plain.gain_db == 0.0  # a checkpoint without training levels says nothing and scales nothing


def test_a_quiet_stream_is_scaled_to_the_training_levels_once_heard(env):
    """30 dB too quiet: after a second the stream scales its input, and once its window holds only
    scaled audio its frames are those of the audio scaled throughout; without level matching they
    stay far off. Raising the input gain mid-stream brings the scaling back to 0."""
    from koemorph.features.level import MIN_RECENT_S, gain_factor

    model, meta, x = level_env(env)
    x = np.concatenate([x, x])  # 14.6 s
    quiet = hissed(x, 10 ** (-31 / 20))
    matched, off = Streamer(model, meta), Streamer(model, meta, match_level=False)
    got, raw = stream(matched, quiet, 1600), stream(off, quiet, 1600)
    assert 29 < matched.gain_db < 33 and off.gain_db == 0.0
    want = stream(Streamer(model, meta), quiet * gain_factor(matched.gain_db), 1600)  # scaled throughout
    heard = round(MIN_RECENT_S * 30)  # frames before the scaling starts
    tail = slice(heard + 6 + matched.spans.context, None)  # once the window holds only scaled audio
    assert np.abs(got[tail] - want[tail]).max() <= 1e-5 < 0.1 < np.abs(raw[tail] - want[tail]).mean()
    assert np.abs(got[: heard - 6] - raw[: heard - 6]).max() == 0.0  # nothing scaled before it was heard
    stream(matched, hissed(x, 1.0), 1600)  # the user raised the gain: the same stream, now in range
    assert matched.gain_db == 0.0
