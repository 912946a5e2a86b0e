"""Exact inference shortcuts: the dense attention path (koemorph.model.dense), the one-output window
of a stream's frame-by-frame call, and closed-form smoothing agree with the generic code to float
tolerance."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from koemorph.config import FeaturesConfig, ModelConfig
from koemorph.model import build_model, dense
from koemorph.model.infer import predict_file, predict_file_naive
from koemorph.model.layers import TemporalSmoothing, WindowAttention

torch.set_num_threads(2)
SMALL = ModelConfig(
    d_model=32, num_heads=4, mel_bands=4, decoder_hidden=16, context_s=0.5, emotion_context_s=1.0, dropout=0.0
)
# 15 + 3 mel frames, 30 eGeMAPS frames, tokens every 3
SMALL_FEATURES = FeaturesConfig(egemaps_step_s=0.1, egemaps=True, phones=False)


@pytest.fixture
def generic(monkeypatch):
    """Call ``generic()`` inside a test to switch the dense shortcut off from then on."""
    return lambda: monkeypatch.setattr(dense.DenseWindow, "shift", lambda *args: None)


@pytest.fixture
def dense_calls(monkeypatch):
    """Counts the calls that took the dense shortcut."""
    calls = []
    original = dense.DenseWindow.attend

    def attend(self, *args):
        calls.append(self)
        return original(self, *args)

    monkeypatch.setattr(dense.DenseWindow, "attend", attend)
    return calls


def _streams(model, mel, eg, pos):
    with torch.no_grad():
        out = [model.mel_stream(model.queries, mel, pos)]
        if getattr(model, "emotion_stream", None) is not None:
            out.append(model.emotion_stream(model.queries, eg, pos))
        return out


def test_default_model_block_matches_generic(generic, dense_calls):
    """Default geometry (259 mel keys, 67 emotion tokens 9 frames apart, ALiBi prior), 2 rows, 37
    positions (not a multiple of the tile nor of the token step). The mel stream takes the dense
    shortcut; the emotion stream its distinct windows (random rows: every window distinct)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(mel_bands=4), FeaturesConfig(egemaps=True, phones=False)).eval()
    sp, n = model.spans, 37
    g = torch.Generator().manual_seed(1)
    mel = torch.randn(2, n + sp.context - 1 + sp.lookahead, 80, generator=g)
    eg = torch.randn(2, n + sp.emotion_context - 1, 88, generator=g)
    pos = torch.arange(n).repeat(2, 1)
    fast = _streams(model, mel, eg, pos)
    assert dense_calls == [model.mel_stream.attention.dense]
    att = model.mel_stream.attention
    widths = [tile.shape[2] - tile.shape[1] + 1 for _, tile, _ in att.dense._cache[1]]
    assert min(widths) < len(att.offsets) == max(widths)  # the steepest heads' zero keys were cut
    generic()
    slow = _streams(model, mel, eg, pos)
    for a, b in zip(fast, slow):
        assert a.shape == b.shape == (2, n, 52, 256)
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    out_fast = model(mel, eg, pos, smooth=True)
    assert not torch.equal(fast[0][0], fast[0][1])  # rows differ: the comparison can fail
    del out_fast


@pytest.mark.parametrize("kind", ("dual_stream", "simplified"))
@pytest.mark.parametrize("locality", (True, False))
def test_predict_file_matches_generic(kind, locality, generic, dense_calls, monkeypatch):
    """Whole files (padding before frame 0 and past the end, chunk boundaries): the shortcut equals
    the generic path and the naive per-frame reference (blocks of any size, 1 included, take it)."""
    monkeypatch.setattr(dense, "MIN_POSITIONS", 1)
    torch.manual_seed(0)
    model = build_model(replace(SMALL, kind=kind, locality_prior=locality), SMALL_FEATURES)
    rng = np.random.default_rng(3)
    mel, eg = rng.standard_normal((50, 80), np.float32), rng.standard_normal((50, 88), np.float32)
    fast = {c: predict_file(model, mel, eg, 30, chunk=c, pad_mel=-3.0) for c in (7, 16, 1000)}
    raw = predict_file(model, mel, eg, 30, chunk=13, pad_mel=-3.0, smooth=False)
    assert dense_calls
    generic()
    slow = predict_file(model, mel, eg, 30, chunk=1000, pad_mel=-3.0)
    for c, y in fast.items():
        np.testing.assert_allclose(y, slow, atol=1e-6, err_msg=f"chunk {c}")
    raw_9 = predict_file(model, mel, eg, 30, chunk=9, pad_mel=-3.0, smooth=False)
    np.testing.assert_allclose(raw, raw_9, atol=1e-6)
    np.testing.assert_allclose(predict_file_naive(model, mel, eg, 30, pad_mel=-3.0), slow, atol=1e-5)


def test_large_scores_shift_or_fall_back(generic, dense_calls):
    """Frame scores beyond +-SCORE_BOUND are shifted (same result); a row spanning more than twice
    the bound falls back to the generic path."""
    torch.manual_seed(0)
    model = build_model(SMALL, SMALL_FEATURES).eval()
    att = model.mel_stream.attention
    g = torch.Generator().manual_seed(2)
    mel = torch.randn(1, 20 + 17, 80, generator=g)
    eg = torch.randn(1, 20 + 29, 88, generator=g)
    pos = torch.arange(20)[None]
    with torch.no_grad():
        att.q_proj.bias.fill_(2.0)  # scores ~ 8 * 2 * 20 / sqrt(8) = 113 (exp overflows), small spread
        att.k_proj.bias.fill_(20.0)
        tokens = model.mel_stream.band_out(
            model.mel_stream.band_in(mel.view(1, -1, 4, 20)) + model.mel_stream.band_embedding
        )
        q = att.q_proj(model.queries).view(52, att.heads, att.key_dim) / att.key_dim**0.5
        scores = torch.einsum("bthd,qhd->bhqt", att.k_proj(tokens).view(1, -1, att.heads, att.key_dim), q)
        spread = (scores.amax(-1) - scores.amin(-1)).max()
        assert scores.abs().max() > dense.SCORE_BOUND and spread < 2 * dense.SCORE_BOUND
        shift = att.dense.shift(scores, pos)
        assert shift is not None and shift.abs().max() > 0
        assert att.dense.shift(scores * (2.5 * dense.SCORE_BOUND / spread), pos) is None  # too wide
    fast = _streams(model, mel, eg, pos)
    assert att.dense in dense_calls
    generic()
    slow = _streams(model, mel, eg, pos)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_shortcut_only_for_dense_inference():
    torch.manual_seed(0)
    model = build_model(SMALL, SMALL_FEATURES).eval()
    att = model.mel_stream.attention
    scores = torch.randn(1, 4, 52, 10 + 17)
    with torch.no_grad():
        assert att.dense.shift(scores, torch.arange(10)[None]) is not None
        assert att.dense.shift(scores, torch.tensor([[0, 2, 4, 6, 8, 9, 9, 9, 9, 9]])) is None  # sparse
        assert att.dense.shift(scores, torch.arange(9)[None]) is None  # scores of another block length
        assert att.dense.shift(scores[..., 5:], torch.arange(5)[None]) is None  # fewer than MIN_POSITIONS
        assert att.dense.shift(scores.half(), torch.arange(10)[None]) is None
    with torch.enable_grad():
        assert att.dense.shift(scores, torch.arange(10)[None]) is None  # training keeps the generic path


def test_kernel_cache_follows_the_weights(generic):
    torch.manual_seed(0)
    model = build_model(SMALL, SMALL_FEATURES).eval()
    rng = np.random.default_rng(4)
    mel, eg = rng.standard_normal((40, 80), np.float32), rng.standard_normal((40, 88), np.float32)
    before = predict_file(model, mel, eg, 30, chunk=16, pad_mel=-3.0)
    with torch.no_grad():
        for att in (model.mel_stream.attention, model.emotion_stream.attention):
            att.pos_key += 0.5 * torch.randn_like(att.pos_key)  # in place, as an optimiser step would
    after = predict_file(model, mel, eg, 30, chunk=16, pad_mel=-3.0)
    assert not np.allclose(before, after, atol=1e-4)
    generic()
    np.testing.assert_allclose(after, predict_file(model, mel, eg, 30, chunk=16, pad_mel=-3.0), atol=1e-6)


@pytest.mark.parametrize("uniform", (0, 1, 30, 55, 59))
def test_uniform_prefix_is_summed_once(uniform, generic, dense_calls):
    """Leading frames with equal tokens (a file's padding) enter the dense path as one row times a
    prefix sum of the kernel: the same result, whether the prefix ends inside a tile (30), covers a
    whole tile's inputs (55 > 32 + 20 - 1) or the whole block (59)."""
    torch.manual_seed(0)
    att = WindowAttention(
        16, 8, 1, 2, 4, 4, torch.arange(20), ages=19 - torch.arange(20), slopes=torch.tensor([0.5, 0.05])
    ).eval()
    queries, tokens = torch.randn(5, 16), torch.randn(1, 59, 1, 8)
    tokens[:, :uniform] = tokens[:, :1]
    pos = torch.arange(40)[None]
    with torch.no_grad():
        fast = att(queries, tokens, pos)
        scores, v = att.frame_parts(att.query_parts(queries)[0], tokens)
    assert dense_calls == [att.dense]
    assert dense.uniform_prefix(scores, v) == max(uniform, 1)
    generic()
    torch.testing.assert_close(fast, att(queries, tokens, pos).detach(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", ("runs", "random", "two rows", "rows apart"))
def test_emotion_distinct_windows(case, monkeypatch):
    """At inference the emotion stream computes each distinct window once: eGeMAPS rows held for
    9 frames (at any phase) and constant padding give one window per 9 positions; the result equals
    the training path's (every position computed) on dense and sparse positions."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(mel_bands=4), FeaturesConfig(egemaps=True, phones=False)).eval()
    stream, sp, n = model.emotion_stream, model.spans, 100
    b = 1 if case in ("runs", "random") else 2
    held = torch.randn(b, (n + sp.emotion_context) // sp.step + 2, 88).repeat_interleave(sp.step, 1)
    eg = held[:, 4 : 4 + n + sp.emotion_context - 1] if case != "random" else torch.randn(b, 699, 88)
    eg[:, :203] = 0.3  # padding before the first frame (held rows change at rows 5 + 9k)
    computed = []
    at_rows = stream.attention.at_rows

    def counted(queries, tokens, index):
        computed.append(index.shape[1])
        return at_rows(queries, tokens, index)

    monkeypatch.setattr(stream.attention, "at_rows", counted)
    for pos in (torch.arange(n), torch.tensor([3, 4, 5, 40, 41, 99])):
        pos = pos.expand(b, -1).clone()
        if case == "rows apart":
            pos[1] = pos[1].flip(0)
        with torch.no_grad():
            fast = stream(model.queries, eg, pos)
        slow = stream(model.queries, eg, pos)  # with grad: every position
        torch.testing.assert_close(fast, slow.detach(), atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        assert stream(model.queries, eg, pos[:, :0]).shape == (b, 0, 52, 256)  # no positions
    if case in ("runs", "two rows"):
        assert computed[0] == 12  # windows change at positions 0, 9, ..., 99
    elif case == "random":
        assert computed == [n, 6]
    else:
        assert computed == []  # rows with different positions: the training path


def test_one_output_over_its_window_matches_generic():
    """A stream's call: one position whose keys are exactly the block's frames, in order."""
    torch.manual_seed(0)
    ages = 16 - torch.arange(20)
    att = WindowAttention(16, 8, 2, 2, 4, 4, torch.arange(20), ages=ages, slopes=torch.rand(4)).eval()
    queries, tokens, pos = torch.randn(5, 16), torch.randn(3, 20, 2, 8), torch.zeros(3, 1, dtype=torch.long)
    with torch.no_grad():
        q, age = att.query_parts(queries)
        scores, v = att.frame_parts(q, tokens)
        generic = att._gathered(scores, age, v, pos[:, :, None] + att.offsets)
        assert att.in_order
        torch.testing.assert_close(att(queries, tokens, pos), generic, atol=1e-6, rtol=1e-5)
        att.in_order = False  # the generic path gives the same, so the shortcut must be what ran above
        torch.testing.assert_close(att(queries, tokens, pos), generic, atol=0, rtol=0)
        assert not WindowAttention(16, 8, 1, 2, 4, 4, torch.arange(20).flip(0)).in_order


@pytest.mark.parametrize("with_state", (False, True))
def test_closed_form_smoothing_equals_the_recursion(with_state):
    smoother = TemporalSmoothing(0.8)
    x = torch.rand(2, 600, 52)  # more than one 256-frame piece
    state = torch.rand(2, 52) if with_state else None
    with torch.no_grad():
        fast = smoother(x, state)
    slow = smoother(x, state)  # with grad: the frame loop
    assert slow.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, slow.detach(), atol=1e-6, rtol=1e-5)
    if not with_state:
        torch.testing.assert_close(fast[:, 0], x[:, 0])
