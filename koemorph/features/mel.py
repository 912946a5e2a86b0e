"""Log-mel spectrogram on the exact koemorph time grid.

One analysis frame per grid frame: frame ``k`` is the ``n_fft``-sample Hann-windowed slice
*centred* on sample ``grid.frame_centers(T, fps)[k] = round(k * 16000 / fps)``. The signal is
treated as zero outside ``[0, N)`` (equivalent to zero padding by ``n_fft // 2`` at both ends,
librosa's ``center=True, pad_mode="constant"``). Because every centre is computed from ``k``
directly, rather than by accumulating an integer hop, nothing drifts over long files.

Scaling uses a *fixed* reference: ``10 * log10(max(P, 10 ** (db_floor / 10)))`` where ``P`` is the
mel-filtered power spectrum ``|STFT|**2`` of the raw float samples (full scale = amplitude 1.0,
reference power 1.0, i.e. ``librosa.power_to_db(S, ref=1.0, amin=10**(db_floor/10), top_db=None)``).
Nothing depends on the rest of the window or file, so the same audio gives the same values
wherever it appears (never scaled by a window's or a file's own maximum).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
import scipy.signal

from koemorph import grid
from koemorph.config import FeaturesConfig

BLOCK_FRAMES = 4096  # frames per block: bounds memory to ~50 MB whatever the file length


@functools.lru_cache(maxsize=8)
def mel_filters(n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney mel filterbank (``librosa.filters.mel``), transposed: ``[n_fft // 2 + 1, n_mels]`` float32.

    Cached per parameter set and read-only.
    """
    import librosa

    fb = librosa.filters.mel(
        sr=grid.SAMPLE_RATE, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm="slaney"
    )
    out = np.ascontiguousarray(fb.T, dtype=np.float32)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    """Periodic Hann window (librosa's ``"hann"``): ``[n_fft]`` float32, read-only."""
    w = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    w.setflags(write=False)
    return w


def mel_power_at(samples: np.ndarray, centers: np.ndarray, cfg: FeaturesConfig) -> np.ndarray:
    """Mel power spectrum of the frames centred on ``centers``: ``[len(centers), n_mels]`` float32.

    ``samples``: ``[N]`` float at 16 kHz. ``centers``: sample indices, increasing; the signal is
    zero outside ``[0, N)``. Frames are processed in blocks of :data:`BLOCK_FRAMES`, each block
    framed from a zero-padded copy of only the samples it needs.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    centers = np.asarray(centers, dtype=np.int64).reshape(-1)
    n_fft = int(cfg.n_fft)
    half = n_fft // 2
    window = _hann(n_fft)
    fb = mel_filters(n_fft, int(cfg.n_mels), float(cfg.fmin), float(cfg.fmax))
    out = np.empty((centers.size, fb.shape[1]), dtype=np.float32)
    for b0 in range(0, centers.size, BLOCK_FRAMES):
        c = centers[b0 : b0 + BLOCK_FRAMES]
        lo = int(c[0]) - half  # first sample of the block's first frame (may be < 0)
        hi = int(c[-1]) - half + n_fft  # one past the last sample of its last frame
        seg = np.zeros(hi - lo, dtype=np.float32)
        a, b = max(lo, 0), min(hi, x.size)
        if b > a:
            seg[a - lo : b - lo] = x[a:b]
        frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[c - half - lo]  # [B, n_fft] copy
        frames *= window
        spec = scipy.fft.rfft(frames, axis=1, workers=1)  # complex64 [B, n_fft//2+1]
        power = spec.real * spec.real
        power += spec.imag * spec.imag
        np.matmul(power, fb, out=out[b0 : b0 + c.size])
    return out


def power_to_db(power: np.ndarray, db_floor: float) -> np.ndarray:
    """``10 * log10(max(power, 10 ** (db_floor / 10)))`` with reference power 1.0, float32, in place."""
    np.maximum(power, np.float32(10.0 ** (db_floor / 10.0)), out=power)
    np.log10(power, out=power)
    power *= np.float32(10.0)
    return power


def log_mel(samples: np.ndarray, cfg: FeaturesConfig) -> np.ndarray:
    """Log-mel on the grid: ``[T, n_mels]`` float32 dB (re power 1.0), ``T = num_frames_for_samples(N, fps)``.

    ``samples``: ``[N]`` float32 mono at 16 kHz in [-1, 1]. Row ``k`` describes the ``n_fft`` samples
    centred on ``round(k * 16000 / fps)`` (time ``k / fps`` s), zero padded by ``n_fft // 2`` at
    both file ends. Values are ``>= db_floor``; a full-scale 1 kHz sine reads about +32 dB in its band.
    Pure function: no I/O, no state beyond cached filters. An empty input gives ``[0, n_mels]``.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n_frames = grid.num_frames_for_samples(x.size, cfg.fps)
    if n_frames == 0:
        return np.zeros((0, int(cfg.n_mels)), dtype=np.float32)
    power = mel_power_at(x, grid.frame_centers(n_frames, cfg.fps), cfg)
    return power_to_db(power, float(cfg.db_floor))
