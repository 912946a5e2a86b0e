"""Exact shortcut of :class:`~koemorph.model.layers.WindowAttention` for dense inference blocks.

Dense inference (``predict_file``: no grad, every output position ``p = 0 .. n-1`` of a block) is
where the render spends its time. The generic path builds every position's scores ``[B, H, Nq, n, W]``,
a softmax over them and a banded ``[n, T]`` attention matrix per (head, query): several passes over
100-200 MB per block. Here no per-(position, key) tensor exists at all.

Why it works: the queries are static, so the score of key ``k`` at position ``p`` is separable,
``s(p, k) = f[p + off_k] + g[k]`` with ``f = q·K_t`` per input frame ``t`` (``frame_scores``) and
``g = q·pos_k + prior`` per key (``age_scores``). The softmax numerator factors:
``exp(s(p, k)) = kern[k] * e[p + off_k]`` with ``kern = exp(g - max g)`` (data-independent, <= 1)
and ``e = exp(f - m)`` (one exp per frame; ``m`` a per-(row, head, query) constant, see below). With
``u[t] = e[t] * [v[t], 1]`` (values and a ones column), the attended output is

    out[p] = sum_k kern[k] u[p + off_k][:dv]  /  sum_k kern[k] u[p + off_k][dv]

a correlation of ``u`` with a fixed kernel per (head, query): a Toeplitz matmul. The offsets are
an arithmetic progression ``o0 + s*j`` (mel: ``0 .. W-1``; emotion tokens: every ``s = 9`` frames),
so the frames are folded into rows of ``s`` (row ``a`` holds frames ``o0 + s*a + r``, ``r < s``) and
the kernel runs along rows: one Toeplitz tile ``[P, P + W - 1]`` per (head, query), built once per
weights (cached), serves every residue ``r`` and every run of ``P`` output rows. Heads go one at a
time (``u`` of one head stays in cache). Kernel entries that are exactly 0 in float32 at both ends of
a head's window (steep ALiBi heads: the old keys) are cut from that head's tile: they add exactly 0.

Padding: the frames before a file's first frame are all alike (normalised silence), so a file's
first block starts with up to ``C - 1`` equal frames. Those rows of ``u`` enter each tile as ONE
row times the sum of their kernel weights (a prefix sum of the kernel), not as ``C - 1`` matmul
columns: about half of the attention cost of a file shorter than the context.

Exactness (float rounding only, checked against the generic path in tests/test_dense.py):
``m = 0`` unless a row's frame scores leave [-40, 40] (then the smallest shift that brings them
inside; rows whose scores span more than 80 fall back to the generic path). So ``e`` lies in
[exp(-40), exp(40)]: no overflow in the sums, denominators far from underflow, and a key whose kernel
weight underflows to 0 (``g - max g < -103``) had a true weight below ``exp(-103 + 80)`` of the
largest. With ``m = 0`` (the usual case) an output depends on the frames of its own window only,
bit for bit: the frames outside it meet exact zeros of the tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCORE_BOUND = 40.0  # frame scores are shifted into [-SCORE_BOUND, SCORE_BOUND]
MIN_POSITIONS = 8  # smaller blocks (predict_file_naive: 1) are faster on the generic path
TILE = 32  # output rows per Toeplitz matmul (16-32 about equally fast on the 2-core EPYC, 1 thread)


class DenseWindow:
    """The shortcut for one attention's ``offsets`` ``[W]``: their progression and the kernel cache.

    Plain object (not a Module): nothing enters the state_dict. ``shift`` says whether the
    shortcut applies to a call; ``attend`` computes it.
    """

    def __init__(self, offsets: torch.Tensor):
        order = torch.argsort(offsets)
        ranked = offsets[order].tolist()
        step = ranked[1] - ranked[0] if len(ranked) > 1 else 1
        ok = step >= 1 and all(b - a == step for a, b in zip(ranked, ranked[1:]))
        self.progression = (ranked[0], step, order) if ok else None  # first offset, step, keys by offset
        self.span_extra = ranked[-1]  # T - n of a dense block
        self._cache = None  # (kernel [H, Nq, W], [(first key, tile [Nq, P, P + W_h - 1]) per head])

    def shift(self, frame_scores: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
        """``m`` ``[B, H, Nq, 1]`` for :meth:`attend`, or None where the generic path must run.

        Applies without grad, in float32/64, when ``positions`` ``[B, n]`` is every output of the block
        in order (``n = T - max offset``, at least ``MIN_POSITIONS``) and every row's frame scores span
        at most ``2 * SCORE_BOUND``.
        """
        b, t = frame_scores.shape[0], frame_scores.shape[-1]
        n = positions.shape[1]
        floating = frame_scores.dtype in (torch.float32, torch.float64)
        if (
            torch.is_grad_enabled()
            or not floating
            or self.progression is None
            or n < max(1, MIN_POSITIONS)
            or n != t - self.span_extra
        ):
            return None
        if not torch.equal(positions, torch.arange(n, device=positions.device).expand(b, n)):
            return None
        hi, lo = frame_scores.amax(-1, keepdim=True), frame_scores.amin(-1, keepdim=True)
        if not bool(((hi - lo) <= 2 * SCORE_BOUND).all()):  # also False for NaN / inf
            return None
        return torch.maximum((hi - SCORE_BOUND).clamp(min=0), (lo + SCORE_BOUND).clamp(max=0))

    def attend(
        self, frame_scores: torch.Tensor, age_scores: torch.Tensor, v: torch.Tensor, shift: torch.Tensor
    ) -> torch.Tensor:
        """``frame_scores`` ``[B, H, Nq, T]``, ``age_scores`` ``[H, Nq, W]`` (prior included), ``v``
        ``[B, H, T, dv]``, ``shift`` from :meth:`shift` -> ``[B, n, Nq, H * dv]`` (heads concatenated),
        what the generic path of ``WindowAttention.forward`` returns before dropout."""
        b, h, nq, t = frame_scores.shape
        dv = v.shape[-1]
        first, step, _ = self.progression
        n = t - self.span_extra
        rows_out = -(-n // step)  # rows of `step` frames holding outputs
        e = torch.exp(frame_scores - shift)  # [B, H, Nq, T]
        vals = F.pad(v, (0, 1), value=1.0)  # [B, H, T, dv + 1]: the ones column sums the weights
        out = e.new_empty(b, n, nq, h, dv)
        uniform = uniform_prefix(frame_scores, v)
        for head, (lo, tile, cum) in enumerate(self._tiles(age_scores)):
            p, width = tile.shape[1], tile.shape[2] - tile.shape[1] + 1  # this head's kernel length
            rows_in = rows_out + width - 1
            start, frames = first + lo * step, rows_in * step  # input frames [start, start + frames)
            same = max(0, (uniform - start) // step)  # leading rows of u that are all equal
            e_h, v_h = e[:, head, :, start : start + frames], vals[:, head, start : start + frames]
            if e_h.shape[-1] < frames:  # past the block end: zero frames add nothing
                e_h = F.pad(e_h, (0, frames - e_h.shape[-1]))
                v_h = F.pad(v_h, (0, 0, 0, frames - v_h.shape[1]))
            # u[q, a, (r, b, c)] = e * [v, 1] at frame start + a*step + r
            u = e.new_empty(nq, rows_in, step, b, dv + 1)
            torch.mul(
                e_h.reshape(b, nq, rows_in, step).permute(1, 2, 3, 0).unsqueeze(-1),
                v_h.reshape(b, rows_in, step, dv + 1).permute(1, 2, 0, 3),
                out=u,
            )
            u = u.view(nq, rows_in, step * b * (dv + 1))
            dst = out[:, :, :, head].permute(2, 1, 0, 3)  # [Nq, n, B, dv]
            for a in range(0, rows_out, p):
                rows, cols = min(p, rows_out - a), min(p, rows_out - a) + width - 1
                skip = min(max(0, same - a), cols)
                if skip:  # equal rows: their kernel weights summed (a prefix sum), times one row
                    weights = cum[:, (skip - torch.arange(rows, device=cum.device)).clamp(0, width)]
                    c = torch.baddbmm(
                        weights.unsqueeze(-1) * u[:, a : a + 1],
                        tile[:, :rows, skip:cols],
                        u[:, a + skip : a + cols],
                    )
                else:
                    c = torch.bmm(tile[:, :rows, :cols], u[:, a : a + cols])
                c = c.view(nq, rows * step, b, dv + 1)[:, : n - a * step]  # [Nq, these rows' frames, B, dv+1]
                torch.div(c[..., :dv], c[..., dv:], out=dst[:, a * step : a * step + c.shape[1]])
        return out.view(b, n, nq, h * dv)

    def _tiles(self, age_scores: torch.Tensor) -> list:
        """Per head ``(first key, tile, cum)``: ``tile[q, i, i + j] = kern[q, first + j]``
        ``[Nq, P, P + W_h - 1]`` over the head's keys ``first .. first + W_h - 1`` (by offset) whose
        kernel is not 0 for every query, and ``cum[q, m] = sum_{j < m} kern[q, first + j]``
        ``[Nq, W_h + 1]``; rebuilt only when the kernel changes (new weights)."""
        order = self.progression[2].to(age_scores.device)
        kern = torch.exp(age_scores - age_scores.amax(-1, keepdim=True))[..., order]  # [H, Nq, W]
        cached = self._cache
        if (
            cached is not None
            and cached[0].shape == kern.shape
            and cached[0].dtype == kern.dtype
            and cached[0].device == kern.device
            and torch.equal(cached[0], kern)
        ):
            return cached[1]
        tiles = []
        for head in kern:  # [Nq, W]
            used = torch.nonzero(head.amax(0) > 0).flatten()
            lo, hi = int(used[0]), int(used[-1]) + 1
            k = head[:, lo:hi]
            nq, w = k.shape
            tile = k.new_zeros(nq, TILE, TILE + w - 1)
            diagonals = tile.as_strided((nq, TILE, w), (TILE * (TILE + w - 1), TILE + w, 1))  # (q, i, i + j)
            diagonals.copy_(k[:, None].expand(nq, TILE, w))
            tiles.append((lo, tile, F.pad(torch.cumsum(k, -1), (1, 0))))
        self._cache = (kern, tiles)
        return tiles


def uniform_prefix(frame_scores: torch.Tensor, v: torch.Tensor) -> int:
    """How many leading frames of a block have bitwise the same scores ``[B, H, Nq, T]`` and values
    ``[B, H, T, dv]`` as frame 0 (in every row and head): the padding before a file's first frame."""
    same = (frame_scores == frame_scores[..., :1]).flatten(0, 2).all(0)
    same &= (v == v[:, :, :1]).all(-1).flatten(0, 1).all(0)
    return int(torch.cumprod(same, 0).sum())


__all__ = ["DenseWindow", "MIN_POSITIONS", "SCORE_BOUND", "TILE"]
