"""Dual-stream model: frequency-band mel stream + eGeMAPS emotion stream.

Input contract (see :mod:`koemorph.model.windows` for C, L, E, step): a block covers outputs
``[a, a+S)`` of one file; ``mel`` ``[B, S+C-1+L, n_mels + n_phones]`` (the frame features:
normalised log-mel, then with ``features.phones`` the 40 recognised-phone shares; file frames
``[a-(C-1), a+S+L)``), ``egemaps`` ``[B, S+E-1, 88]`` or None (file frames ``[a-(E-1), a+S)``),
``positions`` ``[B, n]`` ascending in ``[0, S)``. Output position ``p`` (file frame ``a+p``)
sees mel frames ``[a+p-(C-1), a+p+L]`` and eGeMAPS frames ``[a+p-(E-1), a+p]`` only.

Mel stream: each frequency band learns its own attention pattern. The ``mel_bands`` bands
(4 x 20 bins) are encoded by ONE MLP (shared weights) plus a learned band embedding added before
the non-linearity, so bands differ. The MLP's first layer is a valid causal convolution
over ``conv_kernel`` frames (token ``j`` sees the band's bins of frames ``j-K+1..j``; default 1:
frame-wise); it runs once per frame of the
block, so windows still share it. A band sees only its own bins, while lip shape depends on the
whole spectrum: a rank-``mel_summary`` projection of the frame's full spectrum (80 -> 32 -> d_model)
is added to every band's pre-activation too, so
each band token carries its band in detail plus a small summary of the rest. Options (off by
default): ``band_overlap`` extra bins on each side of a band, and ``temporal_layers`` residual causal
dilated convolutions over each band's tokens (the window then starts ``R - 1`` frames later, so
no token reaches back beyond ``t - (C-1)``). Each band is a token
sequence over time, and each band owns ``num_heads / mel_bands`` heads that attend over that band's
window only, i.e. every band learns its own temporal attention. Band combination: concat + linear:
the bands' head outputs are concatenated (``mel_bands * heads_per_band * head_dim = d_model``), and
the decoder's first Linear (after the fusion LayerNorm) mixes them. There is no separate output
projection per stream: it would run on every (position, query) row, ``B*n*52`` rows of 256x256,
the largest matmul of a dense block, and the decoder's Linear already mixes heads and bands.

Phones (``n_phones`` = 40, or 41 with the source column of ``features.phones_text``): the
recognised phone shares of each frame (:mod:`koemorph.features.phones`, a speaker-independent
input; a transcript's when the source column is 1) form one more token group beside
the bands, with its own input layer and heads, over the same window; ``mel_bands = 0`` leaves
phones alone in the frame stream.

Emotion stream: tokens are the eGeMAPS vectors at frames
``t, t-step, t-2*step, ...`` (``n_tokens = ceil(E/step)`` = 67 at 30 fps, one per 300 ms eGeMAPS
update over 20 s), each encoded per frame (``d_model/2``-wide tokens, ``d_model``-wide values) and
given a learned age embedding on its key; the same 52 queries attend over them (many keys, so the
attention depends on the query). At inference the rows are held for ``step`` frames, so only one
window in ``step`` is distinct: each is computed once (:meth:`EmotionStream._distinct_windows`).

Time position: every key gets a learned per-age key embedding (mel: Δ = -L..C-K; emotion:
token index), see :class:`~koemorph.model.layers.WindowAttention` for the per-frame sharing, and,
with ``locality_prior``, a fixed ALiBi-style bias ``-slope_h * |age in frames|`` with slopes from 1
to 1/128 spread over the heads (every band gets a local and a long-range head): attention starts
local instead of uniform over 8.5 s, which is what made the untrained model learn so slowly.

Stream fusion (normalised weights, fused before decoding): per blendshape
``w[i] = softmax(logits[i] / temperature)`` over the TWO streams (never over
the 52 blendshapes), then ``h_i = LayerNorm(q_i + w_mel[i] * A_mel[i] + w_emo[i] * A_emo[i])`` and
the decoder (shared hidden layer, per-blendshape readout) gives ONE value per query through a
sigmoid; the query residual also tells the shared layer which blendshape it decodes. Logits start
mel-dominant (0.8 / 0.2) for the mouth names and emotion-dominant (0.2 / 0.8) for the expression
names (by name), learnable.
Without eGeMAPS (``n_egemaps=0`` or ``egemaps=None``) the emotion stream is off and the weights are
``[1, 0]``.

Smoothing: learnable ``y_t = a*x_t + (1-a)*y_{t-1}.detach()`` along
the consecutive positions of a block when ``smooth``, from ``state`` or from ``y_0 = x_0``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from koemorph import blendshapes
from koemorph.config import ModelConfig
from koemorph.model.layers import (
    Decoder,
    TemporalSmoothing,
    WindowAttention,
    alibi_slopes,
    check_block,
    mel_window,
    query_init,
    smooth_outputs,
    stack_frames,
)
from koemorph.model.windows import Spans

MEL_SHARE_INIT = 0.8  # initial weight of the "own" stream (mel for mouth names, emotion for expression)


class CausalTemporal(nn.Module):
    """Residual stack of valid causal dilated convolutions along time, per token group.

    ``[B, T, G, d] -> [B, T - R + 1, G, d]`` with receptive field ``R = 1 + (k - 1) * (2^layers - 1)``:
    output row ``j`` stands for input row ``j + R - 1`` and sees rows ``j .. j + R - 1`` only (no
    later frame). Layer ``i``: ``y = y[-n:] + Conv1d(GELU(y))`` (kernel ``k``, dilation ``2^i``,
    weights shared by the groups), then a LayerNorm. Gives the attention values a temporal shape
    (signed filters over the last ``R`` frames), which per-frame tokens cannot have.
    """

    def __init__(self, d: int, layers: int, kernel: int = 3, dropout: float = 0.0):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(d, d, kernel, dilation=2**i) for i in range(layers))
        self.receptive = 1 + (kernel - 1) * (2**layers - 1)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, g, d = x.shape
        y = x.permute(0, 2, 3, 1).reshape(b * g, d, t)
        for conv in self.convs:
            h = self.dropout(conv(nn.functional.gelu(y)))
            y = y[..., y.shape[-1] - h.shape[-1] :] + h
        return self.norm(y.reshape(b, g, d, -1).permute(0, 3, 1, 2))


def _token_groups(n_mels: int, bands: int, phones: int, num_heads: int, d_model: int) -> int:
    """Token groups of the frame stream (the mel bands, plus one with phones); ValueError if the
    bands do not split ``n_mels`` or the groups do not share ``num_heads`` evenly."""
    groups = bands + (phones > 0)
    if bands < 0 or groups < 1 or (bands and n_mels % bands) or num_heads % groups or d_model % num_heads:
        raise ValueError(
            f"mel_bands {bands} must divide n_mels {n_mels} (0 only with phones), the token groups "
            f"({groups}: bands, plus 1 with phones) num_heads {num_heads}, and that d_model {d_model}"
        )
    return groups


class BandMelStream(nn.Module):
    """Frame features ``[B, T, n_mels + n_phones]`` -> per-query features ``[B, n, Nq, d_model]`` at
    ``positions``.

    Token groups: the ``bands`` mel bands (0 bands: the mel is not used), then, with ``phones > 0``,
    one group for the recognised phone shares (the last ``phones`` columns; its own input layer and
    embedding, the shared output MLP and the same window). Every group owns ``num_heads / groups`` heads.
    """

    def __init__(
        self,
        n_mels: int,
        bands: int,
        d_model: int,
        num_heads: int,
        spans: Spans,
        dropout: float,
        kernel: int = 1,
        locality: bool = False,
        summary: int = 0,
        overlap: int = 0,
        temporal: int = 0,
        phones: int = 0,
    ):
        super().__init__()
        groups = _token_groups(n_mels, bands, phones, num_heads, d_model)
        self.bands, self.groups, self.kernel, self.overlap = bands, groups, kernel, overlap
        self.n_mels, self.phones, self.width = n_mels, phones, n_mels // bands if bands else 0
        head_dim = d_model // num_heads
        d_band = (num_heads // groups) * head_dim  # token width per group
        # a valid causal conv over `kernel` frames of the band's bins (+ `overlap` bins each side)
        self.band_in = nn.Linear(kernel * (self.width + 2 * overlap), d_model) if bands else None
        self.band_embedding = nn.Parameter(torch.randn(bands, d_model) * 0.1) if bands else None
        self.phone_in = nn.Linear(kernel * phones, d_model) if phones else None
        # rank-`summary` projection of the whole frame (mel and phones), added to every group's pre-activation
        self.summary = (
            nn.Sequential(
                nn.Linear(kernel * (n_mels + phones), summary, bias=False), nn.Linear(summary, d_model)
            )
            if summary > 0
            else None
        )
        self.band_out = nn.Sequential(
            nn.GELU(), nn.Dropout(dropout), nn.Linear(d_model, d_band), nn.LayerNorm(d_band)
        )
        self.temporal = CausalTemporal(d_band, temporal, dropout=dropout) if temporal > 0 else None
        self.receptive = kernel + (self.temporal.receptive - 1 if self.temporal is not None else 0)
        if not 1 <= self.receptive <= spans.context:
            raise ValueError(
                f"conv_kernel {kernel} + temporal receptive field must lie in [1, context {spans.context}]"
            )
        offsets, ages = mel_window(spans, self.receptive)
        slopes = alibi_slopes(groups, num_heads // groups) if locality else None
        self.attention = WindowAttention(
            d_model,
            d_band,
            groups,
            num_heads // groups,
            head_dim,
            head_dim,
            offsets,
            dropout,
            ages=ages,
            slopes=slopes,
        )

    def _band_tokens(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel [B, T, n_mels]`` -> band pre-activations ``[B, T-K+1, bands, d_model]``."""
        b, t, _ = mel.shape
        o = self.overlap
        if o:  # bands of width + 2*overlap bins, edge bins repeated outside the spectrum
            padded = nn.functional.pad(mel, (o, o), mode="replicate")
            split = padded.unfold(2, self.width + 2 * o, self.width)  # [B, T, bands, width + 2o]
        else:
            split = mel.reshape(b, t, self.bands, self.width)
        return self.band_in(stack_frames(split, self.kernel)) + self.band_embedding

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame tokens ``[B, T-K+1, groups, d_band]`` of frame features ``[B, T, n_mels + phones]``
        (before the temporal layers): row ``j`` stands for frame ``j + K - 1``."""
        if frames.shape[-1] != self.n_mels + self.phones:
            raise ValueError(
                f"frame features have {frames.shape[-1]} columns; the model needs n_mels {self.n_mels} "
                f"+ phones {self.phones}"
            )
        parts = []
        if self.bands:
            parts.append(self._band_tokens(frames[..., : self.n_mels]))
        if self.phones:
            parts.append(self.phone_in(stack_frames(frames[..., self.n_mels :], self.kernel)).unsqueeze(2))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)  # [B, T-K+1, groups, d]
        if self.summary is not None:
            x = x + self.summary(stack_frames(frames, self.kernel)).unsqueeze(2)
        return self.band_out(x)

    def forward(self, queries: torch.Tensor, frames: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        tokens = self.encode(frames)  # [B, T-K+1, groups, d_band]
        if self.temporal is not None:
            tokens = self.temporal(tokens)  # [B, T-R+1, groups, d_band]
        return self.attention(queries, tokens, positions)  # [B, n, Nq, d_model]: groups concatenated


class EmotionStream(nn.Module):
    """``egemaps [B, S+E-1, D]`` -> per-query emotion features ``[B, n, Nq, d_model]`` at ``positions``."""

    def __init__(
        self,
        n_egemaps: int,
        d_model: int,
        num_heads: int,
        spans: Spans,
        dropout: float,
        locality: bool = False,
    ):
        super().__init__()
        d_emo = max(num_heads, d_model // 2)  # 88 functionals need no 256-wide tokens; halves per-frame cost
        self.encoder = nn.Sequential(
            nn.Linear(n_egemaps, d_emo),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_emo, d_emo),
            nn.LayerNorm(d_emo),
        )
        # token m of output p is eGeMAPS row p + (E-1) - m*step, i.e. file frame a+p - m*step
        ages = spans.step * torch.arange(spans.n_tokens)  # grid frames
        offsets = (spans.emotion_context - 1) - ages
        slopes = alibi_slopes(1, num_heads) if locality else None
        self.attention = WindowAttention(
            d_model,
            d_emo,
            1,
            num_heads,
            d_emo // num_heads,
            d_model // num_heads,
            offsets,
            dropout,
            ages=ages,
            slopes=slopes,
        )

    def forward(self, queries: torch.Tensor, egemaps: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        inference = not self.training and not torch.is_grad_enabled()
        if inference and positions.shape[1] and bool((positions == positions[:1]).all()):
            return self._distinct_windows(queries, egemaps, positions)
        tokens = self.encoder(egemaps).unsqueeze(2)  # [B, S+E-1, 1, d_emo]
        return self.attention(queries, tokens, positions)  # [B, n, Nq, d_model]

    def _distinct_windows(self, queries, egemaps, positions) -> torch.Tensor:
        """Inference: each distinct window computed once, the same function as the training path.

        eGeMAPS rows change once per update (every ``step`` frames) and padding is constant, so
        consecutive positions whose key rows all equal the previous position's rows have the same
        output: a dense block has about ``n / step`` distinct windows. Only the rows those windows
        see are encoded. Equality is exact (NaN rows count as changed); the batch rows share
        ``positions`` (``forward`` checks), and a window is distinct when it is in any batch row.
        """
        b, t, _ = egemaps.shape
        pos = positions[0]  # [n]
        index = pos[:, None] + self.attention.offsets  # [n, W] eGeMAPS row of each key
        changed = torch.ones(t, dtype=torch.bool, device=egemaps.device)  # row r differs from row r - 1
        changed[1:] = (egemaps[:, 1:] != egemaps[:, :-1]).any(-1).any(0)
        first = torch.ones_like(pos, dtype=torch.bool)  # output j opens a new distinct window
        first[1:] = (pos[1:] != pos[:-1] + 1) | changed[index[1:]].any(-1)
        keys = index[first]  # [k, W]
        rows, local = torch.unique(keys, sorted=True, return_inverse=True)  # rows[local] == keys
        tokens = self.encoder(egemaps[:, rows]).unsqueeze(2)  # [B, R, 1, d_emo]
        out = self.attention.at_rows(queries, tokens, local.expand(b, *local.shape))  # [B, k, Nq, d_model]
        return out[:, torch.cumsum(first, 0) - 1]  # [B, n, Nq, d_model]


class DualStreamModel(nn.Module):
    """Band mel stream + emotion stream, per-blendshape fusion, shared decoder, smoothing.

    ``forward(mel, egemaps, positions, smooth=False, state=None)`` -> dict:
    ``blendshapes`` ``[B, n, 52]`` (smoothed if ``smooth`` and the model smooths, else the ``raw``
    tensor itself), ``raw`` ``[B, n, 52]`` (sigmoid decoder output), ``stream_weights`` ``[52, 2]``
    (mel, emotion; rows sum to 1), ``alpha`` (scalar smoothing coefficient).
    """

    kind = "dual_stream"

    def __init__(
        self, model_cfg: ModelConfig, spans: Spans, n_mels: int = 80, n_egemaps: int = 88, n_phones: int = 0
    ):
        super().__init__()
        d, heads, drop = model_cfg.d_model, model_cfg.num_heads, model_cfg.dropout
        self.spans, self.n_mels, self.n_egemaps, self.n_phones = spans, n_mels, n_egemaps, n_phones
        self.temperature = float(model_cfg.temperature)
        n = blendshapes.NUM_BLENDSHAPES
        self.queries = query_init(n, d)
        kernel, locality = model_cfg.conv_kernel, model_cfg.locality_prior
        self.mel_stream = BandMelStream(
            n_mels,
            model_cfg.mel_bands,
            d,
            heads,
            spans,
            drop,
            kernel,
            locality,
            model_cfg.mel_summary,
            model_cfg.band_overlap,
            model_cfg.temporal_layers,
            n_phones,
        )
        if n_egemaps > 0:
            self.emotion_stream = EmotionStream(n_egemaps, d, heads, spans, drop, locality)
            share = math.log(MEL_SHARE_INIT / (1 - MEL_SHARE_INIT)) * self.temperature / 2
            logits = torch.full((n, 2), 0.0)
            logits[:, 0], logits[:, 1] = -share, share  # expression: emotion-dominant
            logits[blendshapes.MOUTH_INDICES, 0], logits[blendshapes.MOUTH_INDICES, 1] = share, -share
            self.stream_logits = nn.Parameter(logits)
        else:
            self.emotion_stream, self.stream_logits = None, None
        self.fuse_norm = nn.LayerNorm(d)
        self.decoder = Decoder(d, model_cfg.decoder_hidden, drop)
        self.smoothing = TemporalSmoothing(model_cfg.smoothing_init) if model_cfg.smoothing else None

    def stream_weights(self, use_emotion: bool = True) -> torch.Tensor:
        """``[52, 2]`` (mel, emotion) per-blendshape softmax over the two streams."""
        if self.stream_logits is None or not use_emotion:
            w = torch.zeros(blendshapes.NUM_BLENDSHAPES, 2, device=self.queries.device)
            w[:, 0] = 1.0
            return w
        return torch.softmax(self.stream_logits / self.temperature, dim=1)

    def forward(self, mel, egemaps, positions, smooth: bool = False, state=None) -> dict:
        use_emotion = egemaps is not None and self.emotion_stream is not None
        check_block(mel, egemaps if use_emotion else None, positions, self.spans)
        w = self.stream_weights(use_emotion)
        grad = torch.is_grad_enabled()  # without grad (inference) fuse in place: no [B, n, 52, d] temporaries
        fused = self.mel_stream(self.queries, mel, positions)  # [B, n, 52, d], a fresh tensor
        fused = self.queries + w[:, :1] * fused if grad else fused.mul_(w[:, :1]).add_(self.queries)
        if use_emotion:
            emotion = self.emotion_stream(self.queries, egemaps, positions)
            fused = fused + w[:, 1:] * emotion if grad else fused.addcmul_(emotion, w[:, 1:])
        raw = self.decoder(self.fuse_norm(fused))  # [B, n, 52]
        smoothed = smooth_outputs(self.smoothing, raw, smooth, state)
        out = {"blendshapes": smoothed, "raw": raw, "stream_weights": w}
        if self.smoothing is not None:
            out["alpha"] = self.smoothing.alpha()
        return out
