"""Causal sliding-window eGeMAPSv02 functionals (88 per window), aligned to the koemorph grid.

Licence: this module drives openSMILE, whose open-source version is under the audEERING
Research License (non-commercial use only, features extracted with it included). It is an
optional extra (``pip install koemorph[egemaps]``); switch it off with ``features.egemaps: false``.

Windows (all times in seconds from the file start, exact multiples of the step in samples):
window ``j`` ends at ``t_j = (j + 1) * egemaps_step_s`` for every ``t_j <= duration`` and covers
``[max(0, t_j - egemaps_context_s), t_j]`` (20 s, shorter near the start). All ``K`` windows come
from ONE openSMILE pass (per 5-min chunk, below): the LLDs are computed once and the shipped
list-mode include (``shared/FrameModeFunctionalsMulti.conf.inc``) re-frames all 88 functionals.

Three measured openSMILE facts shape the code:

* Look-ahead. A list-mode window whose nominal end is ``e`` reads audio past ``e``: the LLD frames
  are up to 60 ms long, the ``sma3`` smoother looks one frame ahead, and the F0 Viterbi smoother
  (``bufferLength = 40`` frames) decides F0 with future frames. Measured on pitched audio, audio
  after ``e`` still changed F0 functionals for guards up to 0.07 s. So each window is *requested*
  to end ``guard`` seconds early (``egemaps_guard_s``, default 0.1 s): the row labelled ``t_j`` is
  computed from the LLD frames openSMILE maps to ``[max(0, t_j - context), t_j - guard]`` (+2.5 ms,
  see :func:`_frame_list`), which in practice depend only on audio before ``t_j`` (tests check it
  at a window end). The Viterbi buffer could in principle reach 0.4 s ahead; no case was seen.
* End of file. openSMILE emits a list window only if about 0.05 s of audio follows its requested
  end, so without the guard the window ending exactly at EOF is dropped. With the guard it is
  emitted; if openSMILE still returns fewer rows than requested, the missing trailing windows are
  computed with :func:`egemaps_per_window` (never padded by repetition).
* Labels. Returned end times are late by about 0.06 s and the last one is overwritten with the
  file end, so rows are matched to *our* requested list by position, after checking the count
  and that every returned end lies within 0.2 s after its requested end.

Memory: openSMILE keeps every intermediate level of a pass (~33 MB per minute of audio, so
~2 GB for an hour), so long files are processed in passes of :data:`CHUNK_WINDOWS` windows
(5 min), each over just the audio its windows need plus :data:`CHUNK_MARGIN_S` either side
(measured peak ~+300 MB whatever the file length; ~7 % of the audio is processed twice). Chunked
results equal a single pass exactly (tested).

Non-finite values are replaced by 0.0 (none were seen on test audio in list mode; openSMILE
returns NaN rows for segments too short to analyse).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from koemorph import grid
from koemorph.config import FeaturesConfig

EGEMAPS_DIM = 88  # eGeMAPSv02 functionals
_LABEL_TOLERANCE_S = 0.2  # returned end label vs requested end (measured: +0.06 s)
LLD_HOP = grid.SAMPLE_RATE // 100  # eGeMAPS LLD frame step: 10 ms
CHUNK_WINDOWS = 1000  # windows per openSMILE pass (5 min of audio at 0.3 s): bounds memory
CHUNK_MARGIN_S = 1.0  # extra audio before/after a chunk's windows so smoother state matches


def _to_samples(seconds: float, what: str) -> int:
    """``seconds`` as an exact whole number of samples at 16 kHz, else ValueError."""
    n = round(float(seconds) * grid.SAMPLE_RATE)
    if n <= 0 or abs(n - float(seconds) * grid.SAMPLE_RATE) > 1e-6:
        raise ValueError(f"{what}={seconds!r} s is not a positive whole number of samples at 16 kHz")
    return int(n)


def _params(cfg: FeaturesConfig) -> tuple[int, int, int]:
    """``(step, context, guard)`` in samples, validated."""
    step = _to_samples(cfg.egemaps_step_s, "egemaps_step_s")
    context = _to_samples(cfg.egemaps_context_s, "egemaps_context_s")
    guard_s = float(cfg.egemaps_guard_s)
    guard = round(guard_s * grid.SAMPLE_RATE)
    if guard < 0 or guard >= step or context < step:
        raise ValueError(
            f"need 0 <= egemaps_guard_s ({guard_s}) < egemaps_step_s ({cfg.egemaps_step_s}) "
            f"<= egemaps_context_s ({cfg.egemaps_context_s})"
        )
    return step, context, int(guard)


def window_end_times(n_samples: int, cfg: FeaturesConfig) -> np.ndarray:
    """Window end times ``t_j = (j + 1) * step`` in seconds: ``[K]`` float64."""
    step, _, _ = _params(cfg)
    k = np.arange(1, int(n_samples) // step + 1, dtype=np.int64)
    return k * step / grid.SAMPLE_RATE


def window_index_for_frames(n_frames: int, n_windows: int, cfg: FeaturesConfig) -> np.ndarray:
    """Causal sample-and-hold index: ``[n_frames]`` int64, ``-1`` where no window has ended yet.

    Frame ``i`` (time ``i / fps``) takes the latest window ``j`` with ``(j+1)*step <= i/fps``, i.e.
    ``j = floor(i * 16000 / (step_samples * fps)) - 1``, in exact integer arithmetic (at 30 fps
    and 0.3 s steps frame 9 sees window 0, frame 8 sees none); clipped to ``n_windows - 1``.
    """
    step, _, _ = _params(cfg)
    fps = grid.check_fps(cfg.fps)
    i = np.arange(int(n_frames), dtype=np.int64)
    j = (i * grid.SAMPLE_RATE) // (step * fps) - 1
    return np.minimum(j, int(n_windows) - 1)


def align_to_grid(native: np.ndarray, n_frames: int, cfg: FeaturesConfig) -> np.ndarray:
    """Sample-and-hold ``native`` ``[K, 88]`` onto the grid: ``[n_frames, 88]`` float32.

    Rows before the first window ends are zeros (see :func:`window_index_for_frames`).
    """
    native = np.asarray(native, dtype=np.float32)
    j = window_index_for_frames(n_frames, native.shape[0], cfg)
    out = np.zeros((int(n_frames), native.shape[1] if native.ndim == 2 else EGEMAPS_DIM), dtype=np.float32)
    ok = j >= 0
    out[ok] = native[j[ok]]
    return out


@functools.lru_cache(maxsize=1)
def _plain_smile():
    """eGeMAPSv02 functionals over the whole input signal (one row per call)."""
    import opensmile

    return opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals, num_workers=1)


def egemaps_feature_names() -> list[str]:
    """The 88 eGeMAPSv02 functional names, in column order (from openSMILE)."""
    names = list(_plain_smile().feature_names)
    assert len(names) == EGEMAPS_DIM, len(names)
    return names


def _list_size(n: int) -> int:
    """Windows to request for a pass that needs ``n``: the next power of two >= ``n + 1`` (at least
    64, at most :data:`CHUNK_WINDOWS`), so a few cached lists serve every file length and a short
    file does not pay openSMILE's parsing of 1000 windows. Requested windows past the audio's end
    are not emitted, and rows past ``n`` are ignored, so the size never changes a value."""
    return min(CHUNK_WINDOWS, max(64, 1 << int(n).bit_length()))


@functools.lru_cache(maxsize=16)
def _frame_list(first: int, count: int, offset: int, step: int, context: int, guard: int) -> str:
    """openSMILE ``frameList`` for windows ``first .. first+count-1``, seconds relative to sample ``offset``.

    ``"a0s-b0s,a1s-b1s,..."`` with ``b = t_j - guard`` and ``a = max(0, t_j - context)``, both
    shifted by a quarter LLD hop (2.5 ms): openSMILE turns times into LLD frame indices, and a time
    exactly on a 10-ms boundary can land on either side by float rounding (whole rows then differ
    by one LLD frame between a chunked and a whole-file pass).
    """
    ends = np.arange(first + 1, first + count + 1, dtype=np.int64) * step
    nudge = LLD_HOP // 4  # keep times off exact 10-ms LLD boundaries, where float rounding flips
    starts = np.maximum(ends - context, 0) - offset + nudge
    stops = ends - guard - offset + nudge
    sr = grid.SAMPLE_RATE
    return ",".join(f"{a / sr:.6f}s-{b / sr:.6f}s" for a, b in zip(starts.tolist(), stops.tolist()))


@functools.lru_cache(maxsize=16)
def _list_smile(frame_list: str):
    """A list-mode eGeMAPSv02 Smile for ``frame_list``; windows past the input's end are not emitted.

    Cached per process: with the default config every chunk after the first requests the same
    relative list, so a process builds at most two per list size (:func:`_list_size`).
    """
    import os

    import opensmile

    multi = os.path.join(_plain_smile().default_config_root, "shared", "FrameModeFunctionalsMulti.conf.inc")
    options = {"frameModeFunctionalsConf": multi, "frameList": frame_list}
    return opensmile.Smile(
        opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals, options=options, num_workers=1
    )


def _one_pass_chunk(x: np.ndarray, j0: int, j1: int, cfg: FeaturesConfig) -> np.ndarray:
    """Windows ``j0 .. j1-1`` from one openSMILE pass over just the audio they need: ``[j1-j0, 88]``.

    The pass reads ``x[a0:a1]`` with ``a0`` = the first window's start minus :data:`CHUNK_MARGIN_S`
    (rounded down to the 10-ms LLD hop, so LLD frames sit on the same absolute grid as a whole-file
    pass) and ``a1`` = the last window's end plus the margin (for the smoothers' look-ahead).
    """
    step, context, guard = _params(cfg)
    sr = grid.SAMPLE_RATE
    margin = round(CHUNK_MARGIN_S * sr)
    a0 = max(0, (j0 + 1) * step - context - margin) // LLD_HOP * LLD_HOP
    a1 = min(x.size, j1 * step + margin)
    n = j1 - j0
    seg = _as_pcm_float(x[a0:a1])  # clipped per pass: no whole-file copy
    df = _list_smile(_frame_list(j0, _list_size(n), a0, step, context, guard)).process_signal(seg, sr)
    values = df.to_numpy(dtype=np.float64)
    if values.shape[1] != EGEMAPS_DIM:
        raise RuntimeError(f"openSMILE returned {values.shape[1]} eGeMAPS columns, expected {EGEMAPS_DIM}")
    got = min(values.shape[0], n)
    # Check the by-position match on every row whose label openSMILE did not overwrite (the last one).
    labels = df.index.get_level_values("end").total_seconds().to_numpy()[: min(got, values.shape[0] - 1)]
    requested = ((np.arange(labels.size) + j0 + 1) * step - guard - a0 + LLD_HOP // 4) / sr
    lag = labels - requested
    if labels.size and (lag.min() < -1e-3 or lag.max() > _LABEL_TOLERANCE_S):
        raise RuntimeError(
            f"openSMILE window labels do not match the requested list (lag {lag.min():.3f}.."
            f"{lag.max():.3f} s); refusing to align by position"
        )
    out = np.empty((n, EGEMAPS_DIM), dtype=np.float32)
    out[:got] = _finite(values[:got])
    if got < n:  # trailing windows openSMILE did not emit (EOF): compute them directly
        ends = (np.arange(j0 + got, j1) + 1) * step  # samples; the same segments from a tail of x
        lo = max(0, int(ends[0]) - context)
        out[got:] = egemaps_per_window(x[lo:], cfg, (ends - lo) / sr)
    return out


def _as_pcm_float(samples: np.ndarray) -> np.ndarray:
    """float32 ``[N]`` clipped to ``[-1, 32767/32768]`` (openSMILE multiplies by 32768 and casts to int16)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    return np.clip(x, -1.0, 32767.0 / 32768.0).astype(np.float32, copy=False)


def _finite(values: np.ndarray) -> np.ndarray:
    """float32 copy with NaN/Inf replaced by 0."""
    return np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def egemaps_windows(samples: np.ndarray, cfg: FeaturesConfig) -> tuple[np.ndarray, np.ndarray]:
    """The native windows: ``([K, 88] float32, [K] float64 window_end_s)``.

    ``samples``: ``[N]`` float32 at 16 kHz in [-1, 1]. ``K = N // step_samples``; ``K = 0`` gives
    empty arrays. One openSMILE pass per :data:`CHUNK_WINDOWS` windows (5 min of audio); see the
    module docstring for the window definition and look-ahead guard.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)  # clipped pass by pass (_one_pass_chunk)
    ends_s = window_end_times(x.size, cfg)
    k = ends_s.size
    if k == 0:
        return np.zeros((0, EGEMAPS_DIM), dtype=np.float32), ends_s
    out = np.empty((k, EGEMAPS_DIM), dtype=np.float32)
    for j0 in range(0, k, CHUNK_WINDOWS):
        j1 = min(k, j0 + CHUNK_WINDOWS)
        out[j0:j1] = _one_pass_chunk(x, j0, j1, cfg)
    return out, ends_s


def egemaps(samples: np.ndarray, cfg: FeaturesConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """eGeMAPS on the grid: ``(aligned [T, 88] float32, native [K, 88] float32, window_end_s [K] float64)``.

    ``samples``: ``[N]`` float32 mono at 16 kHz in [-1, 1]; ``T = grid.num_frames_for_samples(N, fps)``.
    ``native[j]`` summarises the audio of ``[max(0, t_j - context), t_j]`` with
    ``t_j = window_end_s[j] = (j + 1) * egemaps_step_s``. ``aligned[i]`` (grid time ``i / fps``) is
    ``native[j]`` for the latest ``t_j <= i / fps`` (causal sample-and-hold, see
    :func:`window_index_for_frames`); frames before the first window ends (``t < step``, the first
    9 frames at 30 fps) are all zeros, as is everything for files shorter than one step (``K = 0``).
    Raw functional values, not normalised; NaN/Inf replaced by 0.
    """
    native, ends_s = egemaps_windows(samples, cfg)
    n_frames = grid.num_frames_for_samples(np.asarray(samples).size, cfg.fps)
    return align_to_grid(native, n_frames, cfg), native, ends_s


def egemaps_per_window(samples: np.ndarray, cfg: FeaturesConfig, window_ends: np.ndarray) -> np.ndarray:
    """The naive reference: one ``process_signal`` call per window: ``[K, 88]`` float32.

    Window ending at ``window_ends[j]`` seconds (rounded to a sample) is the audio
    ``samples[max(0, end - context) : end]`` processed on its own, so it is causal by construction.
    This is what the original did every 300 ms; use it for tests and benchmarks only.
    """
    x = _as_pcm_float(samples)
    _, context, _ = _params(cfg)
    smile = _plain_smile()
    ends = np.rint(np.asarray(window_ends, dtype=np.float64).reshape(-1) * grid.SAMPLE_RATE).astype(np.int64)
    out = np.zeros((ends.size, EGEMAPS_DIM), dtype=np.float32)
    for row, end in enumerate(ends.tolist()):
        end = min(end, x.size)
        seg = x[max(0, end - context) : end]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Segment too short, filling with NaN."
            values = smile.process_signal(seg, grid.SAMPLE_RATE).to_numpy(dtype=np.float64)
        out[row] = _finite(values[-1])
    return out
