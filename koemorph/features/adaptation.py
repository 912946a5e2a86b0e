"""Per-file speaker adaptation of PocketSphinx's input: one constrained MLLR transform of the cepstra.

The bundled en-us model is phonetically tied (``ptm``): each of its 42 base phones (fillers, 39 CMU
phones, silence) owns a codebook of 128 diagonal Gaussians in each of three 13-dimensional streams
(cepstra, deltas, delta-deltas; ``means``/``variances``, read by :func:`codebooks`). Given a first
decode's phone per 10 ms frame, :func:`estimate_transform` finds the ``[13, 13]`` matrix ``A`` that
makes ``A c`` most likely under the frame's codebook (each stream a mixture of its 128 Gaussians with
equal weights), by the row-by-row constrained MLLR update with ``A`` shared by the three streams, as
deltas of ``A c`` are ``A`` times the deltas of ``c``. No bias: the decoder's batch CMN removes one.
Decoding ``c @ A.T`` again recognises phones as if the voice were nearer the model's training voices.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from koemorph.features.sphinx_frontend import (
    DITHER_SEED,
    MODEL_PARAMS,
    NUM_CEPS,
    PREEMPHASIS,
    SPHINX_BLOCK,
    check_model,
    dynamic,
)

# the model's base phones in its mdef's order: codebook i belongs to BASE_PHONES[i]
# fmt: off
BASE_PHONES: tuple[str, ...] = (
    "+NSN+", "+SPN+", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F",
    "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "SIL", "T",
    "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)
# fmt: on
DENSITIES, STREAMS = 128, 3
VARIANCE_FLOOR = 1e-4  # PocketSphinx's default -varfloor
EM_ITERATIONS, ROW_SWEEPS = 2, 3
DIGITAL_SILENCE = 2  # int16 units: a file no louder than this is silence (no decode)
FRAME_STEP = 2  # statistics from every other 10 ms frame (half the time, neighbours are alike)
MIN_SPEECH_FRAMES = 100  # 1 s of recognised phones (not silence or a filler)
SPEECH_BOOKS = [i for i, p in enumerate(BASE_PHONES) if p not in ("+NSN+", "+SPN+", "SIL")]
VERSION = 1  # bump when the front end or the estimate changes


def _read_gauden(path: str) -> np.ndarray:
    """An s3 Gaussian parameter file -> ``[42, 3, 128, 13]`` float64; ValueError naming ``path`` otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    start = data.find(b"endhdr\n")
    if start < 0:
        raise ValueError(f"{path}: not an s3 parameter file (no 'endhdr')")
    at = start + 7
    head = np.frombuffer(data, "<u4", 4, at)
    if head[0] != 0x11223344:
        raise ValueError(f"{path}: unexpected byte order mark {int(head[0]):#x}")
    n_cb, n_streams, n_den = (int(v) for v in head[1:])
    veclen = np.frombuffer(data, "<u4", n_streams, at + 16)
    count = int(np.frombuffer(data, "<u4", 1, at + 16 + 4 * n_streams)[0])
    want = (len(BASE_PHONES), STREAMS, DENSITIES)
    shape = (n_cb, n_streams, n_den)
    if shape != want or list(veclen) != [NUM_CEPS] * STREAMS or count != np.prod(want) * NUM_CEPS:
        raise ValueError(f"{path}: Gaussians {shape} x {list(veclen)}, expected {want} x {NUM_CEPS}")
    values = np.frombuffer(data, "<f4", count, at + 20 + 4 * n_streams)
    return values.reshape(*want, NUM_CEPS).astype(np.float64)


@functools.lru_cache(maxsize=1)
def codebooks(model_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(means, inverse variances, log-determinants)`` of ``model_dir``'s codebooks: ``[42, 3, 128, 13]``
    twice and ``[42, 3, 128]`` (variances floored at :data:`VARIANCE_FLOOR`). ValueError when the
    model is not the phonetically tied one with :data:`BASE_PHONES` in this order, or its front end is
    not :mod:`koemorph.features.sphinx_frontend`'s."""
    check_model(model_dir)
    with open(os.path.join(model_dir, "mdef"), "rb") as f:
        if b"\0".join(p.encode() for p in BASE_PHONES) not in f.read():
            raise ValueError(f"{model_dir}/mdef: base phones are not {' '.join(BASE_PHONES)}")
    means = _read_gauden(os.path.join(model_dir, "means"))
    variances = np.maximum(_read_gauden(os.path.join(model_dir, "variances")), VARIANCE_FLOOR)
    return means, 1.0 / variances, np.log(variances).sum(-1)


def posteriors(views: np.ndarray, books: np.ndarray, model) -> np.ndarray:
    """``[3, F, 128]``: each frame's Gaussian posteriors within its codebook, per stream.

    ``views``: ``[3, F, 13]`` (:func:`koemorph.features.sphinx_frontend.dynamic`); ``books``: ``[F]``
    codebook index per frame; ``model``: :func:`codebooks`' triple.
    """
    means, inv_var, log_det = model
    out = np.zeros((STREAMS, views.shape[1], DENSITIES))
    for book in np.unique(books):
        rows = books == book
        for s in range(STREAMS):
            diff = views[s, rows][:, None, :] - means[book, s][None]
            loglik = -0.5 * ((diff**2 * inv_var[book, s][None]).sum(-1) + log_det[book, s][None])
            weights = np.exp(loglik - loglik.max(axis=1, keepdims=True))
            out[s, rows] = weights / weights.sum(axis=1, keepdims=True)
    return out


def _statistics(views: np.ndarray, books: np.ndarray, A: np.ndarray, model):
    """Sufficient statistics of the row update for views ``[3, F, 13]`` under the current ``A``:
    ``G`` ``[13, 13, 13]``, ``k`` ``[13, 13]``, ``beta``; computed :data:`SPHINX_BLOCK` frames at a
    time (a frame's posteriors and gathered Gaussians take some 13 kB)."""
    means, inv_var, _ = model
    G, k, beta = np.zeros((NUM_CEPS,) * 3), np.zeros((NUM_CEPS, NUM_CEPS)), 0.0
    for a in range(0, len(books), SPHINX_BLOCK):
        rows, x = books[a : a + SPHINX_BLOCK], views[:, a : a + SPHINX_BLOCK]
        gamma = posteriors(np.einsum("ij,stj->sti", A, x), rows, model)
        for s in range(STREAMS):
            weight = np.einsum("tm,tmi->ti", gamma[s], inv_var[rows, s])  # sum over m of gamma / sigma^2
            target = np.einsum("tm,tmi->ti", gamma[s], inv_var[rows, s] * means[rows, s])
            G += np.einsum("ti,tj,tk->ijk", weight, x[s], x[s])
            k += np.einsum("ti,tj->ij", target, x[s])
            beta += gamma[s].sum()
    return G, k, beta


def _update_rows(A: np.ndarray, G: np.ndarray, k: np.ndarray, beta: float) -> np.ndarray:
    """One sweep of the constrained MLLR row update (each row maximises the auxiliary function)."""
    A = A.copy()
    for i in range(NUM_CEPS):
        cofactor = np.linalg.det(A) * np.linalg.inv(A).T[i]
        G_inv = np.linalg.inv(G[i])
        a2, a1 = cofactor @ G_inv @ cofactor, cofactor @ G_inv @ k[i]
        root = np.sqrt(a1**2 + 4.0 * a2 * beta)
        alphas = ((-a1 + root) / (2.0 * a2), (-a1 - root) / (2.0 * a2))
        rows = [(alpha * cofactor + k[i]) @ G_inv for alpha in alphas]

        def score(row, i=i):
            trial = A.copy()
            trial[i] = row
            return beta * np.log(abs(np.linalg.det(trial))) - 0.5 * row @ G[i] @ row + row @ k[i]

        A[i] = max(rows, key=score)
    return A


def estimate_transform(ceps: np.ndarray, books: np.ndarray, model) -> np.ndarray:
    """``[13, 13]`` ``A`` for cepstra ``ceps`` (``[F, 13]``, 10 ms frames) given a codebook index per
    frame (``books`` ``[F]``, into :data:`BASE_PHONES`); the identity when the first decode heard
    too little speech to estimate it (fewer than :data:`MIN_SPEECH_FRAMES` frames of phones)."""
    assert ceps.shape == (len(books), NUM_CEPS), (ceps.shape, len(books))
    A = np.eye(NUM_CEPS)
    if np.isin(books, SPEECH_BOOKS).sum() < MIN_SPEECH_FRAMES:
        return A
    views = dynamic(ceps)[:, ::FRAME_STEP]
    books = books[::FRAME_STEP]
    for _ in range(EM_ITERATIONS):
        G, k, beta = _statistics(views, books, A, model)
        for _ in range(ROW_SWEEPS):
            A = _update_rows(A, G, k, beta)
    return A


def codebook_of(segments, n_frames: int) -> np.ndarray:
    """``[n_frames]`` codebook index per 10 ms frame from decoder segments ``(phone, first, last)``
    (inclusive frames); frames in no segment, and labels the model lacks, are silence."""
    silence = BASE_PHONES.index("SIL")
    index = {p: i for i, p in enumerate(BASE_PHONES)}
    books = np.full(max(int(n_frames), 0), silence, dtype=np.int64)
    for phone, first, last in segments:
        books[max(first, 0) : last + 1] = index.get(phone, silence)
    return books


def hash_constants() -> dict:
    """What fixes the adapted decodes besides the decoder (part of the phones' cache hash)."""
    return {
        "version": VERSION,
        "iterations": [EM_ITERATIONS, ROW_SWEEPS],
        "min_speech_frames": MIN_SPEECH_FRAMES,
        "frame_step": FRAME_STEP,
        "digital_silence": DIGITAL_SILENCE,
        "variance_floor": VARIANCE_FLOOR,
        "front_end": {**MODEL_PARAMS, "dither_seed": DITHER_SEED, "preemphasis": PREEMPHASIS},
    }
