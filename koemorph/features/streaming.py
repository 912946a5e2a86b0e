"""Incremental features for streaming: the same rows as the whole-file extractors, as audio arrives.

:class:`MelStream` computes log-mel row ``k`` (the ``n_fft`` samples centred on
``round(k * 16000 / fps)``, see :mod:`koemorph.features.mel`) as soon as the samples up to
``centre + n_fft // 2`` have arrived, with the same arithmetic as :func:`~koemorph.features.mel.log_mel`
(:func:`~koemorph.features.mel.mel_power_at`, :func:`~koemorph.features.mel.power_to_db`).
:meth:`MelStream.finish` computes the last rows, zero padded past the end as ``log_mel`` pads them.
It holds only the audio the next rows need: at most ``n_fft`` samples plus one pushed chunk.

All audio is ``[N]`` float32 mono at 16 kHz; rows are on the grid of ``cfg.fps`` (row ``k`` at
``k / fps`` s from the stream start).
"""

from __future__ import annotations

import numpy as np

from koemorph import grid
from koemorph.config import FeaturesConfig
from koemorph.features.egemaps import LLD_HOP
from koemorph.features.mel import mel_power_at, power_to_db


def frame_center(k: int, fps: int) -> int:
    """Sample index of frame ``k``'s centre, as :func:`koemorph.grid.frame_centers` computes it."""
    return (2 * int(k) * grid.SAMPLE_RATE + fps) // (2 * fps)


class MelStream:
    """Log-mel rows ``[k, n_mels]`` dB of a stream, equal to ``log_mel`` of the whole stream."""

    def __init__(self, cfg: FeaturesConfig):
        self.cfg = cfg
        self.fps = grid.check_fps(cfg.fps)
        self.half = int(cfg.n_fft) // 2
        self.reset()

    def reset(self) -> None:
        """Start a new stream: sample 0 and frame 0 are the next ones pushed and returned."""
        self.samples_seen = 0  # samples pushed since the stream start
        self.next_frame = 0  # index of the next row to compute
        self._start = 0  # stream index of self._buf[0]
        self._buf = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append ``[n]`` float32 samples; returns the rows that became complete: ``[k, n_mels]``."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x.copy()
        self.samples_seen += x.size
        stop = self.next_frame
        while frame_center(stop, self.fps) + self.half <= self.samples_seen:
            stop += 1
        return self._rows(stop)

    def finish(self) -> np.ndarray:
        """The remaining rows up to ``num_frames_for_samples(samples_seen)``, zero padded past the end."""
        return self._rows(max(self.next_frame, grid.num_frames_for_samples(self.samples_seen, self.fps)))

    def _rows(self, stop: int) -> np.ndarray:
        k0 = self.next_frame
        if stop <= k0:
            return np.zeros((0, int(self.cfg.n_mels)), dtype=np.float32)
        k = np.arange(k0, stop, dtype=np.int64)
        centers = (2 * k * grid.SAMPLE_RATE + self.fps) // (2 * self.fps) - self._start
        # the buffer starts at or before the first centre - half, or at stream sample 0 (zeros before)
        power = mel_power_at(self._buf, centers, self.cfg)
        self.next_frame = stop
        keep = min(
            max(0, frame_center(stop, self.fps) - self.half), self.samples_seen
        )  # next row starts here
        if keep > self._start:
            self._buf = self._buf[keep - self._start :].copy()
            self._start = keep
        return power_to_db(power, float(self.cfg.db_floor))


# --- eGeMAPS from openSMILE's streaming engine --------------------------------------------------

WAIT_S = 0.13  # audio past a window's end after which its row is waited for (rows come ~0.01 s after)
WAIT_TIMEOUT_S = 30.0  # longest wait for openSMILE's thread; past it the frames wait for more audio
# windows after those that start at 0 still taken from the early instance: the late one's F0
# path (Viterbi smoother, 0.4-s blocks) is still settling from its leading silence there
EARLY_EXTRA = 2

_SOURCE_INC = """[componentInstances:cComponentManager]
instance[extsource].type=cExternalAudioSource

[extsource:cExternalAudioSource]
writer.dmLevel=wave
writer.levelconf.growDyn=0
writer.levelconf.isRb=1
writer.levelconf.nT={wave_nt}
sampleRate=16000
nBits=16
channels=1
"""
_RING_INC = "writer.levelconf.growDyn = 0\nwriter.levelconf.isRb = 1\nwriter.levelconf.nT = {nt}\n"
_FIXED_INC = (
    "frameMode = fixed\nframeSizeFrames = {size}\nframeStepFrames = {step}\n"
    "frameCenterSpecial = right\nnoPostEOIprocessing = 1\n"
)


def _geometry(cfg: FeaturesConfig) -> tuple[int, int, int]:
    """``(step, context, guard)`` in samples, each a whole number of 10-ms LLD frames."""
    from koemorph.features.egemaps import _params

    step, context, guard = _params(cfg)
    if step % LLD_HOP or context % LLD_HOP or guard % LLD_HOP:
        raise ValueError(
            "streamed eGeMAPS needs egemaps_step_s, egemaps_context_s and egemaps_guard_s in whole "
            f"10-ms steps, got {cfg.egemaps_step_s}, {cfg.egemaps_context_s}, {cfg.egemaps_guard_s}"
        )
    return step, context, guard


def _start_smile(includes: dict, options: dict, callback):
    """An eGeMAPSv02 openSMILE instance fed from outside (``cExternalAudioSource``), running on a
    daemon thread; ``includes`` are config snippets written for its ``\\cm`` include options.
    Returns ``(smile, thread)``."""
    import os
    import tempfile
    import threading

    import opensmile
    from opensmile.core.lib import OpenSMILE

    from koemorph.features.egemaps import _plain_smile

    root = _plain_smile().default_config_root
    options = {
        "sink": os.path.join(root, opensmile.config.EXTERNAL_OUTPUT_SINGLE_CONFIG),
        "sinkLevel": "func",
        "bufferModeRbConf": os.path.join(root, "shared", "BufferModeRb.conf.inc"),
        **options,
    }
    with tempfile.TemporaryDirectory(prefix="koemorph-smile-") as tmp:  # read by initialize only
        for key, text in {"source": _SOURCE_INC.format(wave_nt=4 * grid.SAMPLE_RATE), **includes}.items():
            path = os.path.join(tmp, f"{key}.conf.inc")
            with open(path, "w") as f:
                f.write(text)
            options[key] = path
        smile = OpenSMILE()
        smile.initialize(os.path.join(root, "egemaps", "v02", "eGeMAPSv02.conf"), options, loglevel=1)
    smile.external_sink_set_callback_ex("extsink", callback)
    thread = threading.Thread(target=smile.run, name="koemorph-opensmile", daemon=True)
    thread.start()
    return smile, thread


class _Engine:
    """One running openSMILE instance: int16 PCM in, each functionals row to ``on_row(index, row)``."""

    def __init__(self, includes: dict, options: dict, on_row, delay: int = 0):
        self.rows, self.delay, self.on_row = 0, delay, on_row
        self.smile, self.thread = _start_smile(includes, options, self._callback)

    def _callback(self, data, meta) -> None:  # openSMILE's thread
        self.on_row(self.rows, np.asarray(data).reshape(-1))
        self.rows += 1

    def write(self, pcm: np.ndarray) -> None:
        import time

        if self.delay:  # digital silence first
            pcm, self.delay = np.concatenate([np.zeros(self.delay, np.int16), pcm]), 0
        for i in range(0, pcm.size, grid.SAMPLE_RATE):
            block = pcm[i : i + grid.SAMPLE_RATE].tobytes()
            while not self.smile.external_audio_source_write_data("extsource", block):
                if not self.thread.is_alive():
                    raise RuntimeError("openSMILE stopped while streaming eGeMAPS")
                time.sleep(0.001)

    def finish(self) -> None:
        """End of input: wait until every row is out, then free the instance."""
        if self.smile is not None:
            self.smile.external_audio_source_set_eoi("extsource")
            self.thread.join()
            self.close()

    def close(self) -> None:
        if self.smile is not None:
            if self.thread.is_alive():
                self.smile.abort()
                self.thread.join()
            self.smile.free()
            self.smile = None


class EgemapsStream:
    """Normalised eGeMAPS rows of a stream, from openSMILE's streaming engine.

    Window ``j`` ends at ``t_j = (j + 1) * step`` (``features.egemaps_step_s``) and summarises
    ``[max(0, t_j - context), t_j - guard]`` as :func:`koemorph.features.egemaps.egemaps` defines it.
    Two openSMILE instances read the stream as it arrives (``cExternalAudioSource``):

    * the *late* one (windows with ``t_j > context``, the whole stream after the first 20 s): the
      audio delayed by ``guard`` less one 10-ms LLD frame (that much digital silence first),
      functionals over fixed frames of ``context - guard`` + two LLD frames sampled at their right
      end every ``step``, so its row ``j + 1`` covers the LLD frames of window ``j`` in the
      whole-file pass (ends included); its levels are ring buffers (constant memory);
    * the *early* one (the ``context // step`` windows that start at 0, and :data:`EARLY_EXTRA`
      more): the same list of windows as the whole-file extractor (its list frame mode); freed
      once they are out.

    Frame ``i`` (``i / fps`` s) holds window ``floor(i * 16000 / (step * fps)) - 1`` (0 before
    the first, as ``extract`` aligns them); rows are ``(x - mean) / std`` with NaN/Inf as 0 first.
    Windows openSMILE has not emitted by the end of the stream are computed from the last
    ``context`` of audio with :func:`~koemorph.features.egemaps.egemaps_per_window`, as the
    whole-file extractor does. Held: the windows still needed (:meth:`forget_before`), the last
    ``context + step`` samples, and openSMILE's buffers (about ``context`` + 5 s of each level).
    """

    def __init__(self, cfg: FeaturesConfig, stats: dict):
        import threading

        from koemorph.features.egemaps import _frame_list

        self.cfg, self.fps = cfg, grid.check_fps(cfg.fps)
        self.step, self.context, self.guard = _geometry(cfg)
        self.mean = np.asarray(stats["mean"], np.float32)
        self.std = np.asarray(stats["std"], np.float32)
        self.n_early = self.context // self.step + EARLY_EXTRA  # those that start at 0, and a few
        self.windows: dict[int, np.ndarray] = {}  # window index -> normalised [88]
        self.complete = 0  # windows 0 .. complete - 1 are all available
        self.fed, self.done = 0, False  # stream samples given to openSMILE
        self._tail = np.zeros(0, np.float32)  # the last context + step samples
        self._cond = threading.Condition()
        self.delay, self.lag = self._delay()
        fixed = _FIXED_INC.format(size=(self.context - self.guard) // LLD_HOP + 2, step=self.step // LLD_HOP)
        ring = _RING_INC.format(nt=(self.context + 5 * grid.SAMPLE_RATE) // LLD_HOP)
        self._late = _Engine(
            {"bufferModeConf": ring, "frameModeFunctionalsConf": fixed}, {}, self._late_row, self.delay
        )
        early = _frame_list(0, self.n_early, 0, self.step, self.context, self.guard)
        self._early = _Engine(
            {}, {"frameModeFunctionalsConf": self._multi_conf(), "frameList": early}, self._store
        )

    @staticmethod
    def _multi_conf() -> str:
        import os

        from koemorph.features.egemaps import _plain_smile

        return os.path.join(
            _plain_smile().default_config_root, "shared", "FrameModeFunctionalsMulti.conf.inc"
        )

    def _delay(self) -> tuple[int, int]:
        """``(delay, lag)``: digital silence before the late instance's audio (samples), and the rows
        its windows lag by: row ``i`` holds window ``i - lag``. Measured against the whole-file
        pass, whose list windows include their last LLD frame: ``guard`` less one LLD frame."""
        return self.guard - LLD_HOP, 1

    def _late_row(self, index: int, data: np.ndarray) -> None:
        if index - self.lag >= self.n_early:
            self._store(index - self.lag, data)

    def _store(self, j: int, data: np.ndarray) -> None:  # openSMILE's threads
        from koemorph.features.egemaps import _finite

        row = (_finite(data) - self.mean) / self.std
        with self._cond:
            self.windows[j] = row
            while self.complete in self.windows:
                self.complete += 1
            self._cond.notify_all()

    def push(self, x: np.ndarray, final: bool = False) -> None:
        """Feed ``[n]`` float32 samples (16 kHz); ``final`` ends the stream (waits for openSMILE)."""
        from koemorph.features.egemaps import _as_pcm_float

        pcm = _as_pcm_float(x)
        pcm *= np.float32(32768.0)
        pcm = pcm.astype(np.int16)  # as opensmile-python converts for process_signal
        for engine in (self._early, self._late):
            if engine.smile is not None:
                engine.write(pcm)
        self._tail = np.concatenate([self._tail, np.asarray(x, np.float32)])[-(self.context + self.step) :]
        with self._cond:
            self.fed += pcm.size
            early_done = self.complete >= self.n_early
        if early_done:
            self._early.finish()
        if final:
            self._finish()

    def _finish(self) -> None:
        from koemorph.features.egemaps import egemaps_per_window

        self._early.finish()
        self._late.finish()
        n_windows = self.fed // self.step
        missing = [j for j in range(self.complete, n_windows) if j not in self.windows]
        if missing:  # the last windows, inside the tail
            ends = (np.asarray(missing) + 1) * self.step - (self.fed - self._tail.size)
            raw = egemaps_per_window(self._tail, self.cfg, ends / grid.SAMPLE_RATE)
            for j, row in zip(missing, raw):
                self.windows[j] = (row - self.mean) / self.std
        with self._cond:
            self.complete, self.done = max(self.complete, n_windows), True

    def window_of(self, frames) -> np.ndarray:
        """Window index held by each frame (``-1``: none yet), ``[n]`` int64."""
        return (np.asarray(frames, np.int64) * grid.SAMPLE_RATE) // (self.step * self.fps) - 1

    def frames_ready(self, stop: int) -> int:
        """The first frame < ``stop`` whose window is not available yet (``stop`` if all are).

        Waits for openSMILE's row of a window once ``WAIT_S`` of audio past its end has been fed.
        """
        if stop <= 0:
            return stop
        need = int(self.window_of([stop - 1])[0])
        with self._cond:
            due = self.fed >= (need + 1) * self.step + WAIT_S * grid.SAMPLE_RATE
            if due and not self.done and need >= self.complete:
                self._cond.wait_for(lambda: need < self.complete or self.done, WAIT_TIMEOUT_S)
            have = self.complete - 1  # latest window available with all before it
        if need <= have:
            return stop
        # frames i with window(i) <= have: i * 16000 < (have + 2) * step * fps
        return min(stop, -(-(have + 2) * self.step * self.fps // grid.SAMPLE_RATE))

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Normalised rows of frames ``[start, stop)``: ``[stop - start, 88]`` float32 (0 before a window)."""
        j = self.window_of(np.arange(start, stop))
        out = np.zeros((stop - start, self.mean.size), np.float32)
        with self._cond:
            for row, w in enumerate(j.tolist()):
                if w >= 0:
                    out[row] = self.windows[w]
        return out

    def forget_before(self, frame: int) -> None:
        """Drop the windows no frame >= ``frame`` holds."""
        first = int(self.window_of([max(frame, 0)])[0])
        with self._cond:
            for j in [j for j in self.windows if j < first]:
                del self.windows[j]

    def close(self) -> None:
        """Stop both openSMILE instances (if running) and free them."""
        self._early.close()
        self._late.close()
