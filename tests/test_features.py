"""Feature extractors: grid shapes, no drift, fixed dB reference, eGeMAPS causality and agreement."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest

from koemorph import grid
from koemorph.config import FeaturesConfig
from koemorph.demo.synth import speechlike
from koemorph.features.mel import log_mel, mel_power_at

SR = grid.SAMPLE_RATE


def cfg_at(fps: int, **kw) -> FeaturesConfig:
    return dataclasses.replace(FeaturesConfig(), fps=fps, **kw)


# ----------------------------------------------------------------------------- log-mel


@pytest.mark.parametrize("fps", [30, 60])
@pytest.mark.parametrize("n_samples", [1, 533, 16000, 40_000 + 7])
def test_log_mel_shape(fps, n_samples):
    x = np.random.default_rng(0).standard_normal(n_samples).astype(np.float32) * 0.1
    out = log_mel(x, cfg_at(fps))
    assert out.shape == (grid.num_frames_for_samples(n_samples, fps), 80)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_log_mel_empty():
    assert log_mel(np.zeros(0, np.float32), cfg_at(30)).shape == (0, 80)


def test_ten_minutes_is_exactly_18000_frames():
    x = np.zeros(600 * SR, dtype=np.float32)
    x[:: SR // 2] = 0.9  # clicks every 0.5 s
    out = log_mel(x, cfg_at(30))
    assert out.shape == (18000, 80)
    assert out.min() == pytest.approx(-100.0)  # the fixed floor, between clicks


def test_matches_librosa_where_hops_are_constant():
    """At 30 fps every 3rd centre is a multiple of 1600 samples: compare with librosa at hop 1600."""
    import librosa

    x = speechlike(8.0, seed=3)
    cfg = cfg_at(30)
    ours = log_mel(x, cfg)[::3]
    ref = librosa.feature.melspectrogram(
        y=x,
        sr=SR,
        n_fft=1024,
        hop_length=1600,
        n_mels=80,
        fmin=80.0,
        fmax=8000.0,
        center=True,
        pad_mode="constant",
    )
    ref_db = librosa.power_to_db(ref, ref=1.0, amin=1e-10, top_db=None).T[: ours.shape[0]]
    assert ours.shape == ref_db.shape
    np.testing.assert_allclose(ours, ref_db, atol=1e-3)  # agreement: < 0.001 dB everywhere
    # and the raw mel power at arbitrary centres matches a constant-hop librosa STFT (hop 500)
    ref500 = librosa.feature.melspectrogram(
        y=x,
        sr=SR,
        n_fft=1024,
        hop_length=500,
        n_mels=80,
        fmin=80.0,
        fmax=8000.0,
        center=True,
        pad_mode="constant",
    )
    ours500 = mel_power_at(x, np.arange(ref500.shape[1]) * 500, cfg)
    np.testing.assert_allclose(ours500, ref500.T, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("fps", [30, 60])
def test_click_train_lands_on_nearest_frame_without_drift(fps):
    """A click every 1.0 s (plus a varying sub-frame offset) for 120 s peaks on the frame nearest it."""
    n = 120 * SR
    offsets = (np.arange(120) * 0.137) % 1.0 / fps  # anywhere inside a frame period
    clicks = np.round((np.arange(120) + offsets) * SR).astype(np.int64)
    clicks = clicks[clicks < n]
    x = np.zeros(n, dtype=np.float32)
    x[clicks] = 0.8
    energy = log_mel(x, cfg_at(fps)).max(axis=1)
    centers = grid.frame_centers(energy.size, fps)
    for c in clicks:
        expected = int(np.argmin(np.abs(centers - c)))
        lo = max(expected - 4, 0)
        assert lo + int(np.argmax(energy[lo : expected + 5])) == expected, (c, expected)
    # the last click is ~119.x s in: a constant 533-sample hop would be off by > 2 frames here
    tail = int((clicks[-2] + clicks[-1]) / 2 * fps / SR)  # after the previous click
    assert abs(tail + int(np.argmax(energy[tail:])) - clicks[-1] * fps / SR) <= 0.5


def test_mel_values_do_not_depend_on_the_rest_of_the_file():
    """No per-window or per-file scaling: the same segment in two different files gives the same
    values at the same frames."""
    seg = speechlike(2.0, seed=1)
    rng = np.random.default_rng(7)
    a = np.concatenate([0.01 * rng.standard_normal(3 * SR), seg, 0.9 * rng.standard_normal(SR)])
    b = np.concatenate([np.zeros(3 * SR), seg, 0.05 * rng.standard_normal(4 * SR)])
    cfg = cfg_at(30)
    la, lb = log_mel(a.astype(np.float32), cfg), log_mel(b.astype(np.float32), cfg)
    centers = grid.frame_centers(min(len(la), len(lb)), 30)
    inside = np.where((centers - 512 >= 3 * SR) & (centers + 512 <= 5 * SR))[0]
    assert inside.size > 40
    np.testing.assert_allclose(la[inside], lb[inside], atol=1e-4)
    # fixed reference: halving the amplitude lowers every unfloored value by exactly 6.02 dB
    half = log_mel(0.5 * seg, cfg)
    full = log_mel(seg, cfg)
    mask = half > -90
    np.testing.assert_allclose(full[mask] - half[mask], 20 * np.log10(2.0), atol=1e-3)


# ----------------------------------------------------------------------------- eGeMAPS

opensmile = pytest.importorskip("opensmile")
from koemorph.features.egemaps import (  # noqa: E402
    EGEMAPS_DIM,
    egemaps,
    egemaps_feature_names,
    egemaps_per_window,
    window_index_for_frames,
)


@pytest.fixture(scope="module")
def six_seconds():
    x = speechlike(6.0, seed=11)
    return x, egemaps(x, cfg_at(30))


def test_feature_names():
    names = egemaps_feature_names()
    assert len(names) == EGEMAPS_DIM == 88 and names[0].startswith("F0semitone")


@pytest.mark.parametrize("fps", [30, 60])
def test_egemaps_shapes(fps):
    x = speechlike(2.0, seed=2)
    aligned, native, ends = egemaps(x, cfg_at(fps))
    assert aligned.shape == (grid.num_frames_for_samples(x.size, fps), 88) and aligned.dtype == np.float32
    assert native.shape == (6, 88) and native.dtype == np.float32
    np.testing.assert_allclose(ends, [0.3, 0.6, 0.9, 1.2, 1.5, 1.8])
    assert np.isfinite(aligned).all() and np.isfinite(native).all()


def test_window_ending_at_eof_is_kept(six_seconds):
    _, (_, native, ends) = six_seconds
    assert ends.size == 20 and ends[-1] == pytest.approx(6.0)
    assert np.abs(native[-1] - native[-2]).max() > 0  # computed, not a repeated row


@pytest.mark.parametrize("fps", [30, 60])
def test_alignment_rule_is_exact(fps):
    """Frame i holds the latest window with (j+1)*0.3 <= i/fps, checked with exact fractions."""
    cfg = cfg_at(fps)
    idx = window_index_for_frames(3 * fps * 10, 1000, cfg)
    expected = [int(Fraction(i, fps) / Fraction(3, 10)) - 1 for i in range(idx.size)]
    assert idx.tolist() == expected
    assert idx[int(0.3 * fps)] == 0 and idx[int(0.3 * fps) - 1] == -1  # frame at exactly 0.3 s sees window 0


def test_first_frames_are_zeros_then_sample_and_hold(six_seconds):
    _, (aligned, native, _) = six_seconds
    assert not aligned[:9].any()  # t < 0.3 s
    np.testing.assert_array_equal(aligned[9:18], np.repeat(native[:1], 9, axis=0))
    np.testing.assert_array_equal(aligned[18], native[1])
    np.testing.assert_array_equal(aligned[-1], native[-2])  # frame 179 (5.967 s) holds the 5.7 s window


@pytest.mark.parametrize("cut_s", [4.0, 3.9])  # 3.9 s is a window end: the hardest case
def test_egemaps_is_causal(six_seconds, cut_s):
    x, (aligned, _, _) = six_seconds
    y = x.copy()
    n = round(cut_s * SR)
    y[n:] = speechlike(6.0 - cut_s, seed=99, peak=0.9)  # different pitch, loudness and spectra
    aligned2, _, _ = egemaps(y, cfg_at(30))
    frame = int(grid.frame_of_time(cut_s, 30))
    np.testing.assert_array_equal(aligned2[: frame + 1], aligned[: frame + 1])
    assert np.abs(aligned2[frame + 9 :] - aligned[frame + 9 :]).max() > 0  # the test can see a change


def test_one_pass_agrees_with_per_window_calls(six_seconds):
    x = speechlike(30.0, seed=5)
    cfg = cfg_at(30)
    _, native, ends = egemaps(x, cfg)
    pick = [9, 39, 79, 99]  # windows ending at 3, 12, 24 (full 20 s) and 30 s (EOF)
    ref = egemaps_per_window(x, cfg, ends[pick])
    rel = np.abs(native[pick] - ref) / (np.abs(ref) + 1e-6)
    assert np.median(rel) < 0.01
    assert np.median(np.median(rel, axis=0)) < 0.01


@pytest.mark.parametrize("n_samples", [0, 1, 1000, 4799])
def test_shorter_than_one_step(n_samples):
    x = speechlike(n_samples / SR, seed=0) if n_samples > 1 else np.zeros(n_samples, np.float32)
    aligned, native, ends = egemaps(x, cfg_at(30))
    assert aligned.shape == (grid.num_frames_for_samples(n_samples, 30), 88) and not aligned.any()
    assert native.shape == (0, 88) and ends.shape == (0,)


def test_exactly_one_step():
    aligned, native, ends = egemaps(speechlike(0.35, seed=4), cfg_at(30))
    assert native.shape == (1, 88) and ends.tolist() == [0.3]
    assert not aligned[:9].any() and (aligned[9:] == native[0]).all()


def test_chunked_passes_match_one_whole_file_pass(monkeypatch):
    """Long files run in chunks of CHUNK_WINDOWS windows (memory); the result must not change."""
    import sys

    module = sys.modules["koemorph.features.egemaps"]
    x = speechlike(40.0, seed=8)
    cfg = cfg_at(30)
    _, whole, _ = egemaps(x, cfg)
    monkeypatch.setattr(module, "CHUNK_WINDOWS", 29)
    _, chunked, ends = egemaps(x, cfg)
    assert chunked.shape == whole.shape == (133, 88) and ends[-1] == pytest.approx(39.9)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seconds", [19.05, 19.25, 21.0])  # 63, 64 and 70 windows: lists of 64 and 128
def test_frame_list_size_changes_no_value(monkeypatch, seconds):
    """A pass requests a list sized to its windows (few cached sizes), not always CHUNK_WINDOWS:
    windows past the audio are never emitted, so the values are the same bits either way."""
    import sys

    module = sys.modules["koemorph.features.egemaps"]
    x = speechlike(seconds, seed=9)
    _, sized, _ = egemaps(x, cfg_at(30))
    assert module._list_size(sized.shape[0]) in (64, 128)
    monkeypatch.setattr(module, "_list_size", lambda n: module.CHUNK_WINDOWS)
    _, full, _ = egemaps(x, cfg_at(30))
    np.testing.assert_array_equal(sized, full)
