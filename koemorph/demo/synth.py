"""Synthetic speech-like audio for feature tests and benchmarks (no TTS needed).

A source-filter toy: a glottal pulse train with a drifting F0 through three formant-like
resonators for voiced "syllables", high-passed noise bursts for fricatives, and pauses.
It is not speech, but it exercises pitch, voicing, loudness, formants and spectral shape
the way eGeMAPS and log-mel expect.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from koemorph.grid import SAMPLE_RATE


def _resonator(freq_hz: float, bandwidth_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Second-order all-pole resonance: ``(b, a)`` for ``scipy.signal.lfilter``."""
    r = np.exp(-np.pi * bandwidth_hz / SAMPLE_RATE)
    theta = 2.0 * np.pi * freq_hz / SAMPLE_RATE
    return np.array([1.0 - r]), np.array([1.0, -2.0 * r * np.cos(theta), r * r])


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine fade-in/out envelope of length ``n`` (10 ms edges)."""
    edge = max(1, min(n // 2, SAMPLE_RATE // 100))
    env = np.ones(n)
    fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge) / edge)
    env[:edge] = fade
    env[n - edge :] = fade[::-1]
    return env


def speechlike(duration_s: float, seed: int = 0, peak: float = 0.5) -> np.ndarray:
    """``[round(duration_s * 16000)]`` float32 at 16 kHz, peak amplitude ``peak``; deterministic per seed."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * SAMPLE_RATE))
    out = np.zeros(n)
    pos = int(rng.integers(0, SAMPLE_RATE // 5))
    f0_base = rng.uniform(100.0, 180.0)
    b_hp, a_hp = scipy.signal.butter(2, 2500.0, btype="high", fs=SAMPLE_RATE)
    while pos < n:
        kind = rng.choice(3, p=[0.65, 0.2, 0.15])  # voiced, fricative, pause
        length = int(SAMPLE_RATE * (rng.uniform(0.08, 0.3) if kind != 2 else rng.uniform(0.15, 0.7)))
        length = min(length, n - pos)
        if kind == 0:  # voiced: pulse train, F0 glide, formants
            f0 = f0_base * np.exp(np.linspace(rng.normal(0, 0.12), rng.normal(0, 0.12), length))
            phase = np.cumsum(f0 / SAMPLE_RATE)
            src = np.diff(np.floor(phase), prepend=0.0)  # one impulse per period
            src = scipy.signal.lfilter([1.0], [1.0, -0.95], src)  # glottal roll-off
            seg = np.zeros(length)
            f1, f2, f3 = rng.uniform(300, 900), rng.uniform(900, 2300), rng.uniform(2400, 3200)
            formants = ((f1, 80), (f2, 120), (f3, 200))
            for fc, bw in formants:
                b, a = _resonator(fc, bw)
                seg += scipy.signal.lfilter(b, a, src)
            seg *= rng.uniform(0.3, 1.0) / (np.abs(seg).max() + 1e-9)
        elif kind == 1:  # fricative: high-passed noise
            seg = scipy.signal.lfilter(b_hp, a_hp, rng.standard_normal(length)) * rng.uniform(0.05, 0.25)
        else:  # pause: faint room noise
            seg = rng.standard_normal(length) * 1e-3
        out[pos : pos + length] = seg * _ramp(length)
        pos += length
        f0_base = float(np.clip(f0_base * np.exp(rng.normal(0, 0.05)), 80.0, 250.0))
    out += rng.standard_normal(n) * 3e-4
    out *= peak / (np.abs(out).max() + 1e-12)
    return out.astype(np.float32)
