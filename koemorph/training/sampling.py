"""Which frames are training targets in an epoch, grouped into blocks and batches.

A *block* is an output span ``[start, start + span)`` of grid frames of one file plus the
positions inside it that are targets (ascending) and a mask (False = padding: past the end of
the file, or a sparse target that a dense run of the same epoch already covers). The model
encodes a block's context once and decodes all its positions.

Modes (``SamplingConfig.mode``), per epoch:

* ``dense``: every frame of every file is a target exactly once; each file is tiled from frame 0
  into blocks of ``dense_block_frames`` consecutive frames (the last one padded and masked).
* ``sparse``: targets ``phase + stride*k`` with a random phase per (file, epoch); blocks span
  ``sparse_block_frames`` frames and hold the ``ceil(span / stride)`` targets inside.
* ``mixed``: ``dense_fraction`` of the epoch's targets come from dense runs (tiles of a
  randomly offset tiling, chosen at random across all files), the rest are sparse targets
  outside those runs (so nothing is supervised twice in one epoch).
* ``progressive``: the epochs are split into equal shares, one per ``progressive_strides``
  entry; stride 1 is the dense tiling, stride > 1 sparse blocks at that stride.

Batches hold only dense or only sparse blocks (same positions count), ``dense_batch_size`` /
``sparse_batch_size`` each; their order in the epoch is shuffled. Everything is a pure function
of ``(seed, epoch, file lengths, config)`` via ``numpy.random.default_rng([seed, epoch, ...])``:
no global RNG, so batches do not depend on DataLoader workers, and the position in an epoch is
just ``(epoch, batch index)``. An epoch is a finite list of batches (it ends).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from koemorph.config import SamplingConfig

_DENSE, _SPARSE, _MIXED, _ORDER = 1, 2, 3, 4  # RNG stream tags


@dataclass(frozen=True)
class Block:
    """Targets of one file inside the span ``[start, start + span)`` (frames; start may be < 0).

    ``positions`` are offsets from ``start`` (ascending, all < span), ``mask[i]`` says whether
    position ``i`` is a real target. ``dense`` blocks have positions ``0..span-1``.
    """

    file: int  # index into the sampler's file list
    start: int
    span: int
    positions: tuple[int, ...]
    mask: tuple[bool, ...]
    dense: bool

    @property
    def frames(self) -> list[int]:
        """File frames of the real (unmasked) targets."""
        return [self.start + p for p, m in zip(self.positions, self.mask) if m]


def stride_for_epoch(cfg: SamplingConfig, epoch: int, epochs: int) -> int:
    """The sparse stride of ``epoch`` (1 = dense tiling); progressive: equal shares of ``epochs``."""
    if cfg.mode == "dense":
        return 1
    if cfg.mode == "progressive":
        strides = list(cfg.progressive_strides) or [cfg.sparse_stride]
        stage = min(len(strides) - 1, epoch * len(strides) // max(1, epochs))
        return int(strides[stage])
    return int(cfg.sparse_stride)


def dense_blocks(file: int, n: int, size: int, offset: int = 0) -> list[Block]:
    """Tile frames ``[0, n)`` into blocks of ``size`` starting at ``offset - size`` (if offset > 0) or 0."""
    first = offset - size if offset > 0 else 0
    blocks = []
    for start in range(first, max(n, 1), size):
        mask = tuple(0 <= start + p < n for p in range(size))
        if any(mask):
            blocks.append(Block(file, start, size, tuple(range(size)), mask, True))
    return blocks


def sparse_blocks(file: int, n: int, stride: int, span: int, phase: int, covered=None) -> list[Block]:
    """Targets ``phase + stride*k`` of a file of ``n`` frames, grouped into blocks spanning ``span``.

    Every block starts on a target and has ``ceil(span / stride)`` positions ``0, stride, ...``;
    targets at or past ``n``, or in ``covered`` (a bool [n] array), are masked; empty blocks are dropped.
    """
    per = max(1, math.ceil(span / stride))
    positions = tuple(stride * k for k in range(per))
    blocks = []
    for start in range(phase, n, stride * per):
        mask = tuple(start + p < n and (covered is None or not covered[start + p]) for p in positions)
        if any(mask):
            blocks.append(Block(file, start, span, positions, mask, False))
    return blocks


class Sampler:
    """The epoch plans for files of lengths ``lengths`` (frames). ``epochs`` drives progressive mode."""

    def __init__(self, lengths: list[int], cfg: SamplingConfig, seed: int, epochs: int):
        if cfg.mode not in ("dense", "sparse", "mixed", "progressive"):
            raise ValueError(
                f"sampling.mode: unknown mode {cfg.mode!r} (dense | sparse | mixed | progressive)"
            )
        self.lengths = [int(n) for n in lengths]
        self.cfg, self.seed, self.epochs = cfg, int(seed), int(epochs)

    def _rng(self, epoch: int, *tags: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, *tags])

    def blocks(self, epoch: int) -> tuple[list[Block], list[Block]]:
        """The epoch's ``(dense_blocks, sparse_blocks)``, in file order."""
        cfg, stride = self.cfg, stride_for_epoch(self.cfg, epoch, self.epochs)
        size = cfg.dense_block_frames
        if stride == 1:
            return [b for f, n in enumerate(self.lengths) for b in dense_blocks(f, n, size)], []
        phases = [int(self._rng(epoch, _SPARSE, f).integers(stride)) for f in range(len(self.lengths))]
        dense: list[Block] = []
        covered = [None] * len(self.lengths)
        if cfg.mode == "mixed" and cfg.dense_fraction > 0:
            dense, covered = self._dense_runs(epoch, stride, phases)
        sparse = [
            b
            for f, n in enumerate(self.lengths)
            for b in sparse_blocks(f, n, stride, cfg.sparse_block_frames, phases[f], covered[f])
        ]
        return dense, sparse

    def _dense_runs(self, epoch: int, stride: int, phases: list[int]):
        """Mixed mode: dense tiles picked at random so they hold ``dense_fraction`` of the targets."""
        cfg, size = self.cfg, self.cfg.dense_block_frames
        tiles = []
        for f, n in enumerate(self.lengths):
            offset = int(self._rng(epoch, _DENSE, f).integers(size))
            tiles += dense_blocks(f, n, size, offset)
        n_sparse = sum(len(range(p, n, stride)) for p, n in zip(phases, self.lengths))
        frac = min(cfg.dense_fraction, 0.999)
        # dense targets d and remaining sparse targets s - d/stride satisfy d = frac * (d + s - d/stride)
        want = frac * n_sparse / max(1e-9, 1 - frac + frac / stride)
        rng = self._rng(epoch, _MIXED)
        count = want / size
        count = min(len(tiles), int(count) + int(rng.random() < count - int(count)))
        chosen = sorted(rng.choice(len(tiles), size=count, replace=False).tolist()) if count else []
        covered = [np.zeros(n, bool) for n in self.lengths]
        dense = [tiles[i] for i in chosen]
        for b in dense:
            lo, hi = max(0, b.start), min(self.lengths[b.file], b.start + b.span)
            covered[b.file][lo:hi] = True
        return dense, covered

    def batches(self, epoch: int) -> list[list[Block]]:
        """The epoch's batches, in training order (a seeded shuffle); the last of each kind may be short."""
        dense, sparse = self.blocks(epoch)
        rng = self._rng(epoch, _ORDER)
        out: list[list[Block]] = []
        for blocks, size in ((dense, self.cfg.dense_batch_size), (sparse, self.cfg.sparse_batch_size)):
            order = rng.permutation(len(blocks))
            out += [[blocks[i] for i in order[k : k + size]] for k in range(0, len(blocks), max(1, size))]
        return [out[i] for i in rng.permutation(len(out))]

    def steps(self, epoch: int) -> int:
        """Number of batches in ``epoch``."""
        return len(self.batches(epoch))
