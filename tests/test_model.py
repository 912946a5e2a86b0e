"""Networks, losses, gradient diagnostics and whole-file inference (small widths, real time spans)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from koemorph import blendshapes
from koemorph.config import FeaturesConfig, LossConfig, ModelConfig
from koemorph.model import build_model, count_parameters
from koemorph.model.infer import predict_file, predict_file_naive
from koemorph.model.windows import mel_pad_value, spans, window
from koemorph.training.diagnostics import check_gradients, grad_norms
from koemorph.training.losses import channel_scale, compute_losses

torch.set_num_threads(2)
KINDS = ("dual_stream", "simplified")
OPTIONS = {"mel_summary": 8, "band_overlap": 2, "temporal_layers": 2, "conv_kernel": 2}  # band-stream options
MODELS = [("dual_stream", {}), ("simplified", {}), ("dual_stream", OPTIONS)]
SMALL = ModelConfig(
    d_model=32, num_heads=4, mel_bands=4, decoder_hidden=16, context_s=0.5, emotion_context_s=1.0, dropout=0.0
)
# 15 mel frames, 30 eGeMAPS frames, tokens every 3
SMALL_FEATURES = FeaturesConfig(egemaps_step_s=0.1, egemaps=True, phones=False)


def small(kind="dual_stream", features=SMALL_FEATURES, n_egemaps=88, seed=0, **changes):
    torch.manual_seed(seed)
    return build_model(replace(SMALL, kind=kind, **changes), features, n_egemaps=n_egemaps)


def block(model, batch, span, seed=0):
    g = torch.Generator().manual_seed(seed)
    sp = model.spans
    mel = torch.randn(batch, span + sp.context - 1 + sp.lookahead, 80, generator=g)
    eg = torch.randn(batch, span + sp.emotion_context - 1, 88, generator=g)
    return mel, eg, torch.arange(span).repeat(batch, 1)


def test_spans_and_window():
    for fps, c, e, step in ((30, 256, 600, 9), (60, 512, 1200, 18)):
        sp = spans(ModelConfig(lookahead_s=0.1), FeaturesConfig(fps=fps))
        got = (sp.context, sp.lookahead, sp.emotion_context, sp.step, sp.n_tokens)
        assert got == (c, fps // 10, e, step, 67)
        assert sp.mel_frames(10, 32) == (10 - (c - 1), 42 + fps // 10) and sp.egemaps_frames(10, 32) == (
            10 - (e - 1),
            42,
        )
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    w = window(x, -2, 8, pad_value=np.array([-1.0, -9.0]))
    assert w.shape == (10, 2) and w.dtype == np.float32
    np.testing.assert_array_equal(w[:2], [[-1, -9], [-1, -9]])
    np.testing.assert_array_equal(w[2:8], x)
    np.testing.assert_array_equal(w[8:], [[-1, -9], [-1, -9]])
    assert window(x, 7, 9, 5.0).tolist() == [[5.0, 5.0], [5.0, 5.0]]
    np.testing.assert_allclose(mel_pad_value([-50.0], [25.0], -100.0), [-2.0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fps", (30, 60))
def test_shapes_dense_and_sparse(kind, fps):
    features = FeaturesConfig(fps=fps, egemaps=True, phones=False)
    model = build_model(replace(ModelConfig(kind=kind), d_model=32, num_heads=4, mel_bands=4), features)
    sp = model.spans
    assert sp.context == round(8.5333 * fps)
    mel, eg, _ = block(model, 2, 40)
    for positions in (torch.arange(40).repeat(2, 1), torch.tensor([[3, 35], [0, 39]])):
        out = model(mel, eg, positions, smooth=True)
        n = positions.shape[1]
        assert out["blendshapes"].shape == out["raw"].shape == (2, n, 52)
        assert ((out["raw"] > 0) & (out["raw"] < 1)).all()
        assert out["alpha"].shape == ()
        if kind == "dual_stream":
            assert out["stream_weights"].shape == (52, 2)
    with pytest.raises(ValueError):
        model(mel[:, 1:], eg, positions)
    with pytest.raises(ValueError):
        model(mel, eg, torch.tensor([[0, 40], [1, 2]]))


def test_sparse_positions_equal_dense_rows():
    model = small().eval()
    mel, eg, dense = block(model, 2, 20)
    pos = torch.tensor([[1, 7, 19], [0, 4, 5]])
    full = model(mel, eg, dense)["raw"]
    sparse = model(mel, eg, pos)["raw"]
    torch.testing.assert_close(sparse, torch.stack([full[b, pos[b]] for b in range(2)]))


@pytest.mark.parametrize("kind,options", MODELS)
def test_every_parameter_gets_a_gradient(kind, options):
    model = small(kind, dropout=0.1, **options).train()
    mel, eg, pos = block(model, 2, 12)
    out = model(mel, eg, pos, smooth=True)
    target = torch.rand(2, 12, 52)
    mask = torch.ones(2, 12, dtype=torch.bool)
    total, terms = compute_losses(out, target, mask, LossConfig(), consecutive=True)
    assert set(terms) == {"mse", "l1", "perceptual", "velocity", "consistency", "closure", "total"}
    total.backward()
    assert check_gradients(model) == []
    norms = grad_norms(model)
    assert {"grad/mel_stream", "grad/queries", "grad/decoder", "grad/smoothing", "grad_norm"} <= set(norms)
    if kind == "dual_stream":
        assert {"grad/emotion_stream", "grad/stream_weights", "stream_balance"} <= set(norms)
        balance = norms["grad/mel_stream"] / norms["grad/emotion_stream"]
        assert norms["stream_balance"] == pytest.approx(balance)


def test_check_gradients_flags_problems():
    model = small()
    mel, eg, pos = block(model, 1, 4)
    model(mel, eg, pos, smooth=False)["raw"].mean().backward()  # no smoothing: alpha unused
    assert "smoothing.logit: no gradient" in check_gradients(model)
    model.decoder.net[0].weight.grad.zero_()
    model.queries.grad.fill_(1e4)
    problems = check_gradients(model)
    assert "decoder.net.0.weight: zero gradient" in problems
    assert any(p.startswith("queries: exploding") for p in problems)
    model.queries.grad[0, 0] = float("nan")
    assert "queries: non-finite gradient" in check_gradients(model)


def test_stream_weights_softmax_over_two_streams():
    model = small()
    w = model(*block(model, 1, 3))["stream_weights"]
    torch.testing.assert_close(w.sum(dim=1), torch.ones(52))
    assert not torch.allclose(w.sum(dim=0), torch.ones(2))  # not a softmax over the 52
    assert (w[blendshapes.MOUTH_INDICES, 0] > 0.5).all()
    assert (w[blendshapes.EXPRESSION_INDICES, 1] > 0.5).all()
    assert model.stream_logits.requires_grad


def test_egemaps_switched_off():
    model = small()  # built with an emotion stream, called without eGeMAPS
    mel, eg, pos = block(model, 2, 5)
    out = model(mel, None, pos)
    assert out["raw"].shape == (2, 5, 52)
    assert out["stream_weights"][:, 1].abs().sum() == 0
    mel_only = small(features=replace(SMALL_FEATURES, egemaps=False))
    assert mel_only.emotion_stream is None and not any("emotion" in n for n, _ in mel_only.named_parameters())
    out = mel_only(mel, None, pos, smooth=True)
    assert out["raw"].shape == (2, 5, 52)
    compute_losses(out, torch.rand(2, 5, 52), None, LossConfig(), True)[0].backward()
    assert check_gradients(mel_only) == []
    assert count_parameters(mel_only) < count_parameters(model)


@pytest.mark.parametrize("kind", KINDS)
def test_smoothing_runs_along_time_and_resets(kind):
    model = small(kind).eval()
    mel, eg, pos = block(model, 2, 6)
    out = model(mel, eg, pos, smooth=True)
    x, y, a = out["raw"], out["blendshapes"], out["alpha"]
    torch.testing.assert_close(y[:, 0], x[:, 0])  # state None: reset, y_0 = x_0
    for t in range(1, 6):
        torch.testing.assert_close(y[:, t], a * x[:, t] + (1 - a) * y[:, t - 1])
    state = torch.full((2, 52), 0.5)
    y2 = model(mel, eg, pos, smooth=True, state=state)["blendshapes"]
    torch.testing.assert_close(y2[:, 0], a * x[:, 0] + (1 - a) * state)
    plain = model(mel, eg, pos, smooth=False)
    assert plain["blendshapes"] is plain["raw"]
    mel2 = mel.clone()
    mel2[1] += 1.0  # another batch row: never leaks across slots
    torch.testing.assert_close(model(mel2, eg, pos, smooth=True)["blendshapes"][0], y[0])


def _file(n=50, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 80)).astype(np.float32), rng.standard_normal((n, 88)).astype(np.float32)


@pytest.mark.parametrize("kind,options", MODELS)
def test_predict_file_chunks_and_naive_agree(kind, options):
    model = small(kind, dropout=0.1, **options).train()
    mel, eg = _file()
    one = predict_file(model, mel, eg, 30, chunk=1000, pad_mel=-3.0)
    assert model.training  # mode restored
    assert one.shape == (50, 52)
    np.testing.assert_allclose(predict_file(model, mel, eg, 30, chunk=7, pad_mel=-3.0), one, atol=1e-6)
    np.testing.assert_allclose(predict_file_naive(model, mel, eg, 30, pad_mel=-3.0), one, atol=1e-5)
    raw = predict_file(model, mel, eg, 30, chunk=16, pad_mel=-3.0, smooth=False)
    assert not np.allclose(raw, one)
    naive_raw = predict_file_naive(model, mel, eg, 30, pad_mel=-3.0, smooth=False)
    np.testing.assert_allclose(naive_raw, raw, atol=1e-5)
    with pytest.raises(ValueError):
        predict_file(model, mel, eg, 60, pad_mel=-3.0)


@pytest.mark.parametrize("kind,options", MODELS)
@pytest.mark.parametrize("lookahead", (0, 3))
def test_causality(kind, options, lookahead):
    model = small(kind, lookahead_s=lookahead / 30, **options)
    assert model.spans.lookahead == lookahead
    mel, eg = _file(60)
    base = predict_file(model, mel, eg, 30, chunk=13, pad_mel=-3.0)
    t = 30
    for name in ("mel", "egemaps") if kind == "dual_stream" else ("mel",):
        mel2, eg2 = mel.copy(), eg.copy()
        (mel2 if name == "mel" else eg2)[t + 1 :] += 5.0
        moved = predict_file(model, mel2, eg2, 30, chunk=13, pad_mel=-3.0)
        ahead = lookahead if name == "mel" else 0  # eGeMAPS is always causal
        np.testing.assert_array_equal(moved[: t + 1 - ahead], base[: t + 1 - ahead], err_msg=name)
        assert not np.allclose(moved[t + 1 :], base[t + 1 :]), name  # the test can fail
        if ahead:
            assert not np.allclose(moved[t + 1 - ahead : t + 1], base[t + 1 - ahead : t + 1])
        mel3, eg3 = mel.copy(), eg.copy()
        (mel3 if name == "mel" else eg3)[t] += 5.0  # the output frame's own features are in its window
        own = predict_file(model, mel3, eg3, 30, chunk=13, pad_mel=-3.0, smooth=False)
        plain = predict_file(model, mel, eg, 30, chunk=13, pad_mel=-3.0, smooth=False)
        np.testing.assert_array_equal(own[: t - ahead], plain[: t - ahead])
        assert not np.allclose(own[t], plain[t]), name


@pytest.mark.parametrize("options", ({}, OPTIONS))
def test_context_is_bounded(options):
    model = small(**options)
    mel, eg = _file(80)
    mel2, eg2 = mel.copy(), eg.copy()
    mel2[:10] += 5.0
    eg2[:10] += 5.0
    moved = predict_file(model, mel2, eg2, 30, pad_mel=-3.0, smooth=False)
    base = predict_file(model, mel, eg, 30, pad_mel=-3.0, smooth=False)
    reach = max(model.spans.context, model.spans.emotion_context)  # frame 9 is seen up to 9 + reach - 1
    np.testing.assert_array_equal(moved[9 + reach :], base[9 + reach :])
    assert not np.allclose(moved[:10], base[:10])


def _out(pred, raw=None):
    return {"blendshapes": pred, "raw": pred if raw is None else raw}


def test_losses_known_values():
    cfg = LossConfig()
    target = torch.rand(2, 5, 52) * 0.5
    total, t = compute_losses(_out(target + 0.1), target, None, cfg, consecutive=True)
    assert t["mse"].item() == pytest.approx(0.01, rel=1e-4)
    assert t["l1"].item() == pytest.approx(0.1, rel=1e-4)
    assert t["perceptual"].item() == pytest.approx(0.02, rel=1e-4)
    assert t["velocity"].item() == pytest.approx(0.0, abs=1e-10)
    assert "consistency" not in t  # not smoothed
    assert total.item() == pytest.approx(cfg.mse * 0.01 + cfg.l1 * 0.1 + cfg.perceptual * 0.02, rel=1e-4)
    _, t = compute_losses(_out(target + 0.1), target, None, cfg, consecutive=False)
    assert "velocity" not in t
    pred = target.clone()
    pred[..., blendshapes.index_of("jawOpen")] += 0.52  # mouth group only: 28 channels
    _, t = compute_losses(_out(pred), target, None, cfg, False)
    assert t["perceptual"].item() == pytest.approx(0.52**2 / 28, rel=1e-4)
    assert t["mse"].item() == pytest.approx(0.52**2 / 52, rel=1e-4)
    steps = torch.zeros(1, 3, 52)
    steps[0, 1] = 1.0  # deltas +1, -1 against a flat target
    _, t = compute_losses(_out(steps), torch.zeros(1, 3, 52), None, cfg, True)
    assert t["velocity"].item() == pytest.approx(1.0)


def test_channel_scale_weighs_channels_alike_above_the_floor():
    std = torch.full((52,), 0.2)
    std[0], std[1], std[2] = 0.02, 0.005, 0.1
    assert channel_scale(std, 0.0) is None
    s = channel_scale(std, 0.02)
    assert s.square().mean().item() == pytest.approx(1.0, rel=1e-5)
    assert s[0].item() == pytest.approx(10 * s[5].item(), rel=1e-5)  # 1/std
    assert s[1].item() == pytest.approx(s[0].item(), rel=1e-5)  # below the floor: capped
    assert s[2].item() == pytest.approx(2 * s[5].item(), rel=1e-5)
    cfg = LossConfig()
    target = torch.rand(2, 5, 52) * 0.5
    pred = target.clone()
    pred[..., 0] += 0.1
    _, plain = compute_losses(_out(pred), target, None, cfg, True)
    _, scaled = compute_losses(_out(pred), target, None, cfg, True, scale=s)
    assert scaled["mse"].item() == pytest.approx(plain["mse"].item() * s[0].item() ** 2, rel=1e-4)
    raw = pred + 0.05  # smoothed outputs: the consistency term is scaled too, `raw` stays apart
    _, t = compute_losses(_out(pred, raw), target, None, cfg, True, scale=s)
    expect = ((raw[:, 1:] - pred[:, :-1]) * s).square().mean()
    assert t["consistency"].item() == pytest.approx(expect.item(), rel=1e-4)


def test_losses_mask_and_consistency():
    cfg = LossConfig()
    target = torch.rand(2, 6, 52)
    pred = target + 0.2
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    garbage = pred.clone()
    garbage[1, 4:] = 1.0
    a = compute_losses(_out(pred), target, mask, cfg, True)[1]
    b = compute_losses(_out(garbage), target, mask, cfg, True)[1]
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), abs=1e-7), k
    raw = torch.rand(2, 6, 52, requires_grad=True)
    smoothed = raw * 0.5
    _, t = compute_losses(_out(smoothed, raw), target, mask, cfg, True)
    expect = (raw[:, 1:] - smoothed[:, :-1]).square()
    pair = (mask[:, 1:] & mask[:, :-1]).float()[..., None]
    expected = (expect * pair).sum().item() / (pair.sum().item() * 52)
    assert t["consistency"].item() == pytest.approx(expected, rel=1e-5)


def test_closure_loss_counts_open_lips_at_truth_closures_with_slack():
    jaw, close = blendshapes.INDEX["jawOpen"], blendshapes.INDEX["mouthClose"]
    target, pred = torch.zeros(1, 8, 52), torch.zeros(1, 8, 52)
    target[0, 4, close] = 0.6  # the truth closes at frame 4: aperture -0.6
    pred[0, :, jaw], pred[0, :, close] = 0.3, 0.1  # the prediction stays open: aperture 0.2
    mask = torch.ones(1, 8, dtype=torch.bool)
    cfg = replace(LossConfig(), closure=1.0)
    assert compute_losses(_out(pred), target, mask, cfg, True)[1]["closure"].item() == pytest.approx(0.64 / 8)
    off = replace(LossConfig(), closure=0.0)
    assert "closure" not in compute_losses(_out(pred), target, mask, off, True)[1]
    pred[0, 6, close] = 0.9  # closes two frames late: counted in a dense block, not at sparse positions
    assert compute_losses(_out(pred), target, mask, cfg, True)[1]["closure"].item() == pytest.approx(0.0)
    assert compute_losses(_out(pred), target, mask, cfg, False)[1]["closure"].item() == pytest.approx(0.08)
    mask[0, 6] = False  # a padded frame never counts as a closure
    assert compute_losses(_out(pred), target, mask, cfg, True)[1]["closure"].item() == pytest.approx(0.64 / 7)


def test_build_model_errors():
    with pytest.raises(ValueError):
        small("transformer")
    with pytest.raises(ValueError):
        small(mel_bands=3)
