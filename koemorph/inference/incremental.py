"""The dual-stream model's forward pass for a stream: work shared between calls is done once.

A stream calls the model on a few new output frames at a time (one per 33 ms chunk), each with
its whole window (``C - 1 + L`` mel rows, ``E`` eGeMAPS rows). Two parts of that work repeat from
call to call, and are cached here (same functions on the same rows, so the same values up to
float rounding; the streaming tests compare with ``render``):

* the mel stream's per-frame work (:class:`~koemorph.model.dual_stream.BandMelStream` with
  one-frame tokens and no temporal layers): each frame-feature row is encoded once, when it
  arrives, into its attention parts (the frame part of every head's and query's score, and the
  values: :meth:`~koemorph.model.layers.WindowAttention.frame_parts`); the queries' part is
  computed once per utterance; rows before the stream start (and past its end, at the flush)
  are the padding rows;
* the emotion stream's output: it depends on the held eGeMAPS windows only, which change once per
  update (every ``step`` frames), so it is computed once per update when ``step`` frames are a
  whole number of eGeMAPS updates.

The rest of the forward pass (fusion, decoder, smoothing) is :class:`DualStreamModel`'s own,
step by step. :func:`supports` says whether a model can use this path (otherwise the streamer
calls the model as a whole).
"""

from __future__ import annotations

import numpy as np
import torch

from koemorph import grid
from koemorph.model.layers import smooth_outputs


def supports(model) -> bool:
    """True for a dual-stream model whose mel tokens are per frame (no conv kernel, temporal layers
    or band overlap)."""
    from koemorph.model.dual_stream import DualStreamModel

    if not isinstance(model, DualStreamModel):
        return False
    ms = model.mel_stream
    return ms.kernel == 1 and ms.temporal is None and ms.overlap == 0


class IncrementalForward:
    """Cached per-frame attention parts and emotion outputs of one utterance (a new one per utterance)."""

    def __init__(self, model, pad_row: np.ndarray, frames_per_update: int | None):
        self.model, self.ms = model, model.mel_stream
        self.pad_row = pad_row  # [D] normalised frame features of silence: the rows outside the stream
        self.per_update = frames_per_update  # eGeMAPS updates every this many frames (None: no cache)
        with torch.no_grad():  # constants of the utterance: no autograd graph kept with them
            self.q, self.age_scores = self.ms.attention.query_parts(model.queries)
        self.scores = None  # [1, H, Nq, rows]: the frame part of every score, mel rows [t0, t0 + rows)
        self.values = None  # [1, H, rows, dv]
        self.t0 = 0
        self.pad = None  # (scores, values) of one padding row
        self.emotion: dict[int, torch.Tensor] = {}  # update index -> [52, d]

    def _parts(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention parts of normalised frame-feature rows ``[r, D]``: ``([1, H, Nq, r], [1, H, r, dv])``."""
        tokens = self.ms.encode(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))[None])
        return self.ms.attention.frame_parts(self.q, tokens)

    def mel_parts(self, mel: np.ndarray, lo: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention parts of the window ``mel`` ``[W, D]`` whose first row is stream frame ``lo``
        (windows move forward; rows before frame 0 are padding): ``([1, H, Nq, W], [1, H, W, dv])``."""
        hi = lo + mel.shape[0]
        t1 = self.t0 + (0 if self.scores is None else self.scores.shape[-1])
        start = max(lo, 0, t1)
        if hi > start:
            scores, values = self._parts(mel[start - lo :])
            if self.scores is None:
                self.scores, self.values, self.t0 = scores, values, start
            else:
                self.scores = torch.cat([self.scores, scores], dim=3)
                self.values = torch.cat([self.values, values], dim=2)
        keep = max(lo, 0) - self.t0  # rows no later window sees
        if keep > 0:
            self.scores, self.values = self.scores[..., keep:], self.values[:, :, keep:]
            self.t0 += keep
        if lo >= 0:
            a, b = lo - self.t0, hi - self.t0
            return self.scores[..., a:b], self.values[:, :, a:b]
        if self.pad is None:
            self.pad = self._parts(self.pad_row[None])
        n_pad = min(-lo, mel.shape[0])
        scores, values = [self.pad[0].expand(-1, -1, -1, n_pad)], [self.pad[1].expand(-1, -1, n_pad, -1)]
        if hi > 0:
            scores.append(self.scores[..., : hi - self.t0])
            values.append(self.values[:, :, : hi - self.t0])
        return torch.cat(scores, dim=3), torch.cat(values, dim=2)

    def emotion_output(self, a: int, span: int, rows_of) -> torch.Tensor:
        """Emotion stream output for frames ``[a, a + span)``: ``[1, span, 52, d]``. ``rows_of(lo, hi)``
        gives the normalised eGeMAPS rows of frames ``[lo, hi)``."""
        model, sp = self.model, self.model.spans
        frames = np.arange(a, a + span)
        if self.per_update is None:
            e = torch.from_numpy(rows_of(*sp.egemaps_frames(a, span)))[None]
            return model.emotion_stream(model.queries, e, torch.arange(span)[None])
        update = frames // self.per_update
        for u in np.unique(update).tolist():
            if u not in self.emotion:
                i = u * self.per_update  # any frame of the update: the same rows
                e = torch.from_numpy(rows_of(*sp.egemaps_frames(i, 1)))[None]
                one = torch.zeros(1, 1, dtype=torch.long)
                self.emotion[u] = model.emotion_stream(model.queries, e, one)[0, 0]
        for u in [u for u in self.emotion if u < update[0]]:
            del self.emotion[u]
        return torch.stack([self.emotion[u] for u in update.tolist()])[None]

    def forward(self, mel: np.ndarray, lo: int, a: int, span: int, rows_of, smooth: bool, state):
        """Outputs ``[1, span, 52]`` for frames ``[a, a + span)`` (``DualStreamModel.forward``'s steps)."""
        model = self.model
        positions = torch.arange(span)[None]
        use_emotion = rows_of is not None and model.emotion_stream is not None
        w = model.stream_weights(use_emotion)
        scores, values = self.mel_parts(mel, lo)
        fused = self.ms.attention.attend(scores, values, self.age_scores, positions)
        fused = fused.mul_(w[:, :1]).add_(model.queries)
        if use_emotion:
            fused = fused.addcmul_(self.emotion_output(a, span, rows_of), w[:, 1:])
        raw = model.decoder(model.fuse_norm(fused))
        return smooth_outputs(model.smoothing, raw, smooth, state)


def frames_per_update(features_cfg) -> int | None:
    """Grid frames per eGeMAPS update when whole (9 at 30 fps and 0.3 s), else None."""
    num = round(features_cfg.egemaps_step_s * grid.SAMPLE_RATE) * int(features_cfg.fps)
    return num // grid.SAMPLE_RATE if num % grid.SAMPLE_RATE == 0 else None
