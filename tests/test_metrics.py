"""Blendshape-space metrics on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from koemorph import blendshapes as bs
from koemorph.evaluation.metrics import (
    aggregate,
    channel_ccc,
    channel_mae,
    channel_pearson,
    channel_rmse,
    closure_scores,
    group_scores,
    jitter_ratio,
    lip_max_error,
    micro_scores,
    score_file,
    silence_rest,
    sync_lag_ms,
    upper_face_dynamics_deviation,
    velocity_error,
)

FPS = 30
JAW, CLOSE = bs.INDEX["jawOpen"], bs.INDEX["mouthClose"]


def sines(t: int = 300, seed: int = 0) -> np.ndarray:
    """``[t, 52]`` in [0, 1]: a sine per channel with its own frequency and phase."""
    rng = np.random.default_rng(seed)
    k = np.arange(t)[:, None] / FPS
    return 0.5 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0, 52) * k + rng.uniform(0, 6, 52))


def test_pearson_ignores_scale_but_ccc_does_not():
    y = sines()
    p = y.mean(0) + 0.5 * (y - y.mean(0))  # same shape and mean, half the amplitude
    np.testing.assert_allclose(channel_pearson(p, y), 1.0, atol=1e-9)
    ccc = channel_ccc(p, y)
    assert np.all(ccc < 0.9) and np.all(ccc > 0.5)  # 2·0.5σ² / (0.25σ² + σ²) = 0.8
    np.testing.assert_allclose(ccc, 0.8, atol=1e-9)
    np.testing.assert_allclose(channel_ccc(y, y), 1.0, atol=1e-12)
    np.testing.assert_allclose(channel_pearson(1 - y, y), -1.0, atol=1e-9)


def test_mae_rmse_and_lip_max_error_of_constant_offsets():
    y = sines() * 0.5
    p = y + 0.1
    np.testing.assert_allclose(channel_mae(p, y), 0.1, atol=1e-12)
    np.testing.assert_allclose(channel_rmse(p, y), 0.1, atol=1e-12)
    assert lip_max_error(p, y) == pytest.approx(0.1)
    q = y.copy()
    q[:, JAW] += 0.3  # one mouth channel off by 0.3: the per-frame max is 0.3
    q[:, bs.INDEX["eyeBlinkLeft"]] += 0.5  # not a mouth channel: ignored by the lip max error
    assert lip_max_error(q, y) == pytest.approx(0.3)
    scores = group_scores(q, y)
    assert scores["mouth/mae"] == pytest.approx(0.3 / 28)
    assert scores["expression/mae"] == pytest.approx(0.5 / 24)
    assert scores["all/mae"] == pytest.approx(0.8 / 52)


def test_flat_channels_are_skipped_and_counted():
    y = sines()
    y[:, [bs.INDEX["tongueOut"], bs.INDEX["cheekPuff"], bs.INDEX["mouthClose"]]] = 0.2
    p = y.copy()
    p[:, bs.INDEX["tongueOut"]] = sines(seed=3)[:, 0]  # prediction moves, truth flat: still skipped
    r = channel_pearson(p, y)
    assert np.isnan(r).sum() == 3 and np.isnan(r[bs.INDEX["tongueOut"]])
    scores = group_scores(p, y)
    assert scores["skipped_flat_channels"] == 3
    assert scores["mouth/pearson"] == pytest.approx(1.0)
    assert scores["closure/pearson"] == pytest.approx(1.0)  # mouthClose skipped, the other three are perfect
    # a flat prediction of a moving truth correlates 0, not NaN
    flat_pred = np.full_like(y, 0.5)
    assert group_scores(flat_pred, y)["all/pearson"] == pytest.approx(0.0)


def test_jitter_ratio_and_velocity_error():
    y = sines(600)
    noisy = np.clip(y + np.random.default_rng(1).normal(0, 0.02, y.shape), 0, 1)
    assert jitter_ratio(noisy, y) > 2.0
    assert jitter_ratio(y, y) == pytest.approx(1.0)
    smooth = 0.5 + 0.1 * (y - 0.5)  # a tenth of the motion
    assert jitter_ratio(smooth, y) == pytest.approx(0.1)
    assert velocity_error(y, y, FPS) == 0.0
    ramp = y.copy()
    ramp[:, 0] += np.arange(len(y)) * 0.001  # +0.001 per frame = 0.03 per second on one channel of 52
    assert velocity_error(ramp, y, FPS, [0]) == pytest.approx(0.03)
    assert velocity_error(ramp, y, FPS) == pytest.approx(0.03 / 52)


def test_upper_face_dynamics_deviation():
    y = sines()
    assert upper_face_dynamics_deviation(y, y) == 0.0
    dead = y.copy()
    upper = bs.indices(bs.UPPER_FACE_NAMES)
    dead[:, upper] = 0.3  # a dead upper face: the deviation is the truth's std
    assert upper_face_dynamics_deviation(dead, y) == pytest.approx(y[:, upper].std(0).mean())
    other = y.copy()
    other[:, bs.INDEX["eyeBlinkLeft"]] = 0.0  # blinks are not part of it
    assert upper_face_dynamics_deviation(other, y) == 0.0


def lagged(shift: int, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(pred, truth)`` cut from one smoothed random signal with ``pred[t] = truth[t - shift]``
    exactly (no wrap-around): the prediction is ``shift`` frames late when positive."""
    x = np.convolve(np.random.default_rng(seed).uniform(0, 1, n + 60), np.ones(5) / 5, mode="same")
    return x[30 - shift : 30 - shift + n], x[30 : 30 + n]


SHIFTS = [(s, fps) for fps in (30, 60) for s in (1, 2, 3, 5, -1, -2, -4)] + [(9, 60), (-11, 60)]


@pytest.mark.parametrize("shift,fps", SHIFTS)
def test_sync_lag_is_the_known_shift_with_its_sign(shift, fps):
    p, y = lagged(shift, seed=shift % 7)
    assert np.array_equal(p[max(shift, 0) : 400 + min(shift, 0)], y[max(-shift, 0) : 400 - max(shift, 0)])
    assert sync_lag_ms(p, y, fps) == pytest.approx(shift * 1000 / fps)  # late: positive
    assert sync_lag_ms(y, p, fps) == pytest.approx(-shift * 1000 / fps)  # early: negative
    assert sync_lag_ms(y, y, fps) == 0.0
    assert np.isnan(sync_lag_ms(np.full(400, 0.3), y, fps))


def test_sync_lag_searches_its_window_only():
    p, y = lagged(12)  # 400 ms late at 30 fps, 200 ms at 60 fps
    assert sync_lag_ms(p, y, 30, window_s=0.5) == pytest.approx(400.0)
    assert sync_lag_ms(p, y, 60, window_s=0.2) == pytest.approx(200.0)  # the window's edge is searched
    assert abs(sync_lag_ms(p, y, 30, window_s=0.2)) <= 200  # 12 frames is outside ±6


def test_score_file_reports_the_jaw_lag():
    y = sines()
    p = y.copy()
    p[2:, JAW] = y[:-2, JAW]  # jawOpen two frames late
    assert score_file(p, y, 30)["sync_lag_ms"] == pytest.approx(2000 / 30)
    assert score_file(p, y, 60)["sync_lag_ms"] == pytest.approx(2000 / 60)


def test_silence_rest():
    y = np.zeros((100, 52))
    p = y.copy()
    silent = np.zeros(100, bool)
    silent[:40] = True
    p[:40, bs.MOUTH_INDICES] = 0.2  # mouth stays open in the pause
    s = silence_rest(p, y, silent)
    assert s["silence/frames"] == 40
    assert s["silence/pred_mouth_mean"] == pytest.approx(0.2)
    assert s["silence/truth_mouth_mean"] == 0.0
    assert s["silence/mouth_mae"] == pytest.approx(0.2)
    assert np.isnan(silence_rest(p, y, np.zeros(100, bool))["silence/mouth_mae"])


def closure_track(n: int, closures, opens) -> np.ndarray:
    """Aperture track: jaw 0.5 by default, closed (jaw 0, mouthClose 0.8) in ``closures`` frame ranges."""
    y = np.zeros((n, 52))
    y[:, JAW] = 0.3
    for a, b in closures:
        y[a:b, JAW], y[a:b, CLOSE] = 0.0, 0.8
    for a, b in opens:
        y[a:b, JAW] = 0.7
    return y


def seg(phone, viseme, a, b):
    return {"phone": phone, "viseme": viseme, "start": a / FPS, "end": b / FPS}


def test_closure_recall_false_closures_and_timing():
    bil = [(10, 14), (40, 44), (70, 74), (100, 104)]
    vowels = [(20, 28), (50, 58), (80, 88)]
    phones = [seg("p", "closed", a, b) for a, b in bil] + [seg("A:", "ah", a, b) for a, b in vowels]
    phones += [seg("_", "rest", 0, 10), seg("I", "ih", 30, 34)]
    y = closure_track(120, bil, vowels)
    same = closure_scores(y, y, phones, FPS)
    assert same["closure/recall"] == 1.0 and same["closure/bilabials"] == 4
    assert same["closure/false_closure_rate"] == 0.0 and same["closure/open_vowels"] == 3
    assert same["closure/timing_offset_ms"] == 0.0
    assert same["closure/tau"] == pytest.approx(-0.8)
    # prediction closes only two of the four and keeps one open vowel shut
    p = closure_track(120, bil[:2], vowels[:2])
    p[80:88, JAW], p[80:88, CLOSE] = 0.0, 0.8
    miss = closure_scores(p, y, phones, FPS)
    assert miss["closure/recall"] == pytest.approx(0.5) and miss["closure/hits"] == 2
    assert miss["closure/false_closure_rate"] == pytest.approx(1 / 3)
    # a prediction that closes one frame late: hits (within the slack), +33 ms
    late = closure_track(120, [(a + 1, b + 1) for a, b in bil], vowels)
    s = closure_scores(late, y, phones, FPS)
    assert s["closure/recall"] == 1.0 and s["closure/timing_offset_ms"] == pytest.approx(1000 / 30)
    assert np.isnan(closure_scores(y, y, [seg("a", "ae", 1, 5)], FPS)["closure/recall"])


def test_score_file_perfect_and_aggregate():
    y = sines()
    phones = [seg("m", "closed", 5, 8), seg("a", "ae", 10, 20)]
    perfect = score_file(y, y, FPS, silent=np.arange(300) < 20, phones=phones)
    assert perfect["all/mae"] == 0 and perfect["mouth/pearson"] == pytest.approx(1.0)
    assert perfect["sync_lag_ms"] == 0 and perfect["lip_max_error"] == 0
    worse = score_file(np.clip(y + 0.1, 0, 1), y, FPS)
    agg = aggregate([perfect, worse])
    assert agg["files"] == 2 and agg["frames"] == 600
    assert agg["all/mae"] == pytest.approx((0 + worse["all/mae"]) / 2)
    assert agg["silence/mouth_mae"] == 0.0  # NaN-free mean over the one file that has it
    micro = micro_scores([y, y], [y, y], per_file=[perfect, perfect])
    assert micro["micro/mouth/pearson"] == pytest.approx(1.0) and micro["micro/closure/recall"] == 1.0


def test_shapes_must_match():
    with pytest.raises(ValueError):
        channel_mae(np.zeros((10, 52)), np.zeros((11, 52)))
