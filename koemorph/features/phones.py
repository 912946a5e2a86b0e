"""Recognised phones on the koemorph grid: a speaker-independent phonetic feature.

PocketSphinx (the optional ``pocketsphinx`` package, extra ``phones``) decodes the audio with its
bundled CMU en-us acoustic model in *allphone* mode: phone recognition with the bundled phone
bigram model (``en-us-phone.lm.bin``), no transcript, no word dictionary. Nothing is downloaded.

Time bases. PocketSphinx analyses 10 ms frames (100 per second): its frame ``f`` is the 410-sample
(25.625 ms) window starting at sample ``160 f``, i.e. centred on sample ``160 f + 205``. Each
PocketSphinx frame belongs to the grid frame nearest its centre, ``round((160 f + 205) * fps / 16000)``
(grid frame ``k`` is at ``k / fps`` s); a grid frame that owns none (the first at 60 fps, any past the
last decoded frame) borrows the PocketSphinx frame nearest to its centre sample.

Encoding. Row ``k`` of the ``[T, P]`` float32 output gives the share of grid frame ``k``'s
PocketSphinx frames recognised as each of :data:`PHONES` (P = 40: silence first, then the 39 CMU
phones in alphabetical order): one-hot inside a phone, split across a phone boundary, so that a
30 ms phone between two grid times still shows. Fillers: ``+NSN+`` (noise) is silence; ``+SPN+``
(speech the decoder cannot name) is spread evenly over the 39 speech phones. Every row sums to 1.
Audio with no decoded segment (too short) is silence.

Three decodings (``features.phones_decoding``):

* ``"whole"`` (:func:`phone_features`) decodes a whole file in one utterance with *batch* cepstral
  mean normalisation (the mean of the whole file): a pure function of the samples, the frame rate
  and the warps. With several ``features.phones_warps`` the file is decoded once per warp of the
  front end's frequency axis (inverse-linear, ``f / warp``, as in vocal tract length normalisation;
  1.0 leaves it alone) and each row is the mean of the decodes' rows, so that phones the decodes
  disagree on show as shares.
* ``"adapted"``: as ``"whole"`` (unwarped), decoded twice: the first decode's phones fit a per-file
  linear transform of the cepstra to the acoustic model (:mod:`koemorph.features.adaptation`, on
  cepstra from :mod:`koemorph.features.sphinx_frontend`), and the transformed cepstra are decoded
  again, so that a voice unlike the model's training voices is heard more like one of them.
* ``"live"``: :class:`koemorph.features.phone_stream.PhoneStream` takes 16 kHz chunks as they
  arrive with *live* CMN (a running mean) and returns rows for the grid frames whose phone is
  decided: frames before the start of the last segments of the current partial hypothesis. A
  returned row is never revised, and the rows do not depend on the chunk sizes (the decoder takes
  the audio 10 ms at a time and decides after each hop), so a file's ``"live"`` rows are exactly
  what a stream of it gives. The streamer decodes live and unwarped for both kinds of model.
"""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

from koemorph import grid
from koemorph.config import FeaturesConfig

SILENCE = "SIL"
# The CMU phone set of the en-us acoustic model, silence first: the column order of every output.
# fmt: off
PHONES: tuple[str, ...] = (
    SILENCE,
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY",
    "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY",
    "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)
# fmt: on
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}
NUM_PHONES = len(PHONES)  # P, the width of every output
NOISE_FILLER, SPEECH_FILLER = "+NSN+", "+SPN+"

SPHINX_RATE = 100  # PocketSphinx frames per second
SPHINX_HOP = grid.SAMPLE_RATE // SPHINX_RATE  # 160 samples
SPHINX_HALF_WINDOW = 205  # half of the 410-sample analysis window (0.025625 s at 16 kHz)

# Allphone decoding settings: phone insertion penalty, state and phone beams as in PocketSphinx's own
# phone recognition example; a lower language weight than its 2.0 (the phone bigram counts for less
# against the acoustics); half-bit dither from a fixed seed (without it, digital silence normalises
# to a constant cepstrum that decodes as a long "S"). They fix the output, so they enter the cache hash.
DECODER_SETTINGS = {"lw": 0.5, "pip": 0.3, "beam": 1e-200, "pbeam": 1e-20, "dither": True, "seed": 1}
# adapted decoding's first decode, which only has to say which phone's Gaussians a frame is near:
# acoustic scores on every other frame (about half the decoding time)
FIRST_PASS_SETTINGS = {**DECODER_SETTINGS, "ds": 2}
FRESH_FIRST_PASS_FRAMES = 12_000  # 2 minutes: longer files' first decode runs on a decoder freed after it
ENCODING_VERSION = 1  # bump when the frame mapping or the row encoding changes


def available() -> bool:
    """Whether the optional ``pocketsphinx`` package is importable."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def hash_constants(decoding: str = "whole") -> dict:
    """What fixes :func:`phone_features`' output besides the grid and the config (the feature-cache
    hash adds fps, sample rate, decoding and warps): the phone set, the decoder settings, the
    PocketSphinx version, the encoding, and for ``"adapted"`` decoding the adaptation's settings."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        engine = version("pocketsphinx")
    except PackageNotFoundError:  # rendering such a model says to install the extra
        engine = None
    constants = {
        "phones": list(PHONES),
        "decoder": dict(DECODER_SETTINGS),
        "pocketsphinx": engine,
        "encoding": ENCODING_VERSION,
    }
    if decoding == "adapted":
        from koemorph.features.adaptation import hash_constants as adaptation_constants

        constants["adaptation"] = {**adaptation_constants(), "first_pass": dict(FIRST_PASS_SETTINGS)}
    return constants


def silence_row() -> np.ndarray:
    """``[P]`` float32: the row of a frame outside the audio (all silence), the pad of phone windows."""
    row = np.zeros(len(PHONES), dtype=np.float32)
    row[PHONE_INDEX[SILENCE]] = 1.0
    return row


def input_columns(cfg: FeaturesConfig) -> int:
    """Phone columns of the model's frame input: 0 without ``cfg.phones``, else the P phone shares,
    then with ``cfg.phones_text`` one *source* column (1 where the phones are a transcript's)."""
    return (NUM_PHONES + bool(cfg.phones_text)) if cfg.phones else 0


def frame_columns(phones: np.ndarray, cfg: FeaturesConfig, from_text: bool = False) -> np.ndarray:
    """``[T, P]`` phone shares -> the frame input's phone columns ``[T, input_columns(cfg)]`` float32:
    with ``cfg.phones_text``, the source column (``from_text``) is appended."""
    phones = np.asarray(phones, np.float32)
    assert phones.ndim == 2 and phones.shape[1] == NUM_PHONES, phones.shape
    if not cfg.phones_text:
        return phones
    source = np.full((len(phones), 1), float(from_text), np.float32)
    return np.concatenate([phones, source], axis=1)


def pocketsphinx_model(needed_by: str):
    """``(the pocketsphinx module, its bundled en-us model folder)``. Raises ImportError naming
    the ``phones`` extra, and ``needed_by`` (what needs it), when ``pocketsphinx`` is not installed."""
    try:
        import pocketsphinx
    except ImportError as exc:
        raise ImportError(
            f"{needed_by} need the optional 'pocketsphinx' package: pip install 'koemorph[phones]'"
        ) from exc
    return pocketsphinx, os.path.join(pocketsphinx.get_model_path(), "en-us")


def new_decoder(warp: float = 1.0, settings: dict | None = None):
    """A PocketSphinx allphone decoder on the bundled en-us model; ``warp``: the front end's
    vocal-tract-length warp (inverse-linear: frequency ``f`` is read as ``f / warp``; 1.0: none);
    ``settings``: search settings in place of :data:`DECODER_SETTINGS`.
    ImportError when ``pocketsphinx`` is not installed (:func:`pocketsphinx_model`).

    Cepstral mean normalisation follows how the audio is fed: a whole utterance in one
    ``process_raw(..., full_utt=True)`` is normalised by its own mean (batch), audio fed in blocks by
    a running mean (live). The model's ``feat.params`` fixes ``-cmn batch``, noise removal and the
    filterbank whatever a caller passes for them (a warp does apply), so there is no CMN to choose.
    """
    pocketsphinx, model = pocketsphinx_model("phone features")
    warping = {} if warp == 1.0 else {"warp_type": "inverse_linear", "warp_params": repr(float(warp))}
    return pocketsphinx.Decoder(
        hmm=os.path.join(model, "en-us"),
        allphone=os.path.join(model, "en-us-phone.lm.bin"),
        logfn=os.devnull,
        **(DECODER_SETTINGS if settings is None else settings),
        **warping,
    )


# per thread: a batch decoder per warp (loading the model takes about 0.5 s) and the last file's result
_local = threading.local()


def _batch_decoder(warp: float, first_pass: bool = False):
    decoders = _local.__dict__.setdefault("decoders", {})
    key = (warp, first_pass)
    if key not in decoders:
        decoders[key] = new_decoder(warp, FIRST_PASS_SETTINGS if first_pass else None)
    return decoders[key]


def to_pcm16(samples: np.ndarray) -> bytes:
    """``[N]`` float in [-1, 1] -> little-endian int16 PCM bytes (clipped, rounded)."""
    x = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return np.rint(x * 32767.0).astype("<i2").tobytes()


def decode_segments(
    samples: np.ndarray, warp: float = 1.0, decoding: str = "whole"
) -> tuple[list[tuple[str, int, int]], int]:
    """Recognise the phones of a whole file: ``([(phone, first, last), ...], n_frames)``.

    ``samples``: ``[N]`` float32 mono at 16 kHz; ``warp``: the front end's frequency warp;
    ``decoding``: ``"whole"`` (PocketSphinx's front end) or ``"adapted"`` (:func:`adapted_segments`,
    unwarped only). ``first``/``last`` are inclusive PocketSphinx frame indices (10 ms); ``n_frames``
    is the number of frames decoded. Batch CMN: the result depends on this file only: the front end
    is reset before each file, since its noise estimate would otherwise carry over from the previous
    one and change the result. The thread keeps its last file's result per warp and decoding:
    extract asks for a file's segments for its phones, then again to rename them with its
    transcript's words.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return [], 0
    pcm = to_pcm16(x)
    key, slot = hashlib.sha1(pcm).digest(), (decoding, warp)
    last = _local.__dict__.setdefault("last", {})
    if last.get(slot, (None,))[0] != key:
        dec = _batch_decoder(warp)
        if decoding == "adapted":
            assert warp == 1.0, "adapted decoding is unwarped"
            segments, n_frames = adapted_segments(dec, np.frombuffer(pcm, dtype="<i2"))
        else:
            dec.reinit_feat()  # the front end's noise estimate would otherwise carry over from the last file
            dec.start_utt()
            dec.process_raw(pcm, False, True)
            dec.end_utt()
            segments, n_frames = best_segments(dec), int(dec.n_frames())
        last[slot] = (key, segments, n_frames)
    _, segments, n_frames = last[slot]
    return list(segments), n_frames


def adapted_segments(dec, pcm: np.ndarray) -> tuple[list[tuple[str, int, int]], int]:
    """Decode ``pcm`` (``[N]`` int16 at 16 kHz) twice: ``(segments, n_frames)`` as :func:`decode_segments`.

    The second decode, the result, reads :func:`adapted_cepstra`; no segment when they are None
    (digital silence).
    """
    ceps, n_frames = adapted_cepstra(pcm)
    return ([] if ceps is None else _decode_cepstra(dec, ceps)), n_frames


def adapted_cepstra(pcm: np.ndarray) -> tuple[np.ndarray | None, int]:
    """``(cepstra [F, 13] float32 or None, F)``: ``pcm``'s (``[N]`` int16 at 16 kHz) cepstra fitted to
    its voice, one row per 10 ms PocketSphinx frame.

    The cepstra come from :mod:`koemorph.features.sphinx_frontend` (PocketSphinx's front end without
    its noise removal); a first decode (:data:`FIRST_PASS_SETTINGS`) gives the frames' codebooks
    for a per-file constrained MLLR transform
    (:func:`koemorph.features.adaptation.estimate_transform`), which they are returned transformed
    by (the identity when the first decode heard under a second of phones). None when no sample
    exceeds ``adaptation.DIGITAL_SILENCE``. The thread keeps its last file's result: the phone
    decode and the word search (:mod:`koemorph.features.words`) read the same cepstra.
    """
    from koemorph.features import adaptation, sphinx_frontend

    key = hashlib.sha1(np.ascontiguousarray(pcm)).digest()  # hashes the buffer, no copy
    cached = _local.__dict__.get("adapted")
    if cached is not None and cached[0] == key:
        return cached[1]
    _, model = pocketsphinx_model("phone features")
    ceps = sphinx_frontend.cepstra(pcm)
    if len(pcm) == 0 or np.abs(pcm.astype(np.int32)).max() <= adaptation.DIGITAL_SILENCE:
        result = None, len(ceps)  # without noise removal, a dithered silent file decodes as a fricative
    else:
        # a decoder keeps its last utterance's search memory, which grows with the utterance: a long
        # file's first decode gets a decoder of its own, freed before the second decode
        long = len(ceps) > FRESH_FIRST_PASS_FRAMES
        first_pass = new_decoder(1.0, FIRST_PASS_SETTINGS) if long else _batch_decoder(1.0, first_pass=True)
        first = _decode_cepstra(first_pass, ceps)
        del first_pass
        books = adaptation.codebook_of(first, len(ceps))
        A = adaptation.estimate_transform(ceps, books, adaptation.codebooks(os.path.join(model, "en-us")))
        result = (ceps @ A.T).astype(np.float32), len(ceps)
    _local.adapted = (key, result)
    return result


def _decode_cepstra(dec, ceps: np.ndarray) -> list[tuple[str, int, int]]:
    """Segments of one utterance of ``[F, 13]`` float32 cepstra (batch CMN); none when ``F`` is 0."""
    if len(ceps) == 0:
        return []
    dec.start_utt()
    dec.process_cep(np.ascontiguousarray(ceps, dtype=np.float32).tobytes(), False, True)
    dec.end_utt()
    return best_segments(dec)


def best_segments(dec) -> list[tuple[str, int, int]]:
    """The decoder's current best segmentation (empty when it has none)."""
    return [(s.word, int(s.start_frame), int(s.end_frame)) for s in dec.seg() or ()]


def label_code(phone: str) -> int:
    """Decoder label -> row of :data:`ROW_TABLE`: a :data:`PHONES` index, or ``len(PHONES)`` for ``+SPN+``.

    Silence, the noise filler and anything unknown are silence (0).
    """
    if phone == SPEECH_FILLER:
        return len(PHONES)
    return PHONE_INDEX.get(phone, 0)


def _row_table() -> np.ndarray:
    table = np.zeros((len(PHONES) + 1, len(PHONES)), dtype=np.float32)
    table[np.arange(len(PHONES)), np.arange(len(PHONES))] = 1.0
    table[len(PHONES), 1:] = 1.0 / (len(PHONES) - 1)  # +SPN+: some speech phone, unknown which
    table.setflags(write=False)
    return table


ROW_TABLE = _row_table()  # [P + 1, P]: the row of each label code


def frame_labels(segments, n_frames: int) -> np.ndarray:
    """Label code (:func:`label_code`) per PocketSphinx frame: ``[n_frames]`` int64 (silence: no segment)."""
    codes = np.zeros(max(int(n_frames), 0), dtype=np.int64)
    for phone, first, last in segments:
        codes[max(first, 0) : last + 1] = label_code(phone)
    return codes


def grid_to_sphinx(k0: int, k1: int, fps: int) -> np.ndarray:
    """PocketSphinx frame whose centre is nearest to grid frames ``k0..k1-1``: ``[k1 - k0]`` int64
    (may be out of range)."""
    centers = grid.frame_centers(k1, fps)[k0:]
    return np.floor((centers - SPHINX_HALF_WINDOW) / SPHINX_HOP + 0.5).astype(np.int64)


def sphinx_owner(first: int, last: int, fps: int) -> np.ndarray:
    """Grid frame nearest to the centre of PocketSphinx frames ``first..last-1``: ``[last - first]`` int64,
    ``round((160 f + 205) * fps / 16000)``."""
    centre = SPHINX_HOP * np.arange(first, last, dtype=np.int64) + SPHINX_HALF_WINDOW
    return (2 * centre * fps + grid.SAMPLE_RATE) // (2 * grid.SAMPLE_RATE)


def encode(codes: np.ndarray, k0: int, k1: int, fps: int, first: int = 0) -> np.ndarray:
    """Rows ``[k1 - k0, P]`` float32 of grid frames ``k0..k1-1`` from per-PocketSphinx-frame label codes
    (``codes[i]`` is PocketSphinx frame ``first + i`` of the stream).

    Each PocketSphinx frame belongs to the grid frame nearest its centre (:func:`sphinx_owner`); a
    grid row is the mean of its frames' rows (:data:`ROW_TABLE`), i.e. the share of its time given
    to each phone, so a 30 ms phone between two grid times is not lost. A grid frame that owns no
    PocketSphinx frame (the first at 60 fps, any past the last decoded frame) takes the nearest
    one's row; every row is silence when ``codes`` is empty. Rows sum to 1.
    """
    n = k1 - k0
    if n <= 0:
        return np.zeros((0, len(PHONES)), dtype=np.float32)
    if len(codes) == 0:
        out = np.zeros((n, len(PHONES)), dtype=np.float32)
        out[:, 0] = 1.0
        return out
    nearest = np.clip(grid_to_sphinx(k0, k1, fps) - first, 0, len(codes) - 1)
    lo, hi = max(int(nearest[0]) - 4, 0), min(int(nearest[-1]) + 5, len(codes))
    owner = sphinx_owner(first + lo, first + hi, fps) - k0
    mine = (owner >= 0) & (owner < n)
    sums = np.zeros((n, len(PHONES)), dtype=np.float64)
    np.add.at(sums, owner[mine], ROW_TABLE[codes[lo:hi][mine]])
    counts = np.bincount(owner[mine], minlength=n)
    out = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], ROW_TABLE[codes[nearest]])
    return out.astype(np.float32)


def phone_features(samples: np.ndarray, cfg: FeaturesConfig) -> np.ndarray:
    """Recognised phones on the grid: ``[T, P]`` float32, ``T = grid.num_frames_for_samples(N, fps)``.

    ``samples``: ``[N]`` float32 mono at 16 kHz in [-1, 1]. Row ``k`` is the share of the time around
    ``k / cfg.fps`` s given to each of :data:`PHONES` (:func:`encode`; mostly one-hot, ``+SPN+``
    spread evenly over the speech phones); every row sums to 1. ``cfg.phones_decoding``: ``"whole"``,
    whole-file allphone decoding with batch CMN; ``"adapted"``, the same after a per-file adaptation
    (:func:`adapted_segments`); ``"live"``, the rows ``PhoneStream`` returns
    for the file (from the model's prior mean), which any chunking of a stream reproduces exactly.
    Reads ``cfg.fps``, ``cfg.phones_decoding`` and ``cfg.phones_warps``. An empty input gives
    ``[0, P]``; audio too short to decode gives silence rows.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if cfg.phones_decoding == "live":
        from koemorph.features.phone_stream import PhoneStream

        stream = PhoneStream(cfg.fps)
        return np.concatenate([stream.push(x), stream.finish()])
    n = grid.num_frames_for_samples(x.size, cfg.fps)
    return mean_over_warps(lambda warp: frame_labels(*decode_segments(x, warp, cfg.phones_decoding)), n, cfg)


def mean_over_warps(labels, n: int, cfg: FeaturesConfig) -> np.ndarray:
    """``[n, P]`` float32: the mean over ``cfg.phones_warps`` of the rows :func:`encode` makes of
    ``labels(warp)``: ``[n_frames] int64`` label codes per PocketSphinx frame of the whole file decoded
    at that warp (:func:`frame_labels`)."""
    rows = [encode(labels(float(warp)), 0, n, cfg.fps) for warp in cfg.phones_warps]
    return (np.sum(rows, axis=0) / len(rows)).astype(np.float32)
