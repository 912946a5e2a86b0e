"""Training-time voice augmentation of cached features (the cache itself is never changed).

The demo corpus, like most users' recordings, has few speakers, and the model is scored on voices it
never heard. Each batch row is shown as if spoken by a slightly different voice through a different
microphone, with draws from ``rng`` (see :func:`batch_rng`):

* ``shift_bins``: the log-mel spectrum moves along the mel axis by ``U(-s, s)`` bins (linear
  interpolation, edge bins held): formants higher or lower by about 4 % per bin at 1-4 kHz;
* ``gain_db``: a level change of ``U(-g, g)`` dB on every bin;
* ``tilt_db``: a spectral tilt, ``U(-t, t)`` dB from the lowest to the highest bin (microphone and
  voice quality);
* ``egemaps_noise``: one offset ``N(0, sigma)`` per eGeMAPS feature (normalised units), the same
  for every frame of the batch row: another speaker's pitch, loudness and timbre statistics;
* ``phone_swap``: each recognised speech-phone segment (a run of frames with the same largest
  phone share) is, with this probability, shown as a phone drawn uniformly from the whole set,
  silence included: the recogniser's confusions on a voice it decodes poorly (a p heard as L, N,
  T or silence), so the model learns to check the phones against the mel;
* ``text_phones``: with this probability, a batch row's phone columns are those renamed with the
  file's transcript (source column 1; rows of files without one keep the recognised phones), so
  one model reads both: recognised phones alone, and a transcript's when render has one.

Padding rows (the normalised silence floor outside a file; eGeMAPS rows of 0 before the first
complete openSMILE window) are left as they are, as ``koemorph render`` produces them. Mel is
``[B, T, n_mels]`` normalised ``(dB - mean) / std`` per bin; eGeMAPS ``[B, T', 88]`` normalised.
0 switches a transform off.
"""

from __future__ import annotations

import numpy as np
import torch

from koemorph.config import AugmentConfig
from koemorph.features.phones import NUM_PHONES

_AUGMENT = 5  # RNG stream tag (koemorph.training.sampling uses 1-4)


def enabled(cfg: AugmentConfig) -> bool:
    values = (cfg.shift_bins, cfg.gain_db, cfg.tilt_db, cfg.egemaps_noise, cfg.phone_swap, cfg.text_phones)
    return any(v > 0 for v in values)


def batch_rng(seed: int, epoch: int, batch: int) -> np.random.Generator:
    """The generator for batch ``batch`` of ``epoch``: a pure function of the position in training,
    so augmentation does not depend on DataLoader workers and a resumed run draws the same."""
    return np.random.default_rng([int(seed), int(epoch), int(batch), _AUGMENT])


def shift_matrix(n: int, shift: np.ndarray) -> np.ndarray:
    """``[B, n, n]`` float64 ``M`` with ``x @ M[b]`` = ``x`` read at bin ``f - shift[b]`` (linear
    interpolation, edge bins held), for ``x`` ``[..., n]``."""
    shift = np.asarray(shift, np.float64)
    src = np.clip(np.arange(n)[None, :] - shift[:, None], 0, n - 1)  # [B, n] source bin of each output bin
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = src - lo
    m = np.zeros((len(shift), n, n))
    rows, cols = np.arange(len(shift))[:, None], np.arange(n)[None, :]
    m[rows, lo, cols] = 1.0 - w
    m[rows, hi, cols] += w  # one (hi, col) per column; hi == lo only at the top edge, where w == 0
    return m


def _rows(b: int, rows) -> tuple[int, np.ndarray | slice]:
    """``(rows drawn, which of them this batch holds)``: all ``b``, or ``rows = (indices, n)`` of a
    global batch of ``n`` rows (data parallel)."""
    return (b, slice(None)) if rows is None else (int(rows[1]), np.asarray(rows[0]))


def augment_mel(
    mel,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    mean: np.ndarray,
    std: np.ndarray,
    pad: np.ndarray,
    rows=None,
):
    """Augmented copy of normalised log-mel ``mel`` (torch ``[B, T, F]``); ``mean``/``std``/``pad``
    ``[F]`` (the cache's statistics and normalised silence floor). ``rows`` (optional ``(indices [B],
    n)``): ``mel`` holds rows ``indices`` of a global batch of ``n`` rows, and draws are made for all
    ``n`` then picked, so every data-parallel rank augments its rows as one process would.

    Shift, gain and tilt act on dB values, so on normalised rows they are one affine map per batch
    row, ``x @ A[b] + c[b]``: one batched matmul in torch (numpy's BLAS threads would spin beside
    torch's and slow the training step).
    """
    b, _, f = mel.shape
    n, pick = _rows(b, rows)
    shift = rng.uniform(-cfg.shift_bins, cfg.shift_bins, n)[pick]
    gain = rng.uniform(-cfg.gain_db, cfg.gain_db, n)[pick]
    tilt = rng.uniform(-cfg.tilt_db, cfg.tilt_db, n)[pick]
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    m = shift_matrix(f, shift) if cfg.shift_bins > 0 else np.broadcast_to(np.eye(f), (b, f, f))
    ramp = np.linspace(-0.5, 0.5, f)
    db_offset = np.einsum("f,bfg->bg", mean, m) + gain[:, None] + tilt[:, None] * ramp[None, :]  # [B, F] dB
    a = std[None, :, None] * m / std[None, None, :]  # (x * std + mean) @ M, back to normalised units
    c = (db_offset - mean) / std
    a, c, pad = (torch.as_tensor(np.ascontiguousarray(x), dtype=mel.dtype) for x in (a, c, pad))
    out = torch.baddbmm(c[:, None, :], mel, a)
    padding = (mel == pad).all(-1, keepdim=True)
    return torch.where(padding, mel, out)


def augment_egemaps(ege, rng: np.random.Generator, sigma: float, rows=None):
    """``ege`` (torch ``[B, T', D]``) plus one ``N(0, sigma)`` offset per (batch row, feature) on its
    non-zero rows; ``rows`` as in :func:`augment_mel`."""
    n, pick = _rows(ege.shape[0], rows)
    offset = torch.as_tensor(rng.normal(0.0, sigma, (n, 1, ege.shape[2]))[pick], dtype=ege.dtype)
    valid = ege.abs().amax(-1, keepdim=True) > 0  # [B, T', 1]
    return ege + offset * valid


def swap_phones(phones, rng: np.random.Generator, p: float, rows=None):
    """Copy of phone shares ``phones`` (torch ``[B, T, P]``, column 0 silence) where each speech
    segment (a run of frames with the same largest share, not silence) is, with probability ``p``,
    one-hot on a phone drawn uniformly from the ``P``. ``rows`` as in :func:`augment_mel`: one seed
    per row of the global batch, so a row's draws do not depend on the other rows."""
    b, _, n_phones = phones.shape
    n, pick = _rows(b, rows)
    seeds = rng.integers(0, 2**63, n)[pick]
    codes = phones.argmax(-1).numpy()  # [B, T]
    out = phones.clone()
    for i in range(b):
        segment = np.cumsum(np.r_[True, codes[i, 1:] != codes[i, :-1]]) - 1  # [T] segment of each frame
        n_seg = int(segment[-1]) + 1
        seg_rng = np.random.default_rng(int(seeds[i]))
        swap = seg_rng.random(n_seg) < p
        new = seg_rng.integers(0, n_phones, n_seg)
        frames = np.flatnonzero(swap[segment] & (codes[i] != 0))
        out[i, frames] = 0.0
        out[i, frames, new[segment[frames]]] = 1.0
    return out


def use_text(mel, text, rng: np.random.Generator, p: float, n_mels: int, rows=None):
    """``mel`` (torch ``[B, T, D]`` frame inputs) with each row's phone columns (those after
    ``n_mels``) taken from ``text`` (the same frames with the transcript's phones) with probability
    ``p``; ``rows`` as in :func:`augment_mel`."""
    n, pick = _rows(mel.shape[0], rows)
    chosen = torch.as_tensor(rng.random(n)[pick] < p)
    out = mel.clone()
    out[chosen, :, n_mels:] = text[chosen, :, n_mels:]
    return out


def augment_batch(batch: dict, rng: np.random.Generator, cfg: AugmentConfig, cache, rows=None) -> dict:
    """A collated batch (:func:`koemorph.training.batches.collate`) with ``mel`` (its mel bins, and
    its phone columns with ``phone_swap``) and ``egemaps`` augmented; ``cache``
    (:class:`koemorph.data.cache.FeatureCache`) gives the mel statistics. Others are shared.
    ``rows``: see :func:`augment_mel` (None: the batch is the whole batch)."""
    out = dict(batch)
    mel = batch["mel"][..., : cache.n_mels]  # with phones, the frame input's mel bins
    mel = augment_mel(mel, rng, cfg, cache.mel_mean, cache.mel_std, cache.mel_pad, rows)
    if cache.n_phones:
        phones = batch["mel"][..., cache.n_mels :]
        if cfg.phone_swap > 0:  # the shares only, not the source column after them
            shares = swap_phones(phones[..., :NUM_PHONES], rng, cfg.phone_swap, rows)
            phones = torch.cat([shares, phones[..., NUM_PHONES:]], dim=-1)
        mel = torch.cat([mel, phones], dim=-1)
    out["mel"] = mel
    if batch.get("egemaps") is not None and cfg.egemaps_noise > 0:
        out["egemaps"] = augment_egemaps(batch["egemaps"], rng, cfg.egemaps_noise, rows)
    if batch.get("text") is not None and cfg.text_phones > 0:
        out["mel"] = use_text(out["mel"], batch["text"], rng, cfg.text_phones, cache.n_mels, rows)
    return out
