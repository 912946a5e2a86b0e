"""Simplified baseline: per-frame mel MLP + query cross-attention + sigmoid decoder.

Same input contract as the dual-stream model (see :mod:`koemorph.model.windows`): ``mel``
``[B, S+C-1+L, n_mels]`` normalised, ``positions`` ``[B, n]``; ``egemaps`` is accepted and ignored.

A ``Linear(80,256)-ReLU-Dropout-Linear(256,256)-ReLU-Dropout`` encoder runs ONCE per input frame
of the block, its first
Linear widened to a valid causal convolution over ``conv_kernel`` frames (as in the dual-stream
band encoder); every output position's queries attend over its own window of ``C + L - K + 1``
tokens (with a learned per-age key embedding: without it a window is a bag of
frames and the current frame is unknown, and the same fixed ALiBi locality prior as the dual-stream
model); query ``i`` is decoded into blendshape ``i`` only, from
``LayerNorm(q_i + attended_i)`` (shared hidden layer, per-blendshape readout; no attention output
projection: the decoder's first Linear mixes the heads). Smoothing follows
``ModelConfig.smoothing`` exactly as in the dual-stream model (default on), so the two models differ
only in their audio streams.
"""

from __future__ import annotations

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


class SimplifiedModel(nn.Module):
    """``forward(mel, egemaps, positions, smooth=False, state=None)`` -> ``{blendshapes, raw[, alpha]}``.

    ``blendshapes`` and ``raw`` are ``[B, n, 52]``; ``egemaps`` is ignored.
    """

    kind = "simplified"

    def __init__(
        self, model_cfg: ModelConfig, spans: Spans, n_mels: int = 80, n_egemaps: int = 0, n_phones: int = 0
    ):
        super().__init__()
        d, heads, drop = model_cfg.d_model, model_cfg.num_heads, model_cfg.dropout
        if d % heads:
            raise ValueError(f"num_heads {heads} must divide d_model {d}")
        self.spans, self.n_mels, self.n_egemaps, self.n_phones = spans, n_mels, 0, n_phones
        self.kernel = int(model_cfg.conv_kernel)
        if not 1 <= self.kernel <= spans.context:
            raise ValueError(f"conv_kernel {self.kernel} must lie in [1, context {spans.context}]")
        offsets, ages = mel_window(spans, self.kernel)
        slopes = alibi_slopes(1, heads) if model_cfg.locality_prior else None
        self.queries = query_init(blendshapes.NUM_BLENDSHAPES, d)
        self.mel_stream = nn.ModuleDict(
            {
                "encoder": nn.Sequential(
                    nn.Linear(self.kernel * (n_mels + n_phones), d),
                    nn.ReLU(),
                    nn.Dropout(drop),
                    nn.Linear(d, d),
                    nn.ReLU(),
                    nn.Dropout(drop),
                ),
                "attention": WindowAttention(
                    d, d, 1, heads, d // heads, d // heads, offsets, drop, ages=ages, slopes=slopes
                ),
            }
        )
        self.fuse_norm = nn.LayerNorm(d)
        self.decoder = Decoder(d, model_cfg.decoder_hidden, drop)
        self.smoothing = TemporalSmoothing(model_cfg.smoothing_init) if model_cfg.smoothing else None

    def forward(self, mel, egemaps, positions, smooth: bool = False, state=None) -> dict:
        check_block(mel, None, positions, self.spans)
        tokens = self.mel_stream["encoder"](stack_frames(mel, self.kernel)).unsqueeze(2)  # [B, T-K+1, 1, d]
        attended = self.mel_stream["attention"](self.queries, tokens, positions)  # [B, n, 52, d]
        raw = self.decoder(self.fuse_norm(self.queries + attended))  # [B, n, 52]
        out = {"blendshapes": smooth_outputs(self.smoothing, raw, smooth, state), "raw": raw}
        if self.smoothing is not None:
            out["alpha"] = self.smoothing.alpha()
        return out
