"""``koemorph stream``: a source of PCM chunks, a :class:`~koemorph.inference.stream.Streamer`, sinks.

Sources yield ``(chunk, arrival)``: ``chunk`` a numpy array for :meth:`Streamer.push`, ``arrival``
the ``time.perf_counter()`` at which it became available:

* :func:`file_chunks`: an audio file cut into chunks of ``chunk_s`` seconds at its own sample rate,
  as fast as possible, or paced in real time (``realtime``: chunk ``i`` arrives when its last sample
  would have been recorded);
* :func:`raw_chunks`: raw interleaved PCM (``s16le`` or ``f32le``) from a binary stream (stdin);
* :func:`mic_chunks`: the default microphone (sounddevice, the ``mic`` extra).

:func:`run` pushes every chunk, sends the new frames to every sink, shows progress on stderr
(audio seconds, frames, RTF and latency from a chunk's arrival to its frames' emission, p50/p95),
and on the end of the source or Ctrl-C flushes the streamer (the last lookahead frames) and
closes the sinks. It returns a summary dict.
"""

from __future__ import annotations

import collections
import sys
import time

import numpy as np

PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def file_chunks(path, chunk_s: float, realtime: bool = False):
    """``(rate, iterator)`` over ``[n, channels]`` float32 chunks of an audio file (soundfile)."""
    import soundfile as sf

    from koemorph.errors import AudioError

    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:
        raise AudioError(path, f"cannot read audio: {exc}") from None
    rate, block = f.samplerate, max(1, round(chunk_s * f.samplerate))

    def chunks():
        start, done = time.perf_counter(), 0
        with f:
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if not len(data):
                    return
                done += len(data)
                if realtime:
                    time.sleep(max(0.0, start + done / rate - time.perf_counter()))
                yield data, time.perf_counter()

    return rate, chunks()


def raw_chunks(stream, fmt: str, channels: int, rate: int, chunk_s: float):
    """Chunks of raw PCM from a binary ``stream``: ``[n, channels]`` int16 or float32 arrays."""
    if fmt not in PCM_FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {sorted(PCM_FORMATS)}")
    dtype = PCM_FORMATS[fmt]
    frame = dtype.itemsize * channels
    want = max(1, round(chunk_s * rate)) * frame
    tail = b""
    while True:
        data = stream.read1(want - len(tail)) if hasattr(stream, "read1") else stream.read(want - len(tail))
        if not data:
            return  # end of input (a trailing partial sample frame is dropped)
        data = tail + data
        whole = len(data) // frame * frame
        data, tail = data[:whole], data[whole:]
        if data:
            yield (
                np.frombuffer(data, dtype=dtype).reshape(-1, channels).astype(dtype.newbyteorder("=")),
                (time.perf_counter()),
            )


def mic_chunks(rate: int, chunk_s: float, channels: int = 1):
    """Chunks from the default input device (``pip install koemorph[mic]``)."""
    import queue

    try:
        import sounddevice as sd
    except ImportError:
        raise RuntimeError("--mic needs sounddevice: pip install 'koemorph[mic]'") from None
    q: queue.Queue = queue.Queue()

    def callback(data, n, t, status):
        q.put((data.copy(), time.perf_counter()))

    with sd.InputStream(
        samplerate=rate,
        channels=channels,
        dtype="float32",
        blocksize=round(chunk_s * rate),
        callback=callback,
    ):
        while True:
            yield q.get()


class Meter:
    """Counts and recent latencies (the last 10 000 chunks that emitted frames): bounded memory."""

    def __init__(self, streamer, chunk_s: float):
        self.streamer, self.chunk_s = streamer, chunk_s
        self.latencies: collections.deque = collections.deque(maxlen=10_000)
        self.frames = self.chunks = self.audio = 0  # audio: input samples pushed
        self.busy = 0.0  # wall seconds spent pushing and sending
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def algorithmic_ms(self) -> float:
        """Lookahead + half the mel analysis window + one chunk, in ms."""
        sp, cfg = self.streamer.spans, self.streamer.cfg
        return 1000 * (sp.lookahead / sp.fps + cfg.n_fft / 2 / 16_000 + self.chunk_s)

    def summary(self, audio_s: float) -> dict:
        lat = np.asarray(self.latencies, dtype=np.float64) * 1000
        cpu = time.process_time() - self.cpu0
        return {
            "audio_s": round(audio_s, 3),
            "frames": self.frames,
            "chunks": self.chunks,
            "rtf_busy": round(self.busy / audio_s, 4) if audio_s else None,
            "rtf_cpu": round(cpu / audio_s, 4) if audio_s else None,
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 2) if lat.size else None,
            "algorithmic_ms": round(self.algorithmic_ms(), 1),
            "gain_db": self.streamer.gain_db,
        }

    def line(self, audio_s: float) -> str:
        """The progress line: counts, speed, latency, and the recent input level against training (with
        the gain the stream applies)."""
        s = self.summary(audio_s)
        advice = self.streamer.level.advice(self.streamer.gain_db)
        return (
            f"stream: {s['audio_s']:.1f} s audio, {s['frames']} frames, RTF {s['rtf_busy']}, latency "
            f"p50 {s['latency_p50_ms']} ms p95 {s['latency_p95_ms']} ms (algorithmic {s['algorithmic_ms']})"
            + (f"; {advice}" if advice else "")
        )


def _send(sinks, frames) -> None:
    if len(frames):
        for sink in sinks:
            sink.send(frames)


class CtrlC:
    """SIGINT while waiting for the source raises KeyboardInterrupt there; during a chunk's processing
    it is only recorded (:attr:`requested`), so every sink gets a chunk's frames or none of them.
    Installed on the main thread only (elsewhere Ctrl-C is Python's default)."""

    def __init__(self):
        self.waiting = self.requested = False
        self.previous = None

    def __call__(self, signum, frame):
        self.requested = True
        if self.waiting:
            raise KeyboardInterrupt

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def next(self, it):
        """``next(it)`` with Ctrl-C enabled; StopIteration at the end; KeyboardInterrupt if requested."""
        if self.requested:
            raise KeyboardInterrupt
        self.waiting = True
        try:
            return next(it)
        finally:
            self.waiting = False


def _loop(streamer, chunks, sinks, meter, progress, every_s, ctrl_c) -> int:
    """Push every chunk and send its frames; returns the input samples pushed (see :func:`run`)."""
    audio, last, it = 0, time.perf_counter(), iter(chunks)
    while True:
        try:
            chunk, arrival = ctrl_c.next(it)
        except StopIteration:
            return audio
        t0 = time.perf_counter()
        frames = streamer.push(chunk)
        _send(sinks, frames)
        done = time.perf_counter()
        meter.busy += done - t0
        meter.chunks += 1
        meter.frames += len(frames)
        audio += len(chunk)
        meter.audio = audio
        if len(frames):
            meter.latencies.append(done - arrival)
        if progress and done - last >= every_s:
            progress.write(meter.line(audio / streamer.rate) + "\n")
            progress.flush()
            last = done


def run(streamer, chunks, sinks, chunk_s: float, progress=None, every_s: float = 2.0) -> dict:
    """Stream ``chunks`` (``(array, arrival)`` pairs) through ``streamer`` into ``sinks``; see the module
    docstring. Ctrl-C (:class:`CtrlC`) ends the stream
    like the end of the source: flush, close, ``summary["interrupted"] = True``. A bad chunk
    (:class:`~koemorph.errors.InputError`) also flushes and closes, then is raised."""
    from koemorph.errors import InputError

    progress = sys.stderr if progress is None else progress
    meter, interrupted, error = Meter(streamer, chunk_s), False, None
    with CtrlC() as ctrl_c:
        try:
            _loop(streamer, chunks, sinks, meter, progress, every_s, ctrl_c)
        except KeyboardInterrupt:
            interrupted = True
        except InputError as exc:
            error = exc
        audio_s = meter.audio / streamer.rate
        try:
            last_frames = streamer.flush()
            _send(sinks, last_frames)
            meter.frames += len(last_frames)
        finally:
            for sink in sinks:
                sink.close()
    summary = {**meter.summary(audio_s), "interrupted": interrupted}
    if progress:
        note = " (interrupted: flushed and closed)" if interrupted else ""
        progress.write(meter.line(audio_s) + note + "\n")
        progress.flush()
    if error is not None:
        raise error
    return summary


def open_source(
    source: str | None, mic: bool, rate: int, fmt: str, channels: int, chunk_s: float, realtime: bool
):
    """``(rate, chunks, name)`` for ``koemorph stream``'s source options (see the module docstring).

    ``source`` an audio file, ``"-"`` or None for raw PCM on stdin; ``mic`` the microphone.
    """
    if chunk_s <= 0:
        raise ValueError(f"--chunk-s must be > 0, got {chunk_s}")
    if channels < 1:
        raise ValueError(f"--channels must be >= 1, got {channels}")
    if mic:
        return rate, mic_chunks(rate, chunk_s, channels), "microphone"
    if source in (None, "-"):
        return rate, raw_chunks(sys.stdin.buffer, fmt, channels, rate, chunk_s), "stdin"
    file_rate, chunks = file_chunks(source, chunk_s, realtime)
    return file_rate, chunks, str(source)


def open_sinks(jsonl: bool, osc: str | None, ws: str | None, ws_wait: int = 0, progress=None) -> list:
    """The sinks named by ``--jsonl``, ``--osc HOST:PORT`` and ``--ws HOST:PORT`` (JSONL on stdout when
    none is named). With ``ws_wait`` > 0, waits for that many WebSocket clients before returning."""
    from koemorph.inference.sinks import JsonlSink, OscSink, WebSocketSink, parse_address

    progress = sys.stderr if progress is None else progress
    sinks: list = []
    if osc:
        sinks.append(OscSink(*parse_address(osc, "--osc")))
    if ws:
        host, port = parse_address(ws, "--ws", listen=True)
        sink = WebSocketSink(host, port)
        sinks.append(sink)
        progress.write(f"stream: WebSocket server on ws://{host}:{sink.port}\n")
        progress.flush()
        if ws_wait > 0:
            sink.wait_for_clients(ws_wait)
    if jsonl or not sinks:
        sinks.insert(0, JsonlSink())
    return sinks
