"""Recognised-phone features: real PocketSphinx on espeak speech, on the koemorph grid."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from koemorph import grid
from koemorph.config import FeaturesConfig
from koemorph.features import phone_stream as ps
from koemorph.features import phones as ph

needs_pocketsphinx = pytest.mark.skipif(
    not ph.available(), reason="pocketsphinx is not installed (optional extra 'phones')"
)
P = len(ph.PHONES)
BILABIAL = [ph.PHONE_INDEX[p] for p in ("P", "B", "M")]
PAD_S = 0.3  # silence before and after each utterance


SPEAK = """
import json, sys
import numpy as np
from koemorph.demo.espeak import Espeak
samples, phones = Espeak.get().synth(sys.argv[1], sys.argv[2])
np.save(sys.argv[3], samples)
with open(sys.argv[4], "w") as f:
    json.dump([(p.name, p.start, p.end) for p in phones], f)
"""


def speak(text: str, voice: str = "en-us") -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """espeak speech at 16 kHz with PAD_S of silence each side, and its phones (name, start s, end s).

    Synthesised in a fresh interpreter: espeak-ng keeps state between calls in one process, so the
    same text would otherwise sound different depending on what was spoken before.
    """
    pytest.importorskip("espeakng_loader", reason="espeak-ng is not installed (optional extra 'demo')")
    import soxr

    from koemorph.demo.espeak import SYNTH_RATE

    with tempfile.TemporaryDirectory() as tmp:
        wav, names = Path(tmp) / "s.npy", Path(tmp) / "p.json"
        subprocess.run([sys.executable, "-c", SPEAK, text, voice, wav, names], check=True)
        samples, phones = np.load(wav), json.loads(names.read_text())
    speech = soxr.resample(samples.astype(np.float64) / 32768.0, SYNTH_RATE, grid.SAMPLE_RATE)
    pad = np.zeros(grid.num_samples(PAD_S), dtype=np.float32)
    x = np.concatenate([pad, speech.astype(np.float32), pad])
    return x, [(name, PAD_S + a / SYNTH_RATE, PAD_S + b / SYNTH_RATE) for name, a, b in phones]


def whole_at(*warps: float) -> FeaturesConfig:
    """Whole-file decoding (the only kind that warps) at ``warps``."""
    return FeaturesConfig(phones_decoding="whole", phones_warps=warps)


def check_rows(rows: np.ndarray) -> None:
    assert rows.dtype == np.float32 and rows.ndim == 2 and rows.shape[1] == P
    assert np.isfinite(rows).all() and (rows >= 0).all()
    np.testing.assert_allclose(rows.sum(1), 1.0, atol=1e-5)


def test_phone_set():
    assert len(ph.PHONES) == 40 and len(set(ph.PHONES)) == 40 and ph.PHONES[0] == ph.SILENCE
    assert list(ph.PHONES[1:]) == sorted(ph.PHONES[1:])


def test_encode_keeps_short_phones_and_fills_every_frame():
    # 1 s of decoder frames: silence, then a 3-frame P (30 ms) centred between two 30 fps grid times
    codes = np.zeros(98, dtype=np.int64)
    codes[40:43] = ph.PHONE_INDEX["P"]
    codes[60:] = ph.label_code("+SPN+")
    for fps in (30, 60):
        n = grid.num_frames_for_samples(16000, fps)
        rows = ph.encode(codes, 0, n, fps)
        check_rows(rows)
        assert rows.shape == (n, P)
        p_share = rows[: int(0.55 * fps), ph.PHONE_INDEX["P"]]  # before the +SPN+ part
        p_rows = np.flatnonzero(p_share > 0)
        assert p_share.sum() == pytest.approx(3 * fps / 100, rel=0.4)  # 30 ms of frames worth of P
        t = p_rows / fps  # P spans decoder frame centres 0.4128 .. 0.4328 s
        assert len(p_rows) and t.min() >= 0.41 - 0.5 / fps and t.max() <= 0.44 + 0.5 / fps
        np.testing.assert_allclose(rows[-1, 1:], 1.0 / (P - 1), rtol=1e-6)  # +SPN+: any speech phone
        assert rows[0, 0] == 1.0  # the first frame (no decoder frame of its own at 60 fps) is silence
        # encoding a range gives the same rows as slicing the whole
        np.testing.assert_array_equal(ph.encode(codes, 7, 20, fps), rows[7:20])
    assert ph.encode(np.zeros(0, np.int64), 0, 4, 30)[:, 0].tolist() == [1.0] * 4


def test_missing_pocketsphinx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import now raises ImportError
    assert not ph.available()
    with pytest.raises(ImportError, match=r"koemorph\[phones\]"):
        ph.new_decoder()


@needs_pocketsphinx
def test_shape_on_the_grid_at_30_and_60_fps():
    x, _ = speak("The quick brown fox jumps over the lazy dog.")
    for fps in grid.SUPPORTED_FPS:
        rows = ph.phone_features(x, FeaturesConfig(fps=fps))
        check_rows(rows)
        assert rows.shape == (grid.num_frames_for_samples(x.size, fps), P)
        assert (rows.max(1) == 1.0).mean() > 0.5  # mostly one-hot
        assert (rows[:, 0] < 1).mean() > 0.5  # mostly speech
        assert len(set(rows.argmax(1).tolist())) > 10  # many different phones


@needs_pocketsphinx
def test_silence_empty_and_short_inputs():
    cfg = FeaturesConfig(fps=30)
    assert ph.phone_features(np.zeros(0, np.float32), cfg).shape == (0, P)
    for n in (1, 300, 1000, 16000, 48000):  # shorter than one decoder window .. 3 s of digital silence
        rows = ph.phone_features(np.zeros(n, np.float32), cfg)
        check_rows(rows)
        assert rows.shape == (grid.num_frames_for_samples(n, 30), P)
        assert (rows[:, 0] == 1.0).all(), f"{n} samples of silence"
    quiet = 1e-4 * np.random.default_rng(0).standard_normal(32000).astype(np.float32)
    assert (ph.phone_features(quiet, cfg)[:, 0] == 1.0).all()


@needs_pocketsphinx
def test_a_pure_function_of_the_samples():
    a, _ = speak("Bob bought a big map.")
    b, _ = speak("She sells sea shells.", "en-us+m3")
    cfg = FeaturesConfig(fps=30)
    first = ph.phone_features(a, cfg)
    ph.phone_features(b, cfg)  # the decoder is reused: nothing of b may leak into a
    np.testing.assert_array_equal(ph.phone_features(a, cfg), first)


@needs_pocketsphinx
@pytest.mark.parametrize(
    ("text", "voice"),
    [("mama", "en-us"), ("mama", "en-us+m3"), ("mama", "en+f1"), ("my mom", "en"), ("my mom", "en-us+m1")],
)
def test_bilabials_are_recognised_near_their_true_time(text, voice):
    """A P/B/M row within ±50 ms of each espeak bilabial the decoder should find: 50 ms covers the
    grid step (33 ms at 30 fps) plus the decoder's 10 ms frames and 25.6 ms window; recognised
    onsets lag espeak's by about +20 ms on the demo corpus. Decoding espeak is imperfect (on the demo
    corpus under half of the p/b/m are found, word-initial p and b least), so these are words and
    voices where it finds every one; no P/B/M row may lie away from them."""
    x, phones = speak(text, voice)
    rows = ph.phone_features(x, FeaturesConfig(fps=30))
    t = np.arange(len(rows)) / 30
    bilabial = rows[:, BILABIAL].sum(1) > 0.5
    truth = [(s, e) for name, s, e in phones if name in ("p", "b", "m")]
    found = [bool((bilabial & (t >= s - 0.05) & (t <= e + 0.05)).any()) for s, e in truth]
    assert found and all(found), (truth, found)
    spans = [(s - 0.05, e + 0.05) for s, e in truth]
    stray = [k for k in np.flatnonzero(bilabial) if not any(a <= t[k] <= b for a, b in spans)]
    assert not stray, f"P/B/M rows far from any bilabial at {t[stray]}"


@needs_pocketsphinx
def test_stream_returns_final_rows_and_mostly_agrees_with_whole_file():
    x, _ = speak("Her view was calm and deep among a maple, and Bob sat by the pool.")
    for fps in grid.SUPPORTED_FPS:
        whole = ph.phone_features(x, FeaturesConfig(fps=fps, phones_decoding="whole"))
        stream = ps.PhoneStream(fps)
        sizes = [1600, 320, 4000, 7]  # uneven chunks, one shorter than a decoder frame
        parts, a, i = [], 0, 0
        while a < x.size:
            parts.append(stream.push(x[a : a + sizes[i % len(sizes)]]))
            a += sizes[i % len(sizes)]
            i += 1
        pushed = sum(len(p) for p in parts)
        parts.append(stream.finish())
        rows = np.concatenate(parts)
        check_rows(rows)
        assert rows.shape == whole.shape
        assert pushed > 0.7 * len(rows)  # most rows come before the end of the audio
        lags = np.asarray(stream.lags_s)
        assert len(lags) == len(rows) and lags.min() >= -0.5 / fps
        agree = (rows.argmax(1) == whole.argmax(1)).mean()
        # measured 65 % (30 fps) and 68 % (60 fps): live CMN starts from the model's prior mean
        assert agree > 0.5, f"{fps} fps: streamed and whole-file phones agree on {agree:.0%} of frames"
        with pytest.raises(RuntimeError, match="after finish"):
            stream.push(x[:100])


@needs_pocketsphinx
@pytest.mark.parametrize("rule", ["pause", "longest"])
def test_a_long_stream_cuts_decoder_utterances_and_holds_little(rule, monkeypatch):
    """Three sentences with pauses, streamed with the cut rule scaled down (after 3 s of audio in a
    pause, or at 2 s in any case): several decoder utterances, one row per grid frame, the same
    phones as the uncut stream on most frames (measured 98 % and 91 %), and only the codes of a few
    frames of earlier utterances held."""
    x = np.concatenate(
        [speak(t)[0] for t in ("Bob met a maple man.", "Pam ate a plum.", "Mom bought bread and ham.")]
    )
    uncut = ps.PhoneStream(30)
    want = np.concatenate([*(uncut.push(x[a : a + 533]) for a in range(0, x.size, 533)), uncut.finish()])
    assert uncut.utterances == 1
    monkeypatch.setattr(ps, "CUT_AFTER_S", 3.0 if rule == "pause" else 99.0)
    monkeypatch.setattr(ps, "CUT_MAX_S", 99.0 if rule == "pause" else 2.0)
    stream = ps.PhoneStream(30)
    rows, held = [], 0
    for a in range(0, x.size, 533):  # 33.3 ms chunks, not whole 10-ms hops
        rows.append(stream.push(x[a : a + 533]))
        held = max(held, len(stream._codes))  # earlier utterances' codes still held
    rows = np.concatenate([*rows, stream.finish()])
    check_rows(rows)
    assert rows.shape == want.shape == (grid.num_frames_for_samples(x.size, 30), P)
    assert stream.utterances >= (2 if rule == "pause" else x.size // 32000)
    assert held <= 20  # 0.2 s of decoder frames (measured: 9)
    agree = (rows.argmax(1) == want.argmax(1)).mean()
    assert agree > 0.8, f"cut and uncut streams agree on {agree:.0%} of frames"


@needs_pocketsphinx
def test_stream_rows_do_not_depend_on_the_chunks_and_are_the_live_features():
    x, _ = speak("Her view was calm and deep among a maple, and Bob sat by the pool.")
    want = ph.phone_features(x, FeaturesConfig(fps=30, phones_decoding="live"))
    whole = ph.phone_features(x, FeaturesConfig(fps=30))
    assert want.shape == whole.shape and (want.argmax(1) != whole.argmax(1)).any()  # another decoding
    for sizes in ([160], [533], [1600], [16000], [1600, 320, 4000, 7]):
        stream, parts, a, i = ps.PhoneStream(30), [], 0, 0
        while a < x.size:
            parts.append(stream.push(x[a : a + sizes[i % len(sizes)]]))
            a, i = a + sizes[i % len(sizes)], i + 1
        assert np.array_equal(np.concatenate([*parts, stream.finish()]), want), sizes


@needs_pocketsphinx
def test_the_cache_hash_covers_what_fixes_the_output():
    from koemorph.config import DataConfig
    from koemorph.data.extract import array_hashes

    h = ph.hash_constants()
    assert h["decoder"] == ph.DECODER_SETTINGS and h["phones"] == list(ph.PHONES)
    assert h["pocketsphinx"] == "5.1.1"
    off, on = (array_hashes(FeaturesConfig(phones=p), DataConfig())["phones"] for p in (False, True))
    at60 = array_hashes(FeaturesConfig(phones=True, fps=60), DataConfig())["phones"]
    live = array_hashes(FeaturesConfig(phones=True, phones_decoding="live"), DataConfig())["phones"]
    assert off is None and on is not None and at60 not in (None, on) and live not in (None, on, at60)
    warped = array_hashes(whole_at(0.9, 1.1), DataConfig())
    assert warped["phones"] not in (None, on, at60, live)
    assert warped["phones_text"] != array_hashes(FeaturesConfig(phones=True), DataConfig())["phones_text"]


@needs_pocketsphinx
def test_warped_decodes_differ_and_their_rows_are_averaged():
    """Each warp is a decode of its own (the front end's frequency axis is warped, so the phones
    change), and the rows of several warps are the mean of each one's rows."""
    x, _ = speak("Bob bought a big map, and my mom sat by the pool.", "en-us+m3")
    rows = {w: ph.phone_features(x, whole_at(w)) for w in (0.9, 1.0, 1.1)}
    assert (rows[0.9].argmax(1) != rows[1.0].argmax(1)).any()
    assert (rows[1.1].argmax(1) != rows[1.0].argmax(1)).any()
    ph._local.__dict__.clear()  # fresh decoders and no kept result: both warps decoded again
    both = ph.phone_features(x, whole_at(0.9, 1.1))
    check_rows(both)
    np.testing.assert_allclose(both, (rows[0.9] + rows[1.1]) / 2, atol=1e-6)


def test_live_decoding_is_unwarped():
    from koemorph.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"features\.phones_warps.*live decoding"):
        load_config(None, overrides=["features.phones_decoding=live", "features.phones_warps=[0.9,1.1]"])
    with pytest.raises(ConfigError, match=r"features\.phones_warps"):
        FeaturesConfig(phones_warps=(0.3,))
    with pytest.raises(ConfigError, match=r"features\.phones_warps.*at least one"):
        FeaturesConfig(phones_warps=())


@needs_pocketsphinx
def test_stream_started_from_a_settled_cmn_agrees_more():
    x, _ = speak("Her view was calm and deep among a maple, and Bob sat by the pool.")
    whole = ph.phone_features(x, FeaturesConfig(fps=30, phones_decoding="whole")).argmax(1)

    def run(cmn):
        stream = ps.PhoneStream(30, cmn=cmn)
        rows = [stream.push(x[a : a + 1600]) for a in range(0, x.size, 1600)]
        return np.concatenate([*rows, stream.finish()]).argmax(1), stream.cmn

    cold, after_one = run(None)
    _, after_two = run(after_one)  # live CMN moves only part of the way in one 4 s utterance
    warm, _ = run(after_two)
    assert len(after_two.split(",")) == 13  # c0..c12
    # measured 65 % of frames cold, 81 % on the third pass
    assert (warm == whole).mean() > (cold == whole).mean() + 0.04
