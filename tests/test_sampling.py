"""The window sampler: which frames are targets per mode, blocks, batches, determinism, resume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from koemorph.config import SamplingConfig
from koemorph.data.cache import FeatureCache
from koemorph.training.batches import BlockDataset, make_loader
from koemorph.training.sampling import Sampler, stride_for_epoch
from tests.storekit import build_store

LENGTHS = [3000, 10, 257, 1200, 33]  # frames; two files shorter than a dense/sparse block


def targets(batches) -> Counter:
    """How often each (file, frame) is a real target in an epoch's batches."""
    return Counter((b.file, f) for batch in batches for b in batch for f in b.frames)


def dense_share(batches) -> float:
    dense = sum(len(b.frames) for batch in batches for b in batch if b.dense)
    return dense / max(1, sum(len(b.frames) for batch in batches for b in batch))


def cfg(**kw) -> SamplingConfig:
    return SamplingConfig(**kw)


def test_dense_covers_every_frame_exactly_once_and_pads_short_files():
    s = Sampler(LENGTHS, cfg(mode="dense", dense_block_frames=32, dense_batch_size=4), seed=0, epochs=3)
    for epoch in range(2):
        batches = s.batches(epoch)
        seen = targets(batches)
        assert set(seen.values()) == {1}
        assert set(seen) == {(f, k) for f, n in enumerate(LENGTHS) for k in range(n)}
        for batch in batches:
            assert len(batch) <= 4 and all(
                b.dense and b.span == 32 and b.positions == tuple(range(32)) for b in batch
            )
    short = [b for batch in s.batches(0) for b in batch if b.file == 1]
    assert len(short) == 1 and sum(short[0].mask) == 10 and short[0].start == 0  # padded, not dropped


def test_sparse_stride_phase_and_block_grouping():
    s = Sampler(
        LENGTHS,
        cfg(mode="sparse", sparse_stride=32, sparse_block_frames=256, sparse_batch_size=8),
        seed=1,
        epochs=10,
    )
    phases = {}
    for epoch in range(6):
        batches = s.batches(epoch)
        seen = targets(batches)
        assert set(seen.values()) == {1}
        for f, n in enumerate(LENGTHS):
            frames = sorted(k for (g, k) in seen if g == f)
            if n > 32:
                assert frames and np.all(np.diff(frames) == 32) and 0 <= frames[0] < 32
                assert frames[-1] + 32 >= n  # runs to the end of the file
                phases.setdefault(f, set()).add(frames[0])
        for batch in batches:
            assert all(not b.dense and b.positions == tuple(range(0, 256, 32)) and b.mask[0] for b in batch)
    assert all(len(p) > 1 for p in phases.values())  # the phase changes with the epoch
    # a 10-frame file gets targets in the epochs whose phase falls inside it: every frame, eventually
    s40 = Sampler([10], cfg(mode="sparse", sparse_stride=32), seed=3, epochs=400)
    covered = {k for e in range(400) for (_, k) in targets(s40.batches(e))}
    assert covered == set(range(10))


def test_mixed_is_about_ten_percent_dense_without_duplicates():
    lengths = [9000, 12000, 7000, 15000, 600]
    s = Sampler(lengths, cfg(mode="mixed", dense_fraction=0.1), seed=0, epochs=20)
    shares = []
    for epoch in range(8):
        batches = s.batches(epoch)
        assert set(targets(batches).values()) == {1}  # dense runs and sparse targets never overlap
        shares.append(dense_share(batches))
        kinds = {(all(b.dense for b in batch), len(batch[0].positions)) for batch in batches}
        assert all(len({b.dense for b in batch}) == 1 for batch in batches) and len(kinds) == 2
    assert 0.07 < np.mean(shares) < 0.13, shares
    assert dense_share(Sampler(lengths, cfg(mode="mixed", dense_fraction=0.5), 0, 20).batches(0)) > 0.4


def test_progressive_stride_schedule():
    c = cfg(mode="progressive", progressive_strides=(32, 8, 1))
    assert [stride_for_epoch(c, e, 9) for e in range(9)] == [32] * 3 + [8] * 3 + [1] * 3
    assert [stride_for_epoch(c, e, 4) for e in range(4)] == [32, 32, 8, 1]
    s = Sampler(LENGTHS, c, seed=0, epochs=9)
    b8 = s.batches(4)
    assert all(b.positions == tuple(range(0, 256, 8)) for batch in b8 for b in batch)
    dense = targets(s.batches(8))
    assert len(dense) == sum(LENGTHS) and set(dense.values()) == {1}


def test_epochs_are_finite_seeded_and_differ():
    s = Sampler(LENGTHS, cfg(mode="mixed"), seed=5, epochs=10)
    assert s.batches(2) == Sampler(LENGTHS, cfg(mode="mixed"), seed=5, epochs=10).batches(2)
    assert s.batches(2) != s.batches(3)
    assert s.batches(2) != Sampler(LENGTHS, cfg(mode="mixed"), seed=6, epochs=10).batches(2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(
        tmp_path_factory.mktemp("sampling"), [("train", 7.0), ("train", 0.4), ("train", 3.0), ("val", 2.0)]
    )


def loader_batches(dataset, batches, workers):
    return list(make_loader(dataset, batches, num_workers=workers, seed=0))


def test_blocks_from_the_store_are_sliced_and_padded(store):
    cache = FeatureCache(store)
    ids = cache.ids("train")
    ds = BlockDataset(cache, ids, context=40, lookahead=2, emotion_context=60)
    s = Sampler(
        [cache.num_frames(i) for i in ids], cfg(mode="dense", dense_block_frames=16), seed=0, epochs=1
    )
    short = ids.index("train__spk1_001")  # 0.4 s = 12 frames: shorter than the block and the context
    block = next(b for batch in s.batches(0) for b in batch if b.file == short)
    item = ds[block]
    full = cache.load(ids[short])
    assert item["mel"].shape == (16 + 39 + 2, 80) and item["targets"].shape == (16, 52)
    np.testing.assert_array_equal(
        item["mel"][:39], np.broadcast_to(cache.mel_pad, (39, 80))
    )  # before the file
    np.testing.assert_array_equal(item["mel"][39 : 39 + 12], full["mel"])
    np.testing.assert_array_equal(item["targets"][:12], full["targets"])
    assert item["mask"].sum() == 12 and not item["targets"][12:].any()
    lazy = BlockDataset(FeatureCache(store, in_memory=False), ids, 40, 2, 60)[block]
    for key in item:
        np.testing.assert_array_equal(item[key], lazy[key])


def test_loader_is_identical_with_0_and_2_workers_and_resumes_mid_epoch(store):
    cache = FeatureCache(store)
    ids = cache.ids("train")
    ds = BlockDataset(cache, ids, context=30, lookahead=0, emotion_context=30)
    s = Sampler(
        [cache.num_frames(i) for i in ids],
        cfg(
            mode="mixed",
            sparse_stride=8,
            sparse_block_frames=32,
            dense_block_frames=8,
            dense_fraction=0.3,
            dense_batch_size=3,
            sparse_batch_size=2,
        ),
        seed=0,
        epochs=4,
    )
    plan = s.batches(1)
    assert len(plan) > 6
    zero, two = loader_batches(ds, plan, 0), loader_batches(ds, plan, 2)
    assert len(zero) == len(two) == len(plan)  # the epoch ends
    for a, b in zip(zero, two):
        assert a["smooth"] == b["smooth"]
        for key in ("mel", "targets", "positions", "mask"):
            assert torch.equal(a[key], b[key])
    k = len(plan) // 2
    tail = loader_batches(ds, Sampler([cache.num_frames(i) for i in ids], s.cfg, 0, 4).batches(1)[k:], 0)
    assert len(tail) == len(plan) - k
    for a, b in zip(zero[k:], tail):
        assert torch.equal(a["mel"], b["mel"]) and torch.equal(a["targets"], b["targets"])
    assert {b["smooth"] for b in zero} == {True, False}
