"""The upper face and other channels that speech does not (fully) determine.

* blinks (eyeBlinkLeft/Right together, every 3-5 s at random, 150-250 ms each),
* gaze shifts (eyeLook* channels: fixations held 0.7-2.5 s, joined by ~70 ms saccades),
* pitch-driven brows (browInnerUp / browOuterUp* / eyeWide* from the F0 contour of the clean
  speech, relative to the file's median F0; browDown* and mouthFrown* on low pitch),
* occasional smiles not tied to phones, and cheekSquint / eyeSquint following every smile,
* a slow sideways drift of the mouth and jaw.

All tracks are ``[T]`` or ``[T, 52]`` on the 30/60 fps grid of :mod:`koemorph.grid`; times
are seconds; ``rng`` is a per-file :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import numpy as np

from koemorph.blendshapes import INDEX
from koemorph.grid import SAMPLE_RATE, frame_centers

F0_MIN, F0_MAX = 60.0, 420.0  # Hz, search range of the pitch tracker
# Mouth-group channels moved by nothing but the slow random drift (:func:`drift`): audio cannot
# predict them, so any model's Pearson r on them is chance.
DRIFT_NAMES = ("jawForward", "jawLeft", "jawRight", "mouthLeft", "mouthRight")
_WIN = 640  # 40 ms analysis window at 16 kHz
_NFFT = 2048


def f0_track(samples: np.ndarray, n_frames: int, fps: int) -> np.ndarray:
    """F0 in Hz per grid frame (0 where unvoiced): ``[n_frames]`` float64.

    A cheap normalised-autocorrelation tracker on 40 ms windows centred on the grid frames
    of ``samples`` (16 kHz mono float). Voiced means a clear autocorrelation peak (> 0.45)
    in the 60-420 Hz lag range and a frame level above 3 % of the file's loudest frames.
    """
    x = np.asarray(samples, dtype=np.float64)
    centers = frame_centers(n_frames, fps)
    pad = np.pad(x, (_WIN, _WIN))
    idx = centers[:, None] + np.arange(_WIN)[None, :] + _WIN // 2
    frames = pad[np.minimum(idx, len(pad) - 1)]
    frames = frames - frames.mean(axis=1, keepdims=True)
    win = np.hanning(_WIN)
    spec = np.fft.rfft(frames * win, _NFFT)
    acf = np.fft.irfft(np.abs(spec) ** 2, _NFFT)[:, :_WIN]
    win_acf = np.fft.irfft(np.abs(np.fft.rfft(win, _NFFT)) ** 2, _NFFT)[:_WIN]
    acf = acf / np.maximum(win_acf[None, :], 1e-9)  # undo the window's lag taper
    energy = acf[:, 0]
    lo, hi = int(SAMPLE_RATE / F0_MAX), int(SAMPLE_RATE / F0_MIN)
    norm = acf[:, lo:hi] / np.maximum(energy[:, None], 1e-12)
    lag = np.argmax(norm, axis=1)
    peak = norm[np.arange(len(lag)), lag]
    rms = np.sqrt(np.maximum(energy, 0.0))
    loud = rms > 0.03 * (np.percentile(rms, 95) + 1e-9)
    voiced = (peak > 0.45) & loud
    return np.where(voiced, SAMPLE_RATE / (lag + lo), 0.0)


def _release(x: np.ndarray, fps: int, release_s: float) -> np.ndarray:
    """Instant attack, exponential release with time constant ``release_s``."""
    out = np.empty_like(x)
    decay = np.exp(-1.0 / (fps * release_s))
    level = 0.0
    for i, v in enumerate(x):
        level = max(v, level * decay)
        out[i] = level
    return out


def _smooth(x: np.ndarray, fps: int, sigma_s: float) -> np.ndarray:
    """Gaussian smoothing with ``sigma_s`` seconds, edges held (numpy only: scipy is slow to import)."""
    sigma = sigma_s * fps
    radius = max(1, int(4 * sigma + 0.5))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    padded = np.pad(x, radius, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def brow_signals(f0: np.ndarray, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(raise, lower)`` in [0, 1] per frame from the F0 contour (semitones above/below median)."""
    voiced = f0 > 0
    if voiced.sum() < 5:
        zero = np.zeros_like(f0)
        return zero, zero
    st = np.zeros_like(f0)
    st[voiced] = 12.0 * np.log2(f0[voiced] / np.median(f0[voiced]))
    up = np.clip((st - 0.5) / 3.5, 0.0, 1.0)
    down = np.clip((-st - 2.0) / 6.0, 0.0, 1.0)
    return _smooth(_release(up, fps, 0.35), fps, 0.05), _smooth(_release(down, fps, 0.25), fps, 0.05)


def blink_curve(n_frames: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Blink closure per frame in [0, 1]: fast close (40 %), slower open (60 %)."""
    times = np.arange(n_frames) / fps
    out = np.zeros(n_frames)
    t, end = rng.uniform(0.3, 2.5), (times[-1] if n_frames else 0.0)
    while t < end:
        dur, amp = rng.uniform(0.15, 0.25), rng.uniform(0.85, 1.0)
        tau = times - t
        close = np.where((tau >= 0) & (tau < 0.4 * dur), np.sin(0.5 * np.pi * tau / (0.4 * dur)), 0.0)
        opening = (tau >= 0.4 * dur) & (tau < dur)
        close = np.where(opening, np.cos(0.5 * np.pi * (tau - 0.4 * dur) / (0.6 * dur)), close)
        out = np.maximum(out, amp * close)
        t += rng.uniform(3.0, 5.0)
    return out


def gaze_curves(n_frames: int, fps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal (+ = towards the subject's left) and vertical (+ = up) gaze in [-1, 1]."""
    times = np.arange(n_frames) / fps
    h, v = np.zeros(n_frames), np.zeros(n_frames)
    t, cur_h, cur_v = 0.0, float(rng.normal(0, 0.2)), float(rng.normal(-0.05, 0.15))
    while t <= (times[-1] if n_frames else 0.0):
        nxt = t + rng.uniform(0.7, 2.5)
        new_h, new_v = float(rng.normal(0, 0.3)), float(rng.normal(-0.05, 0.2))
        seg = (times >= t) & (times < nxt)
        ramp = np.clip((times[seg] - t) / 0.07, 0.0, 1.0)  # the saccade into this fixation
        h[seg] = cur_h + (new_h - cur_h) * ramp
        v[seg] = cur_v + (new_v - cur_v) * ramp
        cur_h, cur_v, t = new_h, new_v, nxt
    return np.clip(h, -1, 1), np.clip(v, -1, 1)


def smile_bursts(n_frames: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Occasional smiles unrelated to the phones: raised-cosine bumps of 0.8-2 s, 0.15-0.35 high."""
    times = np.arange(n_frames) / fps
    out = np.zeros(n_frames)
    duration = n_frames / fps
    for _ in range(int(rng.poisson(duration / 8.0))):
        t0, length, amp = rng.uniform(0, duration), rng.uniform(0.8, 2.0), rng.uniform(0.15, 0.35)
        phase = np.clip((times - t0) / length, 0.0, 1.0)
        out = np.maximum(out, amp * 0.5 * (1 - np.cos(2 * np.pi * phase)))
    return out


def drift(n_frames: int, fps: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """A slow random wander in [-1, 1] * scale: knots every 0.6 s, linearly joined, smoothed."""
    knots_t = np.arange(0.0, n_frames / fps + 1.2, 0.6)
    knots = rng.normal(0.0, scale, len(knots_t))
    return _smooth(np.interp(np.arange(n_frames) / fps, knots_t, knots), fps, 0.15)


def add_face(
    track: np.ndarray, clean: np.ndarray, fps: int, rng: np.random.Generator, brow_gain: float
) -> None:
    """Fill the non-phonetic channels of ``track`` (``[T, 52]``, modified in place) and clip to [0, 1].

    ``clean`` is the speech at 16 kHz before noise and reverb (the F0 source).
    """
    n = track.shape[0]
    col = INDEX

    raise_, lower = brow_signals(f0_track(clean, n, fps), fps)
    track[:, col["browInnerUp"]] = 0.03 + brow_gain * 0.5 * raise_
    track[:, col["browOuterUpLeft"]] = brow_gain * 0.35 * raise_
    track[:, col["browOuterUpRight"]] = brow_gain * 0.33 * raise_
    track[:, col["eyeWideLeft"]] = track[:, col["eyeWideRight"]] = 0.12 * raise_
    track[:, col["browDownLeft"]] = track[:, col["browDownRight"]] = 0.2 * lower
    track[:, col["mouthFrownLeft"]] = track[:, col["mouthFrownRight"]] = 0.08 * lower

    blink = blink_curve(n, fps, rng)
    track[:, col["eyeBlinkLeft"]] = track[:, col["eyeBlinkRight"]] = blink

    h, v = gaze_curves(n, fps, rng)
    track[:, col["eyeLookOutLeft"]] = track[:, col["eyeLookInRight"]] = 0.6 * np.maximum(h, 0)
    track[:, col["eyeLookInLeft"]] = track[:, col["eyeLookOutRight"]] = 0.6 * np.maximum(-h, 0)
    track[:, col["eyeLookUpLeft"]] = track[:, col["eyeLookUpRight"]] = 0.5 * np.maximum(v, 0)
    down = 0.5 * np.maximum(-v, 0) + 0.25 * blink  # eyes roll down a little in a blink
    track[:, col["eyeLookDownLeft"]] = track[:, col["eyeLookDownRight"]] = down

    extra = smile_bursts(n, fps, rng)
    for side in ("Left", "Right"):
        smile = np.clip(track[:, col["mouthSmile" + side]] + extra, 0.0, 1.0)
        track[:, col["mouthSmile" + side]] = smile
        track[:, col["cheekSquint" + side]] = 0.55 * smile
        track[:, col["eyeSquint" + side]] = 0.25 * smile + 0.1 * blink

    side = drift(n, fps, rng, 0.04)
    track[:, col["mouthLeft"]] += np.maximum(side, 0)
    track[:, col["mouthRight"]] += np.maximum(-side, 0)
    track[:, col["jawLeft"]] += 0.5 * np.maximum(side, 0)
    track[:, col["jawRight"]] += 0.5 * np.maximum(-side, 0)
    track[:, col["jawForward"]] += np.abs(drift(n, fps, rng, 0.02))
    np.clip(track, 0.0, 1.0, out=track)
