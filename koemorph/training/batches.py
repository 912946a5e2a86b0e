"""Training blocks sliced from the feature cache (:class:`koemorph.data.cache.FeatureCache`), collated
into batches, and the DataLoader that runs them in a fixed order."""

from __future__ import annotations

import numpy as np

from koemorph.data.cache import FeatureCache


class BlockDataset:
    """Map-style dataset whose indices are :class:`koemorph.training.sampling.Block` objects.

    For a block ``[a, a+S)`` of file ``ids[block.file]`` with contexts ``C`` (mel frames per output
    frame, incl. itself), lookahead ``L`` and eGeMAPS context ``E`` it returns numpy arrays:
    ``mel`` [S+C-1+L, n_mels] = file frames ``[a-(C-1), a+S+L)``; ``egemaps`` [S+E-1, 88] = frames
    ``[a-(E-1), a+S)`` (absent without eGeMAPS); with the cache's ``use_text``, ``text`` like ``mel``
    with the file's transcript-renamed phones (``mel`` itself when it has none); ``targets`` [n, 52]
    at frames ``a + positions``; ``positions`` [n] int64; ``mask`` [n] bool. Workers only slice
    arrays: no sampling happens here.
    """

    def __init__(
        self, cache: FeatureCache, ids: list[str], context: int, lookahead: int, emotion_context: int
    ):
        self.cache, self.ids = cache, list(ids)
        self.C, self.L, self.E = int(context), int(lookahead), int(emotion_context)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, block) -> dict:
        fid, a, s = self.ids[block.file], block.start, block.span
        positions = np.asarray(block.positions, np.int64)
        mask = np.asarray(block.mask, bool)
        targets = self.cache.slice(fid, "targets", a, a + s)[positions]
        item = {
            "mel": self.cache.slice(fid, "mel", a - (self.C - 1), a + s + self.L),
            "targets": targets,
            "positions": positions,
            "mask": mask,
        }
        if self.cache.use_text:  # the same frames with the transcript's phones (else the recognised ones)
            has = self.cache.has_text(fid)
            item["text"] = (
                self.cache.slice(fid, "text", a - (self.C - 1), a + s + self.L) if has else item["mel"]
            )
        if self.cache.use_egemaps:
            item["egemaps"] = self.cache.slice(fid, "egemaps", a - (self.E - 1), a + s)
        return item


def collate(items: list[dict]) -> dict:
    """Stack block items into tensors: ``mel`` [B, S+C-1+L, n_mels], ``egemaps`` [B, S+E-1, 88] or None,
    ``text`` like ``mel`` or None, ``targets`` [B, n, 52], ``positions`` [B, n] long, ``mask`` [B, n] bool.

    ``smooth`` is True when every block's positions are consecutive (dense blocks).
    """
    import torch

    out = {
        k: torch.from_numpy(np.stack([it[k] for it in items]))
        for k in ("mel", "targets", "positions", "mask")
    }
    for key in ("egemaps", "text"):
        out[key] = torch.from_numpy(np.stack([it[key] for it in items])) if key in items[0] else None
    pos = out["positions"]
    out["smooth"] = bool(pos.shape[1] <= 1 or (pos[:, 1:] - pos[:, :-1] == 1).all())
    return out


def make_loader(dataset: BlockDataset, batches: list, num_workers: int = 0, seed: int = 0):
    """A DataLoader over a fixed list of batches (lists of blocks), in that order.

    Its own seeded ``torch.Generator`` keeps the DataLoader from drawing on the global torch RNG
    (which dropout uses), so resuming mid-epoch reproduces the uninterrupted run. Workers ignore
    SIGINT: Ctrl-C is the main process's to handle (:mod:`koemorph.training.interrupt`).
    """
    import torch

    from koemorph.training.interrupt import ignore_sigint

    gen = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate,
        generator=gen,
        worker_init_fn=ignore_sigint,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
