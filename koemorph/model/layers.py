"""Building blocks shared by both networks: windowed query attention, decoder, smoothing.

Time base: every tensor here is indexed by grid frames of ONE block (see :mod:`koemorph.model.windows`).
``tokens`` ``[B, T, G, d]`` holds one token per group per input frame; ``positions`` ``[B, n]``
are the output positions within the block's span; output position ``p`` attends to the token
frames ``p + offsets[k]`` (k = 0..W-1) of the block's input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from koemorph.model.dense import DenseWindow


class WindowAttention(nn.Module):
    """Static queries cross-attending over a sliding window of per-frame tokens, every position at once.

    Heads: ``groups * heads_per_group`` heads with ``key_dim``-wide keys and ``value_dim``-wide values;
    head ``h`` belongs to group ``h // heads_per_group`` and sees only that group's tokens (groups =
    mel bands: every band gets its own attention pattern; one group for a plain stream). Keys and
    values come from projections shared by the groups (the groups differ through their tokens).

    Time position: key ``k`` of a window (token frame ``p + offsets[k]``) gets a learned key
    embedding ``pos_key[k]`` (one per age Δ, per head). With ``ages`` (``[W]``, the age of key ``k``
    in grid frames, negative for lookahead keys) and ``slopes`` (``[H]``), every score also gets a
    fixed locality prior ``-slopes[h] * |ages[k]|`` (ALiBi-style): a head with slope 1 starts
    attending to the last few frames, one with slope 1/128 to seconds of context (without it the
    untrained attention is uniform over the 8.5 s window, and the model learned far more slowly).
    Because the queries are static, ``q·(K_t + pos_k) = q·K_t + q·pos_k``: the frame part ``q·K_t``
    is computed ONCE per input frame ``[B, T, H, Nq]`` and the age part ``q·pos_k`` (plus the prior)
    once per call ``[H, Nq, W]``; each position's scores are then a gather + add, never a
    recomputation of its window. Long windows (mel) put each
    position's attention row into a banded ``[n, T]`` matrix and multiply it with the per-frame values
    once; short strided windows (emotion tokens) gather their values. Dropout acts on the attended
    output, not on the (large) attention matrix. Dense inference blocks (no grad, every position)
    take the exact shortcut of :mod:`koemorph.model.dense` instead (same function, float rounding).

    ``forward(queries [Nq, d_query], tokens [B, T, G, d_token], positions [B, n] long)``
    -> ``[B, n, Nq, H * value_dim]`` (head outputs concatenated, group by group).
    """

    def __init__(
        self,
        d_query: int,
        d_token: int,
        groups: int,
        heads_per_group: int,
        key_dim: int,
        value_dim: int,
        offsets: torch.Tensor,
        dropout: float = 0.0,
        ages=None,
        slopes=None,
    ):
        super().__init__()
        self.groups, self.hpg, self.key_dim, self.value_dim = groups, heads_per_group, key_dim, value_dim
        self.heads = groups * heads_per_group
        self.q_proj = nn.Linear(d_query, self.heads * key_dim)
        self.k_proj = nn.Linear(d_token, heads_per_group * key_dim)
        self.v_proj = nn.Linear(d_token, heads_per_group * value_dim)
        offsets = torch.as_tensor(offsets, dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.in_order = bool(torch.equal(offsets, torch.arange(len(offsets))))  # key k = token frame p + k
        self.pos_key = nn.Parameter(torch.randn(len(offsets), self.heads, key_dim) * 0.1)
        prior = torch.zeros(self.heads, 1, 1, len(offsets))
        if ages is not None and slopes is not None:
            ages = torch.as_tensor(ages, dtype=torch.float32).abs()
            prior = -torch.as_tensor(slopes, dtype=torch.float32).view(-1, 1, 1, 1) * ages.view(1, 1, 1, -1)
        prior = prior.expand(self.heads, 1, 1, len(offsets)).contiguous()
        self.register_buffer("prior", prior, persistent=False)  # [H, 1, 1, W]
        self.dropout = nn.Dropout(dropout)
        self.dense = DenseWindow(offsets)  # plain object: no parameters, nothing in the state_dict

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        q, age_scores = self.query_parts(queries)
        return self.attend(*self.frame_parts(q, tokens), age_scores, positions)

    def attend(self, frame_scores, v, age_scores, positions: torch.Tensor) -> torch.Tensor:
        """``forward`` from its parts (:meth:`frame_parts`, :meth:`query_parts`): output position ``p``
        attends to the token frames ``p + offsets`` -> ``[B, n, Nq, H * value_dim]``."""
        w = self.offsets.shape[0]
        if positions.shape[1] == 1 and self.in_order and frame_scores.shape[-1] == w and not positions.any():
            # one output whose keys are the block's frames in order (a stream's frame-by-frame call)
            attn = torch.softmax(frame_scores + age_scores.squeeze(2), dim=-1)  # [B, H, Nq, W]
            out = torch.matmul(attn, v).permute(0, 2, 1, 3)  # [B, Nq, H, dv]
            return self.dropout(out.reshape(out.shape[0], 1, out.shape[1], -1))
        shift = self.dense.shift(frame_scores, positions)
        if shift is not None:  # dense inference block: no [B, H, Nq, n, W] tensors at all
            return self.dropout(self.dense.attend(frame_scores, age_scores.squeeze(2), v, shift))
        index = positions[:, :, None] + self.offsets  # [B, n, W]: token frame of each key
        return self.dropout(self._gathered(frame_scores, age_scores, v, index))

    def at_rows(self, queries: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The generic path with explicit key rows: ``index`` ``[B, n, W]`` long, the token row of key
        ``k`` (keys in the order of ``offsets``) for each of ``n`` outputs -> ``[B, n, Nq, H * value_dim]``.
        ``forward`` is ``at_rows`` with ``index = positions + offsets``; callers that hold only the rows their
        windows see (:class:`~koemorph.model.dual_stream.EmotionStream` at inference) pass their own."""
        q, age_scores = self.query_parts(queries)
        frame_scores, v = self.frame_parts(q, tokens)
        return self.dropout(self._gathered(frame_scores, age_scores, v, index))

    def query_parts(self, queries: torch.Tensor):
        """What depends on the queries only: ``(q [Nq, H, dk] scaled by 1/sqrt(dk), age_scores
        [H, Nq, 1, W])``, the age part of every score with the locality prior."""
        nq, h, dk = queries.shape[0], self.heads, self.key_dim
        q = self.q_proj(queries).view(nq, h, dk) * (1.0 / math.sqrt(dk))
        age_scores = torch.einsum("whd,qhd->hqw", self.pos_key, q).unsqueeze(2) + self.prior
        return q, age_scores

    def frame_parts(self, q: torch.Tensor, tokens: torch.Tensor):
        """What each token frame gives, independent of the others: ``(frame_scores [B, H, Nq, T],
        v [B, H, T, dv])`` of ``tokens`` ``[B, T, G, d_token]`` (``q`` from :meth:`query_parts`)."""
        b, t, g, _ = tokens.shape
        if g != self.groups:
            raise ValueError(f"expected {self.groups} token groups, got {g}")
        h, dk, dh = self.heads, self.key_dim, self.value_dim
        k = self.k_proj(tokens).view(b, t, h, dk)  # group g's tokens give heads g*hpg .. (g+1)*hpg - 1
        v = self.v_proj(tokens).view(b, t, h, dh).transpose(1, 2)  # [B, H, T, dv]
        return torch.einsum("bthd,qhd->bhqt", k, q), v

    @staticmethod
    def _gathered(frame_scores, age_scores, v, index) -> torch.Tensor:
        """Attention of every output over its keys ``index`` ``[B, n, W]`` -> ``[B, n, Nq, H * dv]``."""
        b, h, nq, t = frame_scores.shape
        n, w, dh = index.shape[1], index.shape[2], v.shape[-1]
        idx = index.reshape(b, 1, 1, n * w)
        scores = frame_scores.gather(3, idx.expand(b, h, nq, n * w)).view(b, h, nq, n, w) + age_scores
        attn = torch.softmax(scores, dim=-1)  # [B, H, Nq, n, W]
        if n * t <= 2 * n * w:
            # long windows (mel): scatter each row into a banded [n, T] matrix, one matmul with all values
            rows = idx.view(b, 1, 1, n, w).expand(b, h, nq, n, w)
            band = attn.new_zeros(b, h, nq, n, t).scatter(4, rows, attn)
            out = torch.matmul(band.view(b, h, nq * n, t), v).view(b, h, nq, n, dh)
            out = out.permute(0, 3, 2, 1, 4)  # [B, n, Nq, H, dh]
        else:
            # short strided windows (emotion tokens): gather each window's values
            vals = v.gather(2, idx.view(b, 1, n * w, 1).expand(b, h, n * w, dh)).view(b, h, n, w, dh)
            out = torch.matmul(attn.transpose(2, 3), vals)  # [B, H, n, Nq, dh]
            out = out.permute(0, 2, 3, 1, 4)
        return out.reshape(b, n, nq, h * dh)


class Decoder(nn.Module):
    """Per-query head: ``[..., Nq, d]`` attended vectors -> ``[..., Nq]``, ONE value in (0, 1) per query.

    ``Linear(d, hidden) -> GELU -> Dropout`` shared by the queries, then a per-query readout
    ``hidden -> 1`` (``weight`` ``[Nq, hidden]``, ``bias`` ``[Nq]``) and a sigmoid; query ``i`` gives
    blendshape ``i`` (never 52 values per query averaged). With one shared readout every
    blendshape had to be told apart through its query residual alone, which trained slowly; the
    per-query readout costs ``Nq * hidden`` parameters. The biases start at -2 (sigmoid 0.12, a
    typical resting level); :meth:`init_bias` sets them to the logit of the train mean pose.
    """

    def __init__(self, d_model: int, hidden: int, dropout: float, n_out: int = 52):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout))
        self.weight = nn.Parameter(torch.empty(n_out, hidden).uniform_(-1, 1) / math.sqrt(hidden))
        self.bias = nn.Parameter(torch.full((n_out,), -2.0))

    def init_bias(self, mean_pose) -> None:
        """Output biases = logit of ``mean_pose`` ``[Nq]`` (clipped to [0.01, 0.99])."""
        p = torch.as_tensor(mean_pose, dtype=self.bias.dtype).clamp(0.01, 0.99)
        with torch.no_grad():
            self.bias.copy_(torch.log(p / (1 - p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((self.net(x) * self.weight).sum(-1) + self.bias)


class TemporalSmoothing(nn.Module):
    """Learnable exponential smoothing along consecutive output frames.

    ``y_t = a * x_t + (1 - a) * y_{t-1}.detach()`` with ``a = sigmoid(logit)``, ``logit`` initialised
    to ``init`` (``ModelConfig.smoothing_init``: a = 0.95 at 3.0). ``y_{t-1}`` is the previous frame of
    the SAME batch row (time runs along dim 1, never across batch slots); the first frame
    starts from ``state`` ``[B, K]`` (the previous chunk's last smoothed frame), or is ``y_0 = x_0``
    when ``state`` is None (reset at a file or block start).

    ``forward(x [B, n, K], state [B, K] | None) -> y [B, n, K]``.
    """

    def __init__(self, init: float):
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(float(init)))

    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.logit)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.is_grad_enabled() and x.shape[1] > 1:
            return self._closed_form(x, state)
        a = self.alpha()
        prev = None if state is None else state.to(x.dtype)
        ys = []
        for t in range(x.shape[1]):
            y = x[:, t] if prev is None else a * x[:, t] + (1 - a) * prev.detach()
            ys.append(y)
            prev = y
        return torch.stack(ys, dim=1) if ys else x

    def _closed_form(self, x: torch.Tensor, state: torch.Tensor | None, piece: int = 256) -> torch.Tensor:
        """The same recursion without a Python loop over frames (inference): with ``c = 1 - a`` and
        ``y_{-1}`` = ``state`` (or ``x_0`` at a reset, so that ``y_0 = x_0``),
        ``y_t = sum_{s <= t} a c^(t-s) x_s + c^(t+1) y_{-1}``: a lower-triangular ``[piece, piece]``
        matmul per ``piece`` frames, the last frame carried to the next piece."""
        a = self.alpha().to(x.dtype)
        t = torch.arange(min(piece, x.shape[1]), device=x.device, dtype=x.dtype)
        lag = t[:, None] - t[None, :]
        weights = torch.where(lag >= 0, a * (1 - a) ** lag.clamp(min=0), torch.zeros((), dtype=x.dtype))
        decay = (1 - a) ** (t + 1)[:, None]
        prev = x[:, 0] if state is None else state.to(x.dtype)
        ys = []
        for start in range(0, x.shape[1], piece):
            xs = x[:, start : start + piece]
            m = xs.shape[1]
            ys.append(torch.matmul(weights[:m, :m], xs) + decay[:m] * prev[:, None, :])
            prev = ys[-1][:, -1]
        return torch.cat(ys, dim=1)


def check_block(mel: torch.Tensor, egemaps, positions: torch.Tensor, spans) -> int:
    """Check a block's shapes against the contract; returns the output span ``S``."""
    if mel.dim() != 3 or positions.dim() != 2 or positions.shape[0] != mel.shape[0]:
        raise ValueError(
            f"mel must be [B, S+C-1+L, n_mels] and positions [B, n]; got {tuple(mel.shape)}, "
            f"{tuple(positions.shape)}"
        )
    span = spans.span_of_mel(mel.shape[1])
    if span < 1:
        raise ValueError(f"mel has {mel.shape[1]} frames: fewer than C-1+L+1 = {spans.mel_window}")
    n_eg = span + spans.emotion_context - 1
    if egemaps is not None and (egemaps.dim() != 3 or egemaps.shape[:2] != (mel.shape[0], n_eg)):
        raise ValueError(
            f"egemaps must be [B, S+E-1, D] = [{mel.shape[0]}, {n_eg}, D]; got {tuple(egemaps.shape)}"
        )
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= span):
        raise ValueError(f"positions must lie in [0, {span})")
    return span


def smooth_outputs(smoother: TemporalSmoothing | None, raw: torch.Tensor, smooth: bool, state):
    """Smoothed outputs, or ``raw`` itself (the same tensor object) when not smoothing."""
    if smooth and smoother is not None:
        return smoother(raw, state)
    return raw


def alibi_slopes(
    groups: int, heads_per_group: int, steepest: float = 1.0, flattest: float = 1 / 128
) -> torch.Tensor:
    """``[groups * heads_per_group]`` locality slopes (per grid frame of age), geometric from
    ``steepest`` to ``flattest``, interleaved so that every group (mel band) gets local and
    long-range heads: head ``g * hpg + j`` gets the ``(j * groups + g)``-th slope."""
    h = groups * heads_per_group
    ranks = torch.arange(h, dtype=torch.float64) / max(1, h - 1)
    values = steepest * (flattest / steepest) ** ranks
    order = torch.tensor([j * groups + g for g in range(groups) for j in range(heads_per_group)])
    return values[order].float()


def mel_window(spans, kernel: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mel-token window of an output position after a ``kernel``-frame valid conv: ``(offsets, ages)``.

    Token ``j`` of the conv output stands for mel input row ``j + kernel - 1``; output position ``p``
    sits at mel row ``p + C - 1`` and sees tokens ``p + offsets``, ``offsets = 0 .. C + L - kernel``
    (their receptive fields stay inside its mel window ``[p, p + C - 1 + L]``). ``ages`` ``[W]``:
    ``C - kernel - offsets`` grid frames (0 = the output frame itself, negative = lookahead).
    """
    offsets = torch.arange(spans.mel_window - kernel + 1)
    return offsets, (spans.context - kernel) - offsets


def stack_frames(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """``[B, T, ...]`` -> ``[B, T - kernel + 1, ..., kernel * D]``: row ``j`` holds input rows
    ``j .. j + kernel - 1`` (oldest first) concatenated along the last dim, a valid (unpadded) causal
    convolution's receptive field: output row ``j`` stands for input frame ``j + kernel - 1`` and sees
    no later frame. ``kernel = 1`` returns ``x`` itself."""
    if kernel <= 1:
        return x
    t = x.shape[1] - kernel + 1
    if t < 1:
        raise ValueError(f"{x.shape[1]} frames: fewer than the encoder kernel {kernel}")
    return torch.cat([x[:, k : k + t] for k in range(kernel)], dim=-1)


def query_init(n: int, d: int) -> nn.Parameter:
    """52 learnable blendshape queries ``[n, d]``, drawn from N(0, 0.1²)."""
    return nn.Parameter(torch.randn(n, d) * 0.1)


__all__ = [
    "WindowAttention",
    "Decoder",
    "TemporalSmoothing",
    "check_block",
    "smooth_outputs",
    "query_init",
    "alibi_slopes",
    "mel_window",
    "stack_frames",
]
