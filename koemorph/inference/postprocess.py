"""Optional post-processing of rendered blendshapes, all off by default, all by channel NAME.

Applied by ``koemorph render`` after the model (and after any 30 <-> 60 fps resampling), on the
output grid: ``values`` ``[T, 52]`` float32 in [0, 1], Apple order, frame ``k`` at ``k / fps`` s.
Every time setting is in seconds, so the result means the same at 30 and 60 fps. Order:

1. **Smoothing** (:func:`smooth`): a Savitzky–Golay filter (local quadratic fit, zero phase, no lag)
   on top of the model's own one-pole smoothing, with separate windows for the mouth group
   (``jaw*``, ``mouth*``, ``tongueOut``) and the expression group (``eye*``, ``brow*``, ``cheek*``,
   ``nose*``). A quadratic fit keeps peaks and closures far better than a moving average of the
   same width, so the mouth can take a short window (0.1 s) and the upper face a longer one.
2. **Rest pose in silence** (:func:`rest_pose`): frames whose audio RMS is ``rest_threshold_db``
   below the file's speech level (95th percentile of frame RMS) for at least ``rest_min_silence_s``
   are eased toward 0 on the mouth channels, with a smoothstep fade of ``rest_fade_s`` at each
   edge of the pause (so short stop closures inside words are never touched).
3. **Clamping** (:func:`clamp`): ``{name: [lo, hi]}``; a bound is a number or another channel's
   name, e.g. ``{"eyeBlinkLeft": [0, 0.8], "mouthClose": [0, "jawOpen"]}`` keeps mouthClose <= jawOpen
   (MetaHuman treats mouthClose as a corrective on jawOpen). Numeric bounds are applied to all
   channels first, then channel bounds, in the order given.
"""

from __future__ import annotations

import numpy as np

from koemorph import grid
from koemorph.blendshapes import EXPRESSION_INDICES, MOUTH_INDICES, index_of
from koemorph.config import RenderConfig, parse_bound


def parse_clamp(items) -> dict:
    """``["eyeBlinkLeft=0:0.8", "mouthClose=0:jawOpen"]`` -> ``{"eyeBlinkLeft": [0.0, 0.8], ...}``."""
    out = {}
    for text in items or ():
        name, sep, rng = str(text).partition("=")
        lo, sep2, hi = rng.partition(":")
        if not sep or not sep2:
            raise ValueError(f"clamp {text!r}: expected NAME=LO:HI (LO/HI a number or a channel name)")
        out[name.strip()] = [parse_bound(lo.strip()), parse_bound(hi.strip())]
    return out


def _savgol_window(seconds: float, fps: int, polyorder: int) -> int:
    """Odd window length in frames for ``seconds`` (0 if too short to smooth)."""
    n = 2 * int(round(seconds * fps / 2.0)) + 1
    return n if seconds > 0 and n > polyorder + 1 else 0


def smooth(values: np.ndarray, fps: int, cfg: RenderConfig) -> np.ndarray:
    """Savitzky–Golay smoothing per group: ``[T, 52]`` -> ``[T, 52]`` float32 clipped to [0, 1]."""
    from scipy.signal import savgol_filter

    out = np.array(values, dtype=np.float32, copy=True)
    for seconds, cols in ((cfg.smooth_mouth_s, MOUTH_INDICES), (cfg.smooth_face_s, EXPRESSION_INDICES)):
        win = _savgol_window(seconds, fps, cfg.smooth_polyorder)
        if win and out.shape[0] >= win:
            out[:, cols] = savgol_filter(out[:, cols], win, cfg.smooth_polyorder, axis=0, mode="interp")
    return np.clip(out, 0.0, 1.0)


def frame_rms_db(samples: np.ndarray, n_frames: int, fps: int) -> np.ndarray:
    """RMS in dB (re full scale) of a two-hop window centred on each grid frame: ``[n_frames]`` float64.

    ``samples`` ``[N]`` float at 16 kHz; zero outside the file; floor -120 dB. Works in blocks of
    4096 frames, so memory does not grow with the file beyond the output.
    """
    x = np.asarray(samples).reshape(-1)
    half = grid.SAMPLE_RATE // fps
    centers = grid.frame_centers(n_frames, fps)
    lo, hi = np.clip(centers - half, 0, x.size), np.clip(centers + half, 0, x.size)
    power = np.zeros(n_frames)
    for b0 in range(0, n_frames, 4096):
        a, b = int(lo[b0]), int(hi[min(b0 + 4096, n_frames) - 1])
        seg = x[a:b].astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(seg * seg)])
        sl = slice(b0, b0 + 4096)
        power[sl] = (csum[hi[sl] - a] - csum[lo[sl] - a]) / (2 * half)
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def silence_weight(samples: np.ndarray, n_frames: int, fps: int, cfg: RenderConfig) -> np.ndarray:
    """Rest-pose weight per frame, ``[n_frames]`` float64 in [0, 1]: 0 in speech, 1 deep in a pause.

    A pause is a run of at least ``rest_min_silence_s`` of frames ``rest_threshold_db`` below the
    95th percentile of the file's frame RMS; the weight rises with a smoothstep over
    ``rest_fade_s`` from each edge of the run.
    """
    if n_frames == 0:
        return np.zeros(0)
    db = frame_rms_db(samples, n_frames, fps)
    silent = db < np.percentile(db, 95) - cfg.rest_threshold_db
    weight = np.zeros(n_frames)
    fade = max(1, int(round(cfg.rest_fade_s * fps)))
    min_len = int(round(cfg.rest_min_silence_s * fps))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    for a, b in zip(edges[0::2], edges[1::2]):  # silent run [a, b)
        if b - a < max(1, min_len):
            continue
        k = np.arange(b - a)
        s = np.clip(np.minimum(k + 1, b - a - k) / fade, 0.0, 1.0)
        weight[a:b] = s * s * (3.0 - 2.0 * s)
    return weight


def rest_pose(values: np.ndarray, samples: np.ndarray, fps: int, cfg: RenderConfig) -> np.ndarray:
    """Ease the mouth channels toward 0 in long silences (see :func:`silence_weight`): ``[T, 52]``."""
    out = np.array(values, dtype=np.float32, copy=True)
    w = silence_weight(samples, out.shape[0], fps, cfg).astype(np.float32)[:, None]
    out[:, MOUTH_INDICES] *= 1.0 - w
    return out


def clamp(values: np.ndarray, ranges: dict) -> np.ndarray:
    """Clamp channels by name: ``{name: [lo, hi]}``, bounds numbers or channel names. ``[T, 52]``."""
    out = np.array(values, dtype=np.float32, copy=True)
    items = [(index_of(n), lo, hi) for n, (lo, hi) in ranges.items()]
    for col, lo, hi in items:  # numeric bounds first
        if not isinstance(lo, str):
            out[:, col] = np.maximum(out[:, col], lo)
        if not isinstance(hi, str):
            out[:, col] = np.minimum(out[:, col], hi)
    for col, lo, hi in items:  # then bounds given by other channels
        if isinstance(lo, str):
            out[:, col] = np.maximum(out[:, col], out[:, index_of(lo)])
        if isinstance(hi, str):
            out[:, col] = np.minimum(out[:, col], out[:, index_of(hi)])
    return out


def postprocess(values: np.ndarray, samples: np.ndarray, fps: int, cfg: RenderConfig) -> np.ndarray:
    """Smoothing, rest pose, clamping (each only when set): ``[T, 52]`` float32 in [0, 1] at ``fps``.

    ``samples`` ``[N]`` float32 at 16 kHz (used by the rest pose only).
    """
    out = np.asarray(values, dtype=np.float32)
    if cfg.smooth_mouth_s or cfg.smooth_face_s:
        out = smooth(out, fps, cfg)
    if cfg.rest_pose:
        out = rest_pose(out, samples, fps, cfg)
    if cfg.clamp:
        out = clamp(out, cfg.clamp)
    return np.clip(out, 0.0, 1.0)
