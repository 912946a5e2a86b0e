"""Block geometry and window slicing shared by the data loader, the model and inference.

A *block* covers the output span of ``S`` consecutive grid frames ``[a, a + S)`` of one file.
All counts are grid frames at the features' fps (frame ``k`` sits at ``k / fps`` seconds):

* ``C = round(model.context_s * fps)``: mel frames an output frame sees up to and including itself
  (256 at 30 fps, 512 at 60 fps);
* ``L = round(model.lookahead_s * fps)``: future mel frames it may also see (0 = causal);
* ``E = round(model.emotion_context_s * fps)``: eGeMAPS frames it may see, itself included (600 at 30 fps);
* ``step = round(features.egemaps_step_s * fps)``: frames between emotion tokens (9 at 30 fps), so
  ``n_tokens = ceil(E / step)`` tokens (67).

The block's inputs are mel file frames ``[a - (C - 1), a + S + L)`` and eGeMAPS file frames
``[a - (E - 1), a + S)``; :func:`window` cuts them out of a per-file array and pads frames outside
the file. Output position ``p`` (file frame ``a + p``) may see mel frames ``[a+p-(C-1), a+p+L]`` and
eGeMAPS frames ``[a+p-(E-1), a+p]`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from koemorph.config import FeaturesConfig, ModelConfig


@dataclass(frozen=True)
class Spans:
    """Frame counts of a model's receptive field (see the module docstring)."""

    fps: int
    context: int  # C
    lookahead: int  # L
    emotion_context: int  # E
    step: int  # frames between emotion tokens

    @property
    def mel_window(self) -> int:
        """Mel frames one output frame sees: ``C + L``."""
        return self.context + self.lookahead

    @property
    def n_tokens(self) -> int:
        """Emotion tokens per output frame: frames t, t - step, ..., ``ceil(E / step)`` of them."""
        return -(-self.emotion_context // self.step)

    def mel_frames(self, a: int, span: int) -> tuple[int, int]:
        """File frames ``[start, stop)`` of the mel input for outputs ``[a, a + span)``."""
        return a - (self.context - 1), a + span + self.lookahead

    def egemaps_frames(self, a: int, span: int) -> tuple[int, int]:
        """File frames ``[start, stop)`` of the eGeMAPS input for outputs ``[a, a + span)``."""
        return a - (self.emotion_context - 1), a + span

    def span_of_mel(self, n_mel_frames: int) -> int:
        """Output span ``S`` of a block whose mel input has ``n_mel_frames`` rows."""
        return n_mel_frames - (self.context - 1) - self.lookahead


def spans(model_cfg: ModelConfig, features_cfg: FeaturesConfig) -> Spans:
    """:class:`Spans` of ``ModelConfig``/``FeaturesConfig`` (seconds converted at ``features_cfg.fps``)."""
    fps = int(features_cfg.fps)
    context = int(round(model_cfg.context_s * fps))
    lookahead = int(round(model_cfg.lookahead_s * fps))
    emotion = int(round(model_cfg.emotion_context_s * fps))
    step = int(round(features_cfg.egemaps_step_s * fps))
    if context < 1 or lookahead < 0 or emotion < 1 or step < 1:
        raise ValueError(
            f"bad spans at {fps} fps: context {context}, lookahead {lookahead}, "
            f"emotion context {emotion}, step {step} frames"
        )
    return Spans(fps, context, lookahead, emotion, step)


def window(array, start: int, stop: int, pad_value=0.0) -> np.ndarray:
    """Rows ``[start, stop)`` of ``array`` ``[T, D]``, rows outside ``[0, T)`` filled with ``pad_value``.

    ``array`` is anything sliceable with ``.shape`` (numpy, Zarr: only the rows inside the file are
    read). ``pad_value`` is a scalar or a ``[D]`` vector, in the same units as ``array`` (normalised
    arrays need a normalised pad, e.g. :func:`mel_pad_value`). Returns ``[stop - start, D]`` with
    ``array``'s dtype; ``start`` may be negative and ``stop`` may exceed ``T``.
    """
    start, stop = int(start), int(stop)
    if stop < start:
        raise ValueError(f"window stop {stop} < start {start}")
    n, d = int(array.shape[0]), int(array.shape[1])
    lo, hi = min(max(start, 0), n), max(min(stop, n), 0)
    inside = np.asarray(array[lo:hi]) if hi > lo else None
    dtype = inside.dtype if inside is not None else np.asarray(array[0:0]).dtype
    out = np.empty((stop - start, d), dtype=dtype)
    out[:] = np.broadcast_to(np.asarray(pad_value, dtype=dtype), (d,))
    if inside is not None:
        out[lo - start : hi - start] = inside
    return out


def mel_pad_value(mean, std, db_floor: float = -100.0) -> np.ndarray:
    """Normalised digital silence: ``(db_floor - mean) / std`` per mel bin, ``[n_mels]`` float32.

    The log-mel of zeros is exactly ``db_floor`` dB (fixed reference), so this is what frames
    before the file start would have been; ``mean``/``std`` are the train-split stats.
    """
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    return ((db_floor - mean) / std).astype(np.float32)
