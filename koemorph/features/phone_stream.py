"""Recognised phones as a stream decodes them: :class:`PhoneStream`, live CMN, rows never revised.

The rows are those of :mod:`koemorph.features.phones` (same phone set, frame mapping and encoding,
``[n, P]`` float32 on the grid at ``fps``), decided as the 16 kHz audio arrives; the decoder is
unwarped. ``features.phones_decoding: live`` makes extract and render compute exactly these rows
for a whole file.
"""

from __future__ import annotations

import collections

import numpy as np

from koemorph import grid
from koemorph.features.phones import (
    PHONES,
    SPHINX_HOP,
    SPHINX_RATE,
    best_segments,
    encode,
    frame_labels,
    grid_to_sphinx,
    label_code,
    new_decoder,
    sphinx_owner,
    to_pcm16,
)

STREAM_SETTLE_SEGMENTS = 1  # streaming: a frame is decided once this many segments start after it
# streaming: the decoder's utterance ends in a pause of CUT_PAUSE_S once it holds CUT_AFTER_S of audio,
# and at CUT_MAX_S in any case (the decoder's memory and per-chunk work grow with its utterance)
CUT_AFTER_S, CUT_PAUSE_S, CUT_MAX_S = 20.0, 0.2, 60.0
LAGS_KEPT = 10_000  # PhoneStream.lags_s: the last this many frames


class PhoneStream:
    """Incremental phone rows from 16 kHz chunks, live CMN; rows once returned are final.

    ``push(chunk)`` returns ``[n, P]`` float32 rows (as :func:`phone_features`) for the next grid
    frames at ``fps`` whose PocketSphinx frames are all decided, the same rows for any chunking of
    the same audio (from the same ``cmn``); ``finish()`` ends the utterance and
    returns the rest, so that the rows of all calls together number
    ``grid.num_frames_for_samples(total samples, fps)``. ``lags_s`` records, for the last
    :data:`LAGS_KEPT` returned frames, how far the audio pushed so far ran ahead of the frame's time
    when it was returned (seconds).

    Bounded state for a stream of any length: the decoder's utterance ends in the first pause of at
    least :data:`CUT_PAUSE_S` after :data:`CUT_AFTER_S` of audio (or at :data:`CUT_MAX_S` in any
    case) and a new one starts on the next 10-ms frame; only the label codes of frames not yet
    returned are held. Live CMN starts from the acoustic model's prior mean and needs seconds of
    speech to settle; it runs on across those cuts, and a session can carry it over: pass ``cmn``,
    the :attr:`cmn` of an earlier stream of the same voice.
    """

    def __init__(self, fps: int, cmn: str | None = None):
        self.fps = grid.check_fps(fps)
        self._dec = new_decoder()  # fed 10 ms at a time: live CMN
        if cmn is not None:
            self._dec.set_cmn(cmn)
        self._dec.start_utt()
        self._n_samples = 0  # samples pushed
        self._fed = 0  # samples given to the decoder: whole 10-ms hops until finish()
        self._pending = np.zeros(0, dtype=np.float32)  # under one hop, not yet given to the decoder
        self._utt_first = 0  # stream PocketSphinx frame where the decoder's utterance starts
        self._codes = np.zeros(0, dtype=np.int64)  # decided codes of earlier utterances, from _first
        self._first = 0
        self._emitted = 0  # grid frames returned so far
        self._finished = False
        self.utterances = 1  # decoder utterances so far
        self.lags_s: collections.deque[float] = collections.deque(maxlen=LAGS_KEPT)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Feed ``[n]`` float32 samples at 16 kHz; returns the newly decided rows ``[m, P]``."""
        if self._finished:
            raise RuntimeError("PhoneStream.push after finish()")
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._n_samples += x.size
        x = np.concatenate([self._pending, x])
        hops = x.size // SPHINX_HOP
        rows = [self._hop(x[i * SPHINX_HOP : (i + 1) * SPHINX_HOP]) for i in range(hops)]
        self._pending = x[hops * SPHINX_HOP :]
        return np.concatenate(rows) if rows else np.zeros((0, len(PHONES)), dtype=np.float32)

    def _hop(self, hop: np.ndarray) -> np.ndarray:
        """One 10-ms hop into the decoder, then the rows it decides. Hop by hop, whatever the chunks,
        so that the decoder's state at every decision, and hence every row, is independent of them."""
        self._dec.process_raw(to_pcm16(hop), False, False)
        self._fed += SPHINX_HOP
        segments = best_segments(self._dec)
        total = grid.num_frames_for_samples(self._fed, self.fps)
        if self._cut_now(segments):
            return self._end_utterance(self._fed // SPHINX_HOP, total)
        if len(segments) <= STREAM_SETTLE_SEGMENTS:
            return np.zeros((0, len(PHONES)), dtype=np.float32)
        decided = self._utt_first + segments[-STREAM_SETTLE_SEGMENTS][1]  # frames before it are decided
        # grid frames before the owner of the first undecided PocketSphinx frame own decided ones only
        upto = min(int(sphinx_owner(decided, decided + 1, self.fps)[0]), total)
        if upto <= self._emitted:
            return np.zeros((0, len(PHONES)), dtype=np.float32)
        return self._emit(self._with(frame_labels(segments, decided - self._utt_first)), upto)

    def finish(self) -> np.ndarray:
        """End the utterance; returns the rows of all grid frames not yet returned."""
        if self._finished:
            return np.zeros((0, len(PHONES)), dtype=np.float32)
        if self._pending.size:
            self._dec.process_raw(to_pcm16(self._pending), False, False)
        self._finished = True
        self._dec.end_utt()
        codes = frame_labels(best_segments(self._dec), int(self._dec.n_frames()))
        return self._emit(self._with(codes), self._total())

    @property
    def cmn(self) -> str:
        """The live cepstral mean now (comma-separated numbers), to start a later stream from."""
        return self._dec.get_cmn()

    def _cut_now(self, segments) -> bool:
        """Whether the decoder's utterance ends here: in a pause, long enough, or at the longest."""
        length = self._fed / grid.SAMPLE_RATE - self._utt_first / SPHINX_RATE
        if length >= CUT_MAX_S:
            return True
        if length < CUT_AFTER_S or not segments or label_code(segments[-1][0]) != 0:
            return False
        return (int(self._dec.n_frames()) - segments[-1][1]) / SPHINX_RATE >= CUT_PAUSE_S

    def _end_utterance(self, boundary: int, upto: int) -> np.ndarray:
        """End the decoder's utterance at stream frame ``boundary`` (all audio fed), start the next;
        returns the rows of the grid frames that own frames before ``boundary`` only."""
        self._dec.end_utt()
        n = boundary - self._utt_first  # frames past it (the front end's last, padded ones) are dropped
        codes = self._with(frame_labels(best_segments(self._dec), n))
        self._codes = codes  # decided for good
        self._utt_first = boundary
        self._dec.start_utt()
        self.utterances += 1
        return self._emit(codes, min(upto, int(sphinx_owner(boundary, boundary + 1, self.fps)[0])))

    def _with(self, utterance_codes: np.ndarray) -> np.ndarray:
        """Codes from stream frame ``_first``: the held ones, then the current utterance's."""
        return np.concatenate([self._codes[: self._utt_first - self._first], utterance_codes])

    def _total(self) -> int:
        return grid.num_frames_for_samples(self._n_samples, self.fps)

    def _emit(self, codes: np.ndarray, upto: int) -> np.ndarray:
        """Rows of grid frames ``_emitted..upto-1`` (``codes`` from stream frame ``_first``); their lags
        are recorded, and held codes no later row needs are dropped."""
        rows = encode(codes, self._emitted, upto, self.fps, self._first)
        now = self._n_samples / grid.SAMPLE_RATE
        self.lags_s.extend((now - grid.frame_times(upto, self.fps)[self._emitted :]).tolist())
        self._emitted = max(self._emitted, upto)
        drop = min(int(grid_to_sphinx(self._emitted, self._emitted + 1, self.fps)[0]) - 8, self._utt_first)
        if drop > self._first:
            self._codes, self._first = self._codes[drop - self._first :], drop
        return rows
