"""The dual-stream model's forward pass for a stream: work shared between calls is done once.

A stream calls the model on a few new output frames at a time (one per 33 ms chunk), each with
its whole window (``C - 1 + L`` mel rows, ``E`` eGeMAPS rows). Two parts of that work repeat from
call to call, and are cached here (same functions on the same rows, so the same values up to
float rounding; the streaming tests compare with ``render``):

* the mel stream's per-frame band tokens (:class:`~koemorph.model.dual_stream.BandMelStream`
  with one-frame tokens and no temporal layers) and what the attention makes of each token (its
  score against every static query and its value, :meth:`WindowAttention._project` row by row):
  each mel row is encoded and projected once, when it arrives; rows before the stream start (and
  past its end, at the flush) are the padding rows;
* the emotion stream's output: it depends on the held eGeMAPS windows only, which change once per
  update (every ``step`` frames), so it is computed once per update when ``step`` frames are a
  whole number of eGeMAPS updates.

The rest of the forward pass (fusion, decoder, smoothing) is :class:`DualStreamModel`'s own,
step by step. :func:`supports` says whether a model can use this path (otherwise the streamer
calls the model as a whole).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from koemorph import grid
from koemorph.model.layers import smooth_outputs


def supports(model) -> bool:
    """True for a dual-stream model whose mel tokens are per frame (no conv kernel, temporal layers
    or band overlap) and whose mel attention sees window rows ``0 .. W - 1``."""
    from koemorph.model.dual_stream import DualStreamModel

    if not isinstance(model, DualStreamModel):
        return False
    ms = model.mel_stream
    offsets = ms.attention.offsets
    contiguous = torch.equal(offsets, torch.arange(offsets.numel()))  # what mel_output relies on
    return ms.kernel == 1 and ms.temporal is None and ms.overlap == 0 and contiguous


class IncrementalForward:
    """Cached tokens and emotion outputs of one utterance (make a new one per utterance)."""

    def __init__(self, model, pad_row: np.ndarray, frames_per_update: int | None):
        self.model, self.ms = model, model.mel_stream
        self.pad_row = pad_row  # [n_mels] normalised silence: the rows outside the stream
        self.per_update = frames_per_update  # eGeMAPS updates every this many frames (None: no cache)
        self.rows = None  # (frame scores [H, Nq, rows], values [H, rows, dv]) of mel rows [t0, t0 + rows)
        self.t0 = 0
        self.pad_row_proj = None
        self.q, self.age_scores = None, None  # the static queries' projections, once per utterance
        self.emotion: dict[int, torch.Tensor] = {}  # update index -> [52, d]

    def _encode(self, rows: np.ndarray) -> torch.Tensor:
        """Band tokens of mel rows ``[r, n_mels]`` (normalised): ``[r, bands, d_band]``."""
        ms = self.ms
        mel = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))[None]
        x = ms.band_in(mel.reshape(1, mel.shape[1], ms.bands, ms.width)) + ms.band_embedding
        if ms.summary is not None:
            x = x + ms.summary(mel).unsqueeze(2)
        return ms.band_out(x)[0]

    def _project(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """What the mel attention makes of mel rows ``[r, n_mels]``: ``(frame scores [H, Nq, r],
        values [H, r, dv])``, the per-frame part of :meth:`WindowAttention._project`."""
        att = self.ms.attention
        tokens = self._encode(rows)[None]  # [1, r, bands, d_band]
        if self.q is None:
            self.q, self.age_scores = _static_queries(att, self.model.queries)
        r, h = tokens.shape[1], att.heads
        k = att.k_proj(tokens).view(1, r, h, att.key_dim)
        v = att.v_proj(tokens).view(1, r, h, att.value_dim).transpose(1, 2)
        return torch.einsum("bthd,qhd->bhqt", k, self.q)[0], v[0]

    def mel_window(self, mel: np.ndarray, lo: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(frame scores [1, H, Nq, W], values [1, H, W, dv])`` of the window ``mel`` ``[W, n_mels]``
        whose first row is stream frame ``lo`` (windows move forward; rows before frame 0 are padding)."""
        hi = lo + mel.shape[0]
        t1 = self.t0 + (0 if self.rows is None else self.rows[0].shape[-1])
        start = max(lo, 0, t1)
        if hi > start:
            new = self._project(mel[start - lo :])
            if self.rows is None:
                self.rows, self.t0 = new, start
            else:
                self.rows = (torch.cat([self.rows[0], new[0]], -1), torch.cat([self.rows[1], new[1]], 1))
        keep = max(lo, 0) - self.t0  # rows no later window sees
        if keep > 0:
            self.rows, self.t0 = (self.rows[0][..., keep:], self.rows[1][:, keep:]), self.t0 + keep
        scores, values = [], []
        if lo < 0:
            if self.pad_row_proj is None:
                self.pad_row_proj = self._project(self.pad_row[None])
            n = min(-lo, mel.shape[0])
            scores.append(self.pad_row_proj[0].expand(-1, -1, n))
            values.append(self.pad_row_proj[1].expand(-1, n, -1))
        if hi > 0:
            a, b = max(lo, 0) - self.t0, hi - self.t0
            scores.append(self.rows[0][..., a:b])
            values.append(self.rows[1][:, a:b])
        return torch.cat(scores, -1)[None], torch.cat(values, 1)[None]

    def mel_output(self, mel: np.ndarray, lo: int, span: int) -> torch.Tensor:
        """The mel stream's attention output for the ``span`` frames of the window: ``[1, span, 52, d]``.

        :meth:`WindowAttention.forward` on cached rows: output ``p`` attends to window rows
        ``p .. p + W - 1`` (the attention's offsets are ``0 .. W - 1``), so its scores and values are
        contiguous slices, taken as strided views rather than gathered."""
        att = self.ms.attention
        frame_scores, v = self.mel_window(mel, lo)  # [1, H, Nq, T], [1, H, T, dv]
        w = att.offsets.numel()
        scores = frame_scores.unfold(3, w, 1) + self.age_scores  # [1, H, Nq, span, W]
        attn = torch.softmax(scores, dim=-1)
        out = torch.einsum("bhqnw,bhndw->bnqhd", attn, v.unfold(2, w, 1))  # [1, span, Nq, H, dv]
        return out.reshape(1, span, out.shape[2], -1)

    def emotion_output(self, a: int, span: int, rows_of) -> torch.Tensor:
        """Emotion stream output for frames ``[a, a + span)``: ``[1, span, 52, d]``. ``rows_of(lo, hi)``
        gives the normalised eGeMAPS rows of frames ``[lo, hi)``."""
        model, sp = self.model, self.model.spans
        frames = np.arange(a, a + span)
        if self.per_update is None:
            e = torch.from_numpy(rows_of(*sp.egemaps_frames(a, span)))[None]
            return model.emotion_stream(model.queries, e, torch.arange(span)[None])
        first, last = a // self.per_update, (a + span - 1) // self.per_update
        if first == last and first in self.emotion:  # the usual call: one frame, a known update
            return self.emotion[first].expand(1, span, -1, -1)
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
        use_emotion = rows_of is not None and model.emotion_stream is not None
        w = model.stream_weights(use_emotion)
        fused = self.mel_output(mel, lo, span)
        fused = fused.mul_(w[:, :1]).add_(model.queries)
        if use_emotion:
            fused = fused.addcmul_(self.emotion_output(a, span, rows_of), w[:, 1:])
        raw = model.decoder(model.fuse_norm(fused))
        return smooth_outputs(model.smoothing, raw, smooth, state)


def _static_queries(att, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q [Nq, H, dk], age_scores [H, Nq, 1, W])`` of :meth:`WindowAttention._project`: the parts
    that depend on the (static) queries only."""
    nq = queries.shape[0]
    q = att.q_proj(queries).view(nq, att.heads, att.key_dim) * (1.0 / math.sqrt(att.key_dim))
    age_scores = torch.einsum("whd,qhd->hqw", att.pos_key, q).unsqueeze(2) + att.prior
    return q, age_scores


def frames_per_update(features_cfg) -> int | None:
    """Grid frames per eGeMAPS update when whole (9 at 30 fps and 0.3 s), else None."""
    num = round(features_cfg.egemaps_step_s * grid.SAMPLE_RATE) * int(features_cfg.fps)
    return num // grid.SAMPLE_RATE if num % grid.SAMPLE_RATE == 0 else None
