"""Voice augmentation of training batches: what each transform does, padding left alone, seeding."""

import numpy as np
import pytest
import torch

from koemorph.config import AugmentConfig
from koemorph.training.augment import (
    augment_batch,
    augment_egemaps,
    augment_mel,
    batch_rng,
    enabled,
    shift_matrix,
    swap_phones,
)

F = 80
MEAN = np.linspace(-60, -20, F).astype(np.float32)
STD = np.linspace(8, 15, F).astype(np.float32)
PAD = ((-100.0 - MEAN) / STD).astype(np.float32)


def _mel(b=4, t=50, pad_rows=10, seed=0):
    x = np.random.default_rng(seed).normal(size=(b, t, F)).astype(np.float32)
    x[:, :pad_rows] = PAD
    return x


def _augment_mel(mel, rng, cfg):
    return augment_mel(torch.from_numpy(mel), rng, cfg, MEAN, STD, PAD).numpy()


def test_integer_shift_moves_the_spectrum_by_whole_bins_and_holds_the_edges():
    x = np.random.default_rng(1).normal(size=(2, 3, F)).astype(np.float32)
    out = np.matmul(x, shift_matrix(F, np.array([1.0, -2.0])))
    np.testing.assert_allclose(out[0, :, 1:], x[0, :, :-1], rtol=1e-6)
    np.testing.assert_allclose(out[0, :, 0], x[0, :, 0], rtol=1e-6)
    np.testing.assert_allclose(out[1, :, :-2], x[1, :, 2:], rtol=1e-6)
    np.testing.assert_allclose(out[1, :, -1], x[1, :, -1], rtol=1e-6)
    half = np.matmul(x, shift_matrix(F, np.array([0.5, 0.0])))
    np.testing.assert_allclose(half[0, :, 1:], 0.5 * (x[0, :, 1:] + x[0, :, :-1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(half[1], x[1], rtol=1e-6)


def test_gain_alone_adds_the_same_db_to_every_bin_of_a_row_and_keeps_padding():
    mel = _mel()
    cfg = AugmentConfig(shift_bins=0, gain_db=6.0, tilt_db=0, egemaps_noise=0)
    out = _augment_mel(mel, batch_rng(0, 0, 0), cfg)
    db_change = (out - mel) * STD  # [B, T, F] dB
    speech = db_change[:, 10:]
    assert np.ptp(speech, axis=(1, 2)).max() < 1e-3  # one gain per row
    gains = speech[:, 0, 0]
    assert np.all(np.abs(gains) <= 6.0) and np.ptp(gains) > 0.1  # drawn per row, within bounds
    np.testing.assert_array_equal(out[:, :10], mel[:, :10])  # the silence floor outside a file


def test_tilt_is_linear_across_bins():
    mel = _mel()
    tilt_only = _augment_mel(mel, batch_rng(0, 0, 1), AugmentConfig(0, 0, 6.0, 0))
    db_change = (tilt_only - mel)[:, 15] * STD  # [B, F]
    slope = np.diff(db_change, axis=-1)
    assert np.ptp(slope, axis=-1).max() < 1e-3
    assert np.all(np.abs(db_change[:, -1] - db_change[:, 0]) <= 6.0 + 1e-3)


def test_egemaps_offset_is_fixed_per_row_and_feature_and_skips_zero_rows():
    ege = np.random.default_rng(2).normal(size=(3, 40, 88)).astype(np.float32)
    ege[:, :15] = 0.0
    out = augment_egemaps(torch.from_numpy(ege), batch_rng(0, 0, 0), 0.2).numpy()
    np.testing.assert_array_equal(out[:, :15], 0.0)
    offset = out[:, 15:] - ege[:, 15:]
    assert np.abs(offset - offset[:, :1]).max() < 1e-5
    assert 0.1 < offset[:, 0].std() < 0.3


def test_batches_are_seeded_by_position_not_by_call_order():
    class Cache:
        mel_mean, mel_std, mel_pad, n_mels, n_phones = MEAN, STD, PAD, F, 0

    batch = {
        "mel": torch.from_numpy(_mel()),
        "egemaps": torch.zeros(4, 30, 88),
        "targets": torch.zeros(4, 2, 52),
    }
    cfg = AugmentConfig()
    assert enabled(cfg) and not enabled(AugmentConfig(0, 0, 0, 0, phone_swap=0.0, text_phones=0.0))
    a = augment_batch(batch, batch_rng(3, 1, 7), cfg, Cache)
    augment_batch(batch, batch_rng(3, 1, 8), cfg, Cache)  # another batch in between changes nothing
    b = augment_batch(batch, batch_rng(3, 1, 7), cfg, Cache)
    c = augment_batch(batch, batch_rng(3, 2, 7), cfg, Cache)
    assert torch.equal(a["mel"], b["mel"]) and not torch.equal(a["mel"], c["mel"])
    assert a["targets"] is batch["targets"]
    assert not torch.equal(a["mel"], batch["mel"])


def test_phone_columns_of_the_frame_input_are_not_augmented():
    class Cache:
        mel_mean, mel_std, mel_pad, n_mels, n_phones = MEAN, STD, PAD, F, 40

    mel = torch.from_numpy(_mel())
    phones = torch.zeros(*mel.shape[:2], 40)
    phones[..., 3] = 1.0
    batch = {"mel": torch.cat([mel, phones], -1), "egemaps": None}
    out = augment_batch(batch, batch_rng(0, 0, 0), AugmentConfig(), Cache)["mel"]
    alone = augment_batch({"mel": mel, "egemaps": None}, batch_rng(0, 0, 0), AugmentConfig(), Cache)["mel"]
    assert out.shape == batch["mel"].shape and torch.equal(out[..., F:], phones)
    assert torch.equal(out[..., :F], alone) and not torch.equal(alone, mel)


@pytest.mark.parametrize("field", ["shift_bins", "gain_db", "tilt_db"])
def test_each_mel_transform_changes_speech_rows(field):
    cfg = AugmentConfig(**{"shift_bins": 0, "gain_db": 0, "tilt_db": 0, "egemaps_noise": 0, field: 3.0})
    mel = _mel()
    out = _augment_mel(mel, batch_rng(0, 0, 0), cfg)
    assert np.abs(out[:, 10:] - mel[:, 10:]).mean() > 0.01


def _phone_rows(b=64, t=60, seed=0):
    """One-hot phone rows ``[b, t, 40]`` in segments of 2-6 frames, a third of them silence; and the codes."""
    rng = np.random.default_rng(seed)
    codes = np.concatenate(
        [np.repeat(rng.choice([0, 0, *range(1, 40)], 30), rng.integers(2, 7, 30))[None, :t] for _ in range(b)]
    )
    return torch.nn.functional.one_hot(torch.as_tensor(codes), 40).float(), codes


def test_phone_swap_replaces_whole_speech_segments_at_its_rate():
    phones, codes = _phone_rows()
    swapped = 0
    speech = 0
    out = swap_phones(phones, np.random.default_rng(1), 0.3)
    new = out.argmax(-1).numpy()
    assert torch.equal(out.sum(-1), torch.ones(out.shape[:2])) and out.max() == 1.0
    for i in range(len(codes)):
        starts = np.flatnonzero(np.r_[True, codes[i, 1:] != codes[i, :-1]])
        for a, e in zip(starts, np.r_[starts[1:], codes.shape[1]]):
            assert len(set(new[i, a:e])) == 1, "a segment is swapped whole or not at all"
            if codes[i, a] == 0:
                assert (new[i, a:e] == 0).all(), "silence is never swapped"
                continue
            speech += 1
            swapped += new[i, a] != codes[i, a]
    assert 0.2 < swapped / speech < 0.35  # 0.3, less the draws of the same phone (1 in 40)
    assert torch.equal(swap_phones(phones, np.random.default_rng(1), 0.0), phones)


def test_phone_swap_draws_per_row_of_the_global_batch():
    phones, _ = _phone_rows(b=6)
    whole = swap_phones(phones, np.random.default_rng(2), 0.5)
    part = swap_phones(phones[[1, 4]], np.random.default_rng(2), 0.5, rows=(np.array([1, 4]), 6))
    assert torch.equal(whole[[1, 4]], part) and not torch.equal(whole, phones)
