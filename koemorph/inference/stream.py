"""Streaming inference: PCM chunks of any size in, the new blendshape frames out, bounded state.

A :class:`Streamer` is built from a checkpoint (:meth:`Streamer.from_checkpoint`). Each
:meth:`~Streamer.push` takes a chunk of PCM (``[n]`` or ``[n, channels]``, float32/float64 in
[-1, 1] or int16, at the stream's sample rate) and returns the frames that became computable:
:class:`Frames` with frame ``k`` at ``k / fps`` s from the stream (utterance) start, Apple order.
:meth:`~Streamer.flush` ends the utterance and returns its last frames (those whose lookahead
reaches past the end); :meth:`~Streamer.reset` starts a new utterance without them. After
``flush`` the next push starts a new utterance (frame 0, smoothing reset).

The frames are those ``koemorph render`` writes for the same audio (within the model's training
levels; for a recording outside them see the level below), with the same arithmetic:

* audio at another rate than 16 kHz goes through a streaming soxr resampler (``HQ``, as
  ``load_audio`` uses for whole files; the streamed samples differ slightly near the ends);
* log-mel row ``k`` comes from :class:`koemorph.features.streaming.MelStream` once the samples
  up to its centre + ``n_fft / 2`` have arrived, normalised with the checkpoint's stats;
* output frame ``k`` is computed once mel row ``k + L`` exists (``L`` lookahead frames), from mel
  rows ``[k - (C - 1), k + L]``, rows before 0 filled with normalised silence and, at
  :meth:`flush`, rows past the end too (as :func:`koemorph.model.infer.predict_file` pads);
* eGeMAPS (models that use it): window ``j`` ending at ``(j + 1) * step`` s, held over frames as
  ``extract`` aligns them, from :class:`koemorph.features.streaming.EgemapsStream`; frames wait
  until their window exists;
* recognised phones (models that read them): :class:`koemorph.features.phone_stream.PhoneStream`
  decodes as the audio comes, with a running cepstral mean and no frequency warp, and a frame also
  waits until its phones are decided. A model trained on ``features.phones_decoding: live`` phones
  gets exactly the rows ``render`` computes (each utterance from the model's prior mean); one
  trained on whole-file phones gets rows close to those, not equal (the running mean is carried
  from one utterance to the next, which brings them nearer; a model trained on several
  ``features.phones_warps`` gets one unwarped decode, further from them);
* the learned smoothing state is carried from block to block and reset at utterance starts;
* the input level (``match_level``, a checkpoint with training levels): :attr:`Streamer.level`
  measures the speech level of the last seconds of input, and once it lies outside the training
  levels, the audio from then on is scaled by :attr:`Streamer.gain_db` before every feature
  (:meth:`koemorph.features.level.RecentLevel.next_gain_db`), where render scales a whole file by
  one gain. The gain is kept across utterances (the microphone stays the same).

State is bounded whatever the stream length: the mel analysis tail (``n_fft`` samples + one
chunk), ``C - 1 + L`` mel rows, the distinct eGeMAPS windows of the last ``E`` frames (with the
eGeMAPS engine's own ring buffers), the phone decoder's current utterance and one smoothed frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from koemorph import grid
from koemorph.errors import InputError
from koemorph.features.level import RecentLevel, gain_factor
from koemorph.features.phones import frame_columns, input_columns
from koemorph.inference import incremental

BLOCK = 512  # output frames per model call at most (as render's blocks)
DTYPES = (np.float32, np.float64, np.int16)


class StreamError(InputError):
    """A pushed chunk cannot be used: ``<source>: chunk <i>: problem``."""

    kind = "stream"


@dataclass(frozen=True)
class Frames:
    """Consecutive output frames ``[start, start + n)``: ``values`` ``[n, 52]`` float32, Apple order."""

    start: int
    values: np.ndarray
    fps: int

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def times(self) -> np.ndarray:
        """``[n]`` float64 seconds from the utterance start: ``k / fps``."""
        return np.arange(self.start, self.start + len(self), dtype=np.float64) / self.fps


def check_chunk(chunk, name: str, index: int, channels: int | None = None) -> np.ndarray:
    """A pushed chunk as mono float32 ``[n]``, or :class:`StreamError` naming the problem.

    Accepts ``[n]`` or ``[n, channels]`` (mixed down by averaging) of float32/float64 in [-1, 1]
    or int16 (scaled by 1/32768). Anything else (other dtypes, NaN/Inf, more dimensions) is refused.
    """
    where = f"chunk {index}"
    if not isinstance(chunk, np.ndarray):
        raise StreamError(name, f"{where}: expected a numpy array, got {type(chunk).__name__}")
    if chunk.dtype not in DTYPES:
        raise StreamError(
            name, f"{where}: dtype {chunk.dtype} not accepted; send float32/float64 or int16 PCM"
        )
    if chunk.ndim not in (1, 2) or (channels is not None and chunk.ndim == 2 and chunk.shape[1] != channels):
        raise StreamError(name, f"{where}: shape {chunk.shape}; expected [samples] or [samples, channels]")
    x = chunk.astype(np.float32) / 32768.0 if chunk.dtype == np.int16 else chunk.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    if not np.isfinite(x).all():
        raise StreamError(name, f"{where}: {int((~np.isfinite(x)).sum())} NaN/Inf sample(s)")
    return np.ascontiguousarray(x)


class Streamer:
    """Stateful inference over one stream of audio; see the module docstring.

    ``model``/``meta`` as :func:`koemorph.training.checkpoint.load_model` returns them; ``rate`` the
    input sample rate (Hz); ``name`` names the source in error messages; ``egemaps`` False runs an
    eGeMAPS model without its emotion stream (not what render does; for tests and benchmarks);
    ``match_level`` False never scales the input (``render.match_level``).
    """

    def __init__(
        self,
        model,
        meta: dict,
        rate: int = grid.SAMPLE_RATE,
        name: str = "<stream>",
        egemaps=True,
        match_level=True,
    ):
        from koemorph.features.normalise import _mean_std, frame_pad

        self.model, self.meta, self.name = model, meta, name
        self.cfg = meta["config"].features
        self.fps, self.spans = int(meta["fps"]), model.spans
        self.mel_mean, self.mel_std = _mean_std(meta["stats"], "mel")
        self.mel_pad = frame_pad(meta["stats"], self.cfg)  # the frame input's pad (mel, then phones)
        self.level = RecentLevel(self.fps, meta["stats"].get("level"))  # input level, not a feature
        self.match_level = bool(match_level)
        self.gain_db = 0.0  # applied to the input from now on, in dB
        self.use_egemaps = bool(
            egemaps and self.cfg.egemaps and "egemaps" in meta["stats"] and getattr(model, "n_egemaps", 0) > 0
        )
        self.smooth = getattr(model, "smoothing", None) is not None
        self.rate = self._check_rate(rate)
        self.chunks = 0
        self._ege, self._phones = None, None
        model.eval()
        self.reset()

    @classmethod
    def from_checkpoint(cls, path, rate: int = grid.SAMPLE_RATE, name: str | None = None, threads=1, **kw):
        """A streamer for the checkpoint at ``path`` (loaded on the CPU). ``threads``: torch's threads
        for this process (one stream, one core: more threads only spin against openSMILE's; None
        leaves torch's setting)."""
        import torch

        from koemorph.training.checkpoint import load_model

        if threads:
            torch.set_num_threads(int(threads))
        model, meta = load_model(path)
        return cls(model, meta, rate=rate, name=name or str(path), **kw)

    def _check_rate(self, rate) -> int:
        from koemorph.io.audio import MIN_SAMPLE_RATE

        if int(rate) != rate or int(rate) < MIN_SAMPLE_RATE:
            raise StreamError(self.name, f"sample rate {rate!r}: need a whole number >= {MIN_SAMPLE_RATE} Hz")
        return int(rate)

    def reset(self, rate: int | None = None) -> None:
        """Start a new utterance (frame 0, smoothing reset, features from scratch), optionally at ``rate``."""
        from koemorph.features.streaming import MelStream

        if rate is not None:
            self.rate = self._check_rate(rate)
        self._mels = MelStream(self.cfg)
        self._resampler = None
        if self.rate != grid.SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.rate, grid.SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )
        self._mel = np.zeros((0, int(self.cfg.n_mels)), dtype=np.float32)  # normalised rows from _mel0
        self._mel0 = 0
        # the frame input's phone columns from _mel0 (phone models; never a transcript's)
        self._phone_rows = np.zeros((0, input_columns(self.cfg)), dtype=np.float32)
        if self.cfg.phones:
            from koemorph.features.phone_stream import PhoneStream

            # a whole-file phone model gets phones nearer its own from the live CMN the session's last
            # utterance reached; a live one gets exactly its render's from the model's prior mean
            carry = self._phones is not None and self.cfg.phones_decoding != "live"
            self._phones = PhoneStream(self.fps, cmn=self._phones.cmn if carry else None)
        self.close()
        if self.use_egemaps:
            from koemorph.features.streaming import EgemapsStream

            self._ege = EgemapsStream(self.cfg, self.meta["stats"]["egemaps"])
        self._inc = None
        if incremental.supports(self.model):
            per_update = incremental.frames_per_update(self.cfg)
            self._inc = incremental.IncrementalForward(self.model, self.mel_pad, per_update)
        self.next_frame = 0  # next output frame
        self._state = None  # last smoothed frame [1, 52]
        self.pushed = 0  # samples pushed in this utterance (input rate)

    def close(self) -> None:
        """Stop the eGeMAPS engine of the current utterance, if any (``reset``/``flush`` restart it)."""
        if self._ege is not None:
            self._ege.close()
            self._ege = None

    @property
    def samples(self) -> int:
        """16 kHz samples of this utterance analysed so far."""
        return self._mels.samples_seen

    @property
    def latency_frames(self) -> int:
        """Output frames that wait for future audio: the model's lookahead ``L``."""
        return self.spans.lookahead

    def push(self, chunk, rate: int | None = None) -> Frames:
        """Feed one chunk; returns the new frames (possibly none). See :func:`check_chunk`.

        ``rate`` (Hz), if given, must equal the stream's rate once an utterance has started;
        at an utterance start it sets the rate. Errors leave the state as it was.
        """
        self.chunks += 1
        if rate is not None and int(rate) != self.rate:
            if self.pushed:
                raise StreamError(
                    self.name,
                    f"chunk {self.chunks}: sample rate changed from {self.rate} to {rate} Hz mid-stream; "
                    "call reset() (or flush()) first",
                )
            self.reset(rate)
        x = check_chunk(chunk, self.name, self.chunks)
        self.pushed += x.size
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=False)
        return self._advance(x, final=False)

    def flush(self) -> Frames:
        """End the utterance: the frames still waiting for lookahead, then a reset."""
        x = np.zeros(0, dtype=np.float32)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=True).astype(np.float32)
        out = self._advance(x, final=True)
        self.reset()
        return out

    def _advance(self, x: np.ndarray, final: bool) -> Frames:
        if self.gain_db:
            x = (x * gain_factor(self.gain_db)).astype(np.float32)
        rows = self._mels.push(x)
        if final:
            rows = np.concatenate([rows, self._mels.finish()])
        if rows.size:
            self.level.push(rows, self.gain_db)
            rows = (rows - self.mel_mean) / self.mel_std
            self._mel = np.concatenate([self._mel, rows]) if self._mel.size else rows
        if self._ege is not None:
            self._ege.push(x, final=final)
        n_mel = self._mels.next_frame  # mel rows computed so far
        if self._phones is not None:  # frames wait for their phones to be decided too
            rows = (
                self._phones.push(x)
                if not final
                else np.concatenate([self._phones.push(x), self._phones.finish()])
            )
            self._phone_rows = np.concatenate([self._phone_rows, frame_columns(rows, self.cfg)])
            n_mel = min(n_mel, self._mel0 + len(self._phone_rows))
        stop = n_mel if final else max(self.next_frame, n_mel - self.spans.lookahead)
        if self._ege is not None and not final:
            stop = max(self.next_frame, self._ege.frames_ready(stop))
        out = self._emit(stop)
        self._trim()
        if self.match_level:
            self.gain_db = self.level.next_gain_db(self.gain_db)
        return out

    def _emit(self, stop: int) -> Frames:
        start = self.next_frame
        parts = [self._run(a, min(BLOCK, stop - a)) for a in range(start, max(start, stop), BLOCK)]
        values = np.concatenate(parts) if parts else np.zeros((0, 52), dtype=np.float32)
        self.next_frame = max(start, stop)
        return Frames(start, values, self.fps)

    def _run(self, a: int, span: int) -> np.ndarray:
        """Outputs ``[a, a + span)`` from the held rows (held from ``a - (C - 1)`` or frame 0 on)."""
        import torch

        from koemorph.model.windows import window

        sp = self.spans
        lo, hi = sp.mel_frames(a, span)
        held = self._mel
        if self._phones is not None:  # the frame input: mel rows, then their phone rows
            n = min(len(held), len(self._phone_rows))
            held = np.concatenate([held[:n], self._phone_rows[:n]], axis=1)
        m = window(held, lo - self._mel0, hi - self._mel0, self.mel_pad)  # padded before 0, past the end
        if self._inc is not None:
            rows_of = None if self._ege is None else self._ege.rows
            with torch.no_grad():
                y = self._inc.forward(m, lo, a, span, rows_of, self.smooth, self._state)
            self._state = y[:, -1] if self.smooth else None
            return y[0].float().numpy()
        e = None
        if self._ege is not None:
            e = torch.from_numpy(self._ege.rows(*sp.egemaps_frames(a, span)))[None]
        positions = torch.arange(span)[None]
        with torch.no_grad():  # the model is in eval mode since __init__
            y = self.model(torch.from_numpy(m)[None], e, positions, smooth=self.smooth, state=self._state)
        y = y["blendshapes"]
        self._state = y[:, -1] if self.smooth else None
        return y[0].float().numpy()

    def _trim(self) -> None:
        """Drop mel rows no future output sees (before ``next_frame - (C - 1)``)."""
        keep = self.next_frame - (self.spans.context - 1)
        if keep > self._mel0:
            self._mel = self._mel[keep - self._mel0 :].copy()
            self._phone_rows = self._phone_rows[keep - self._mel0 :].copy()
            self._mel0 = keep
        if self._ege is not None:
            self._ege.forget_before(self.next_frame - (self.spans.emotion_context - 1))
