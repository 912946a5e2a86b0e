"""PocketSphinx's MFCC front end, computed here, so that the cepstra can be transformed before decoding.

The bundled en-us model's ``feat.params`` fixes the front end (checked by :func:`check_model`): 16 kHz
int16 samples, pre-emphasis 0.97, 410-sample (25.625 ms) Hamming windows every 160 samples (10 ms), a
512-point power spectrum, 25 triangular mel filters of unit area from 130 to 6800 Hz with their edges
on FFT bins, natural log, an orthonormal DCT-II to 13 cepstra and a sine lifter of 22. Frame ``f``
starts at sample ``160 f``. Fed to ``Decoder.process_cep``, these cepstra decode to the same phones as
``process_raw`` on the same samples with the model's noise removal switched off (a test checks it);
noise removal has no equivalent here. As PocketSphinx's dither, 1 is added to a fixed, seeded quarter
of the int16 samples, so that digital silence does not give one constant cepstrum.

The decoder computes the rest (``1s_c_d_dd``): :func:`dynamic` mirrors it for adaptation.
"""

from __future__ import annotations

import os

import numpy as np

from koemorph.features.phones import SPHINX_HALF_WINDOW, SPHINX_HOP
from koemorph.grid import SAMPLE_RATE

HOP = SPHINX_HOP  # samples per frame (10 ms)
WINDOW = 2 * SPHINX_HALF_WINDOW  # samples per analysis window (25.625 ms)
NFFT = 512
NUM_CEPS = 13
PREEMPHASIS = 0.97
DITHER_SEED = 1
SPHINX_BLOCK = 4096  # frames computed at once (about 40 s of audio, some 20 MB of spectra)
MODEL_PARAMS = {  # what this module computes, as the model's feat.params names it
    "-lowerf": "130",
    "-upperf": "6800",
    "-nfilt": "25",
    "-transform": "dct",
    "-lifter": "22",
    "-feat": "1s_c_d_dd",
    "-agc": "none",
    "-cmn": "batch",
    "-varnorm": "no",
}


def check_model(model_dir: str) -> None:
    """Raise ValueError naming ``model_dir``'s ``feat.params`` when its front end is not this module's."""
    path = os.path.join(model_dir, "feat.params")
    with open(path, encoding="utf-8") as f:
        params = dict(line.split(None, 1) for line in f.read().splitlines() if line.strip())
    wrong = {k: params.get(k, "").strip() for k, v in MODEL_PARAMS.items() if params.get(k, "").strip() != v}
    if wrong:
        raise ValueError(f"{path}: front end differs from koemorph's PocketSphinx front end: {wrong}")


def _mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _filterbank() -> np.ndarray:
    """``[25, 257]``: triangular filters of unit area, edges rounded to FFT bins."""
    n = int(MODEL_PARAMS["-nfilt"])
    lo, hi = _mel(float(MODEL_PARAMS["-lowerf"])), _mel(float(MODEL_PARAMS["-upperf"]))
    edges = 700.0 * (10.0 ** (np.linspace(lo, hi, n + 2) / 2595.0) - 1.0)
    edges = np.round(edges * NFFT / SAMPLE_RATE) * SAMPLE_RATE / NFFT
    freqs = np.arange(NFFT // 2 + 1) * SAMPLE_RATE / NFFT
    bank = np.zeros((n, freqs.size))
    for i in range(n):
        left, centre, right = edges[i : i + 3]
        rise, fall = (freqs - left) / (centre - left), (right - freqs) / (right - centre)
        bank[i] = np.maximum(0.0, np.minimum(rise, fall)) * 2.0 / (right - left)
    return bank


def _dct() -> np.ndarray:
    """``[13, 25]``: orthonormal DCT-II rows times the sine lifter."""
    n = int(MODEL_PARAMS["-nfilt"])
    k, j = np.arange(NUM_CEPS)[:, None], np.arange(n)[None, :]
    dct = np.cos(np.pi * k * (j + 0.5) / n) * np.sqrt(2.0 / n)
    dct[0] *= np.sqrt(0.5)
    length = int(MODEL_PARAMS["-lifter"])
    lifter = 1.0 + length / 2.0 * np.sin(np.pi * np.arange(NUM_CEPS) / length)
    return dct * lifter[:, None]


FILTERBANK = _filterbank()
DCT = _dct()
HAMMING = 0.54 - 0.46 * np.cos(2.0 * np.pi * np.arange(WINDOW) / (WINDOW - 1))


def cepstra(pcm: np.ndarray) -> np.ndarray:
    """``[F, 13]`` float32 cepstra of ``pcm`` (``[N]`` int16 at 16 kHz), ``F = 1 + (N - 410) // 160``
    (0 when ``N < 410``); frame ``f`` covers samples ``160 f .. 160 f + 409``. (PocketSphinx's own
    front end also decodes a frame or two of zero padding past the last whole window.)"""
    x = np.asarray(pcm, dtype=np.int16).reshape(-1).astype(np.float64)
    frames = 0 if x.size < WINDOW else 1 + (x.size - WINDOW) // HOP
    if frames == 0:
        return np.zeros((0, NUM_CEPS), dtype=np.float32)
    rng = np.random.default_rng(DITHER_SEED)
    for a in range(0, x.size, SPHINX_BLOCK * HOP):  # dither in place, in blocks (one random stream)
        x[a : a + SPHINX_BLOCK * HOP] += rng.random(min(SPHINX_BLOCK * HOP, x.size - a)) < 0.25
    for b in range(x.size, 1, -SPHINX_BLOCK * HOP):  # pre-emphasis in place, from the end
        a = max(b - SPHINX_BLOCK * HOP, 1)
        x[a:b] -= PREEMPHASIS * x[a - 1 : b - 1]
    ceps = np.empty((frames, NUM_CEPS), dtype=np.float32)
    for a in range(0, frames, SPHINX_BLOCK):  # in blocks: an hour's windows at once would take GBs
        index = np.arange(WINDOW)[None, :] + HOP * np.arange(a, min(a + SPHINX_BLOCK, frames))[:, None]
        power = np.abs(np.fft.rfft(x[index] * HAMMING, NFFT)) ** 2
        ceps[a : a + len(index)] = np.log(np.maximum(power @ FILTERBANK.T, 1e-5)) @ DCT.T
    return ceps


def dynamic(ceps: np.ndarray) -> np.ndarray:
    """The decoder's view of ``ceps`` (``[F, 13]``): ``[3, F, 13]`` float64, batch-CMN'd cepstra, their
    deltas ``c[t+2] - c[t-2]`` and delta-deltas ``d[t+1] - d[t-1]`` (edges repeat the end frames)."""
    c = np.asarray(ceps, dtype=np.float64)
    c = c - c.mean(axis=0) if len(c) else c
    pad = np.pad(c, ((4, 4), (0, 0)), mode="edge")

    def shifted(k: int) -> np.ndarray:
        return pad[4 + k : 4 + k + len(c)]

    delta = shifted(2) - shifted(-2)
    delta2 = (shifted(3) - shifted(-1)) - (shifted(1) - shifted(-3))
    return np.stack([c, delta, delta2])
