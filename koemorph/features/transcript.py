"""Transcripts: the words a file says, as CMU phones, and recognised phones relabelled with them.

PocketSphinx's phone recogniser (:mod:`koemorph.features.phones`) finds phone *boundaries* on
voices it decodes poorly, but often names the phones wrongly (a synthetic "p" heard as "TH", a
word-initial "b" as silence). When the words are known, :func:`relabel` keeps the recogniser's
segments (their times) and renames them with the transcript's phones: an edit-distance alignment of
the two phone sequences, in which a substitution within a phone class (vowel, stop, nasal,
fricative, approximant) is cheaper than across classes, and a recognised silence costs little to
keep. It never fails, and needs no word timings; a word that was not said names its stretch of
sound wrongly, so the transcript must be what the audio says.

Words are looked up in the CMU pronouncing dictionary bundled with the ``pocketsphinx`` wheel (the
first pronunciation of each word); a plural or possessive of a known word (``churchs``, ``cat's``)
is the word plus Z; a number written in digits is read as a cardinal (``42``: forty two; ``007``:
zero zero seven). Other unknown words (names, ``2nd``) are skipped: their segments keep the
recognised labels, and :func:`transcript_phones` reports them.

Time base: segments are ``(label, first, last)`` with inclusive PocketSphinx frame indices
(10 ms, :data:`koemorph.features.phones.SPHINX_RATE`), as :func:`koemorph.features.phones.decode_segments`
returns them.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np

from koemorph.features.phones import NUM_PHONES, PHONE_INDEX, label_code

# Edit costs of the alignment (a recognised segment against a transcript phone).
SAME_CLASS, OTHER_CLASS, SPEECH_FILLER_COST, SILENCE_AS_SPEECH = 0.6, 1.0, 0.5, 1.5
EXTRA_SPEECH, EXTRA_SILENCE, MISSING = 0.8, 0.1, 1.0  # a segment with no phone / a phone with no segment
BAND = 100  # transcript phones either side of the alignment's expected position (long files)
# fmt: off
CLASSES = (
    ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"),
    ("P", "B", "T", "D", "K", "G"),
    ("M", "N", "NG"),
    ("F", "V", "TH", "DH", "S", "Z", "SH", "ZH", "HH", "CH", "JH"),
    ("L", "R", "W", "Y"),
)
# fmt: on
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*'?")
# fmt: off
_UNITS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
# fmt: on
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def hash_constants() -> dict:
    """What fixes :func:`relabel`'s output besides its inputs (costs, band, phone classes), for cache
    hashes; the dictionary comes with the PocketSphinx wheel, whose version the phones' hash holds."""
    costs = (
        SAME_CLASS,
        OTHER_CLASS,
        SPEECH_FILLER_COST,
        SILENCE_AS_SPEECH,
        EXTRA_SPEECH,
        EXTRA_SILENCE,
        MISSING,
    )
    return {
        "relabel_costs": list(costs),
        "band": BAND,
        "classes": [list(c) for c in CLASSES],
    }


def _substitution_table() -> np.ndarray:
    """``[P + 1, P]`` cost of naming a recognised label code (:func:`label_code`) as each phone."""
    cls = np.full(NUM_PHONES, -1)
    for c, members in enumerate(CLASSES):
        cls[[PHONE_INDEX[p] for p in members]] = c
    table = np.where(cls[:, None] == cls[None, :], SAME_CLASS, OTHER_CLASS)
    np.fill_diagonal(table, 0.0)
    table[0, :] = SILENCE_AS_SPEECH  # recognised silence named as a speech phone
    table = np.vstack([table, np.full(NUM_PHONES, SPEECH_FILLER_COST)])  # +SPN+: some speech phone
    table[:, 0] = np.inf  # transcript phones are speech only
    return table.astype(np.float64)


SUBSTITUTION = _substitution_table()


@functools.cache
def dictionary() -> dict[str, tuple[str, ...]]:
    """Word (lower case) -> its first pronunciation in the CMU dictionary bundled with pocketsphinx."""
    import pocketsphinx

    path = os.path.join(pocketsphinx.get_model_path(), "en-us", "cmudict-en-us.dict")
    words: dict[str, tuple[str, ...]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, *phones = line.split()
            if phones and "(" not in word:
                words.setdefault(word, tuple(phones))
    return words


def read_transcript(path: str | Path) -> str:
    """The text of a transcript file (UTF-8, a byte-order mark allowed).

    Raises :class:`koemorph.errors.InputError` naming the file when it cannot be read or is not UTF-8.
    """
    from koemorph.errors import InputError

    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(str(path), f"cannot read the transcript: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(
            str(path), f"the transcript is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from exc


def pronounce(word: str) -> tuple[str, ...] | None:
    """CMU phones of a lower-case word, or None when the dictionary does not know it."""
    words = dictionary()
    if word in words:
        return words[word]
    for suffix in ("'s", "s'", "es", "s"):
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and stem in words:
            return words[stem] + ("Z",)
    return None


def number_words(digits: str) -> list[str]:
    """A number written in digits as the words said: a cardinal below 10**12 (``"1205"`` -> one
    thousand two hundred five), digit by digit with a leading zero or more digits (``"007"``)."""
    if (digits.startswith("0") and len(digits) > 1) or len(digits) > 12:
        return [_UNITS[int(d)] for d in digits]
    return _cardinal(int(digits))


def _cardinal(n: int) -> list[str]:
    if n < 20:
        return [_UNITS[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_UNITS[n % 10]] if n % 10 else [])
    scale, name = next((v, w) for v, w in _SCALES if n >= v)
    return _cardinal(n // scale) + [name] + (_cardinal(n % scale) if n % scale else [])


def transcript_phones(text: str) -> tuple[list[str], list[str]]:
    """``(phones, unknown words)``: the CMU speech phones of ``text``'s words in order (no silences),
    and the words left out because the dictionary does not know them (in order, repeats kept)."""
    phones: list[str] = []
    unknown: list[str] = []
    for token in _WORD.findall(text.lower().replace("\u2019", "'")):
        for word in number_words(token) if token.isdigit() else [token]:
            said = pronounce(word)
            if said is None:
                unknown.append(word)
            else:
                phones.extend(said)
    return phones, unknown


def relabel(segments, phones) -> list[tuple[str, int, int]]:
    """Recognised ``segments`` ``[(label, first, last)]`` renamed with the transcript's ``phones``.

    Each segment matched to a transcript phone takes its name; transcript phones with no segment
    of their own share the time of the matched segment before them (split evenly, in order), or of
    an unmatched speech segment between; segments with no phone (silences, sounds the transcript
    does not name) keep their recognised labels. Returns segments over the same frames.
    """
    segments = list(segments)
    if not segments or not phones:
        return segments
    codes = np.array([label_code(label) for label, _, _ in segments])
    target = np.array([PHONE_INDEX[p] for p in phones])
    back = _align(codes, target)
    assigned = _assign(back, codes, len(target))
    return _split(segments, assigned, phones)


def _align(codes: np.ndarray, target: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Edit-distance alignment of segment codes ``[n]`` to phone indices ``[m]``, in a band around the
    diagonal. Returns per row ``i`` (0..n) ``(lo, moves)``: the move into cell ``(i, lo + k)``,
    0 match, 1 extra segment, 2 missing phone. Only each row's band is held, so time and memory
    grow with ``n`` times the band, not ``n * m``."""
    n, m = len(codes), len(target)
    width = BAND + -(-m // n) + -(-n // m)
    extra = np.where(codes == 0, EXTRA_SILENCE, EXTRA_SPEECH)
    lo, prev = 0, MISSING * np.arange(min(m, width) + 1, dtype=np.float64)  # row 0's band
    rows = [(0, np.full(prev.size, 2, np.int8))]
    for i in range(1, n + 1):
        centre = round(i * m / n)
        j = np.arange(max(0, centre - width), min(m, centre + width) + 1)
        diag = _band_at(lo, prev, j - 1) + SUBSTITUTION[codes[i - 1], target[np.maximum(j - 1, 0)]]
        up = _band_at(lo, prev, j) + extra[i - 1]
        best = np.minimum(diag, up)
        moves = np.where(diag <= up, 0, 1).astype(np.int8)
        # a run of missing phones: D[j] = min(best[j], D[j-1] + MISSING), as a running minimum
        run = np.minimum.accumulate(best - MISSING * j) + MISSING * j
        moves[run < best - 1e-6] = 2  # a real gain, not the rounding of the running minimum
        lo, prev = int(j[0]), run
        rows.append((lo, moves))
    return rows


def _band_at(lo: int, values: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``values`` (a row's band, starting at column ``lo``) at columns ``j``; inf outside the band."""
    k = j - lo
    inside = (k >= 0) & (k < values.size)
    out = np.full(j.size, np.inf)
    out[inside] = values[k[inside]]
    return out


def _assign(rows, codes: np.ndarray, m: int) -> list[list[int]]:
    """Transcript phone positions (of ``m``) assigned to each segment, from the alignment's moves."""
    n = len(codes)
    assigned: list[list[int]] = [[] for _ in range(n)]
    pending: list[int] = []  # missing phones after the current cell, in order
    i, j = n, m
    while i > 0 or j > 0:
        lo, moves = rows[i]
        move = moves[j - lo] if i > 0 else 2
        if move == 0:
            assigned[i - 1] = [j - 1, *pending]
            pending, i, j = [], i - 1, j - 1
        elif move == 1:
            if pending and codes[i - 1] != 0:
                assigned[i - 1], pending = pending, []
            i -= 1
        else:
            pending, j = [j - 1, *pending], j - 1
    if pending:  # phones before the first matched segment: the first speech segment says them
        first = next((k for k in range(n) if codes[k] != 0), None)
        if first is not None:
            assigned[first] = pending + assigned[first]
    return assigned


def _split(segments, assigned, phones) -> list[tuple[str, int, int]]:
    """Each segment renamed with its assigned phones, its frames split evenly between them in order;
    a segment with none keeps its recognised label."""
    out: list[tuple[str, int, int]] = []
    for (label, first, last), positions in zip(segments, assigned, strict=True):
        if not positions:
            out.append((label, first, last))
            continue
        edges = np.linspace(first, last + 1, len(positions) + 1).round().astype(int)
        for p, a, b in zip(positions, edges[:-1], edges[1:], strict=True):
            if b > a:
                out.append((phones[p], int(a), int(b) - 1))
    return out


def transcript_phone_features(samples: np.ndarray, cfg, text: str) -> tuple[np.ndarray, list[str]]:
    """Phone rows of a file whose words are known: ``([T, P] float32, unknown words)``.

    As :func:`koemorph.features.phones.phone_features` with whole-file decoding (adapted when
    ``cfg.phones_decoding`` is ``"adapted"``, otherwise ``"whole"``), each warp's recognised segments
    relabelled with ``text``'s phones (:func:`relabel`). ``samples`` ``[N]`` float32 mono at 16 kHz;
    ``T = grid.num_frames_for_samples(N, cfg.fps)``; reads ``cfg.fps``, ``cfg.phones_decoding`` and
    ``cfg.phones_warps``.
    """
    from koemorph import grid
    from koemorph.features.phones import decode_segments, frame_labels, mean_over_warps

    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    phones, unknown = transcript_phones(text)

    decoding = "adapted" if cfg.phones_decoding == "adapted" else "whole"

    def labels(warp: float) -> np.ndarray:
        segments, n_sphinx = decode_segments(x, warp, decoding)
        return frame_labels(relabel(segments, phones), n_sphinx)

    return mean_over_warps(labels, grid.num_frames_for_samples(x.size, cfg.fps), cfg), unknown
