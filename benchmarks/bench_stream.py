"""Benchmark streaming inference (``koemorph stream``): speed, concurrent streams, latency, memory.

    python benchmarks/bench_stream.py [--model best.pt] [--seconds 60] [--chunk-s 0.033]
        [--latency-seconds 20] [--memory-minutes 60] [--streams 2] [--set KEY=VALUE ...]

Without ``--model`` a default-size dual-stream model of the default config with the ``--set``
overrides (untrained weights, stats from the benchmark audio) is built in a temporary folder: speed
does not depend on the weights; the seeds' model with eGeMAPS is ``--set features.egemaps=true
--set features.phones=false --set model.mel_bands=4``;
``--model koemorph/bundled/default-live.pt`` times the bundled stream model. Audio is
the synthetic speech-like signal of the demo corpus. Prints, from one run:

(a) RTF per stream on one core (CPU s per audio s), ``--chunk-s`` chunks as fast as
    possible, against the baselines measured here: the whole-file path (features + ``predict_file``,
    what ``render`` does) and the naive eGeMAPS update (one openSMILE call on the last 20 s every
    0.3 s);
(b) real-time streams ``--streams`` processes hold when they run at once (sum of 1 / wall RTF);
(c) latency with chunks paced in real time: algorithmic (lookahead + half the mel window + one
    chunk) and measured from a chunk's arrival to the emission of its frames (p50, p95);
(d) memory: resident set size while streaming ``--memory-minutes`` of audio as fast as possible
    (growth after the first minute).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per stream

import argparse  # noqa: E402
import io  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

SR = 16_000


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def build_model(path: Path, audio: np.ndarray, overrides: list[str]) -> Path:
    """A dual-stream checkpoint of the default config with ``overrides``, feature stats (mel, and
    eGeMAPS for configs that use it) from ``audio``."""
    import torch

    from koemorph.config import load_config
    from koemorph.features.mel import log_mel
    from koemorph.model import build_model as build
    from koemorph.training.checkpoint import save_untrained

    cfg = load_config(None, overrides)
    mel = log_mel(audio, cfg.features)
    stats = {"mel": {"mean": mel.mean(0).tolist(), "std": (mel.std(0) + 1e-3).tolist()}}
    if cfg.features.egemaps:
        from koemorph.features.egemaps import egemaps

        native = egemaps(audio, cfg.features)[1]
        stats["egemaps"] = {"mean": native.mean(0).tolist(), "std": (native.std(0) + 1e-3).tolist()}
    torch.manual_seed(0)
    return save_untrained(path, build(cfg.model, cfg.features), cfg, stats)


def stream_once(model: str, x: np.ndarray, chunk_s: float) -> tuple[float, float, int]:
    """``(cpu s, wall s, frames)`` to stream ``x`` in chunks and flush (one thread)."""
    from koemorph.inference.stream import Streamer

    streamer = Streamer.from_checkpoint(model, threads=1)
    streamer.push(x[:SR])  # warm-up: imports, openSMILE, kernels
    streamer.reset()
    n, frames = round(chunk_s * SR), 0
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(0, x.size, n):
        frames += len(streamer.push(x[i : i + n]))
    frames += len(streamer.flush())
    return time.process_time() - c0, time.perf_counter() - w0, frames


def offline_baselines(model: str, x: np.ndarray) -> tuple[float, float]:
    """``(cpu s of render's path on x, cpu s of the naive eGeMAPS updates extrapolated to x)``."""
    from koemorph.config import FeaturesConfig
    from koemorph.features.egemaps import egemaps_per_window, window_end_times
    from koemorph.inference.render import RenderJob, file_features, get_model
    from koemorph.model.infer import predict_file

    m, meta = get_model(model, "bench", threads=1)
    job = RenderJob("", "", "", "", "jsonl", meta["fps"], {}, {}, None, 0.0)
    file_features(x[:SR], "", meta, job)  # warm-up
    c0 = time.process_time()
    feats, _ = file_features(x, "", meta, job)
    predict_file(m, feats["mel"], feats["egemaps"], meta["fps"], chunk=512, pad_mel=feats["mel_pad"])
    render_cpu = time.process_time() - c0
    ends = window_end_times(x.size, FeaturesConfig())
    pick = ends[np.linspace(len(ends) // 2, len(ends) - 1, 8).round().astype(int)]
    c0 = time.process_time()
    egemaps_per_window(x, FeaturesConfig(), pick)
    naive = (time.process_time() - c0) / pick.size * ends.size
    return render_cpu, naive


def concurrent(model: str, seconds: float, chunk_s: float, n: int) -> list[float]:
    """Wall RTF of each of ``n`` processes streaming ``seconds`` of audio at once."""
    root = str(Path(__file__).resolve().parents[1])
    code = "; ".join(
        [
            f"import sys; sys.path.insert(0, {root!r}); from benchmarks.bench_stream import stream_once",
            f"from koemorph.demo.synth import speechlike; x = speechlike({seconds}, seed=1)",
            f"c, w, f = stream_once({model!r}, x, {chunk_s}); print(w / {seconds})",
        ]
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(n)
    ]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def latency(model: str, x: np.ndarray, chunk_s: float) -> dict:
    """:func:`koemorph.inference.live.run` over chunks paced in real time (JSONL into memory)."""
    from koemorph.inference import live
    from koemorph.inference.sinks import JsonlSink
    from koemorph.inference.stream import Streamer

    streamer = Streamer.from_checkpoint(model, threads=1)
    streamer.push(x[:SR])
    streamer.reset()
    n = round(chunk_s * SR)

    def paced():
        start = time.perf_counter()
        for i in range(0, x.size, n):
            time.sleep(max(0.0, start + min(i + n, x.size) / SR - time.perf_counter()))
            yield x[i : i + n], time.perf_counter()

    return live.run(streamer, paced(), [JsonlSink(io.StringIO())], chunk_s, progress=False)


def memory(model: str, minutes: float, chunk_s: float) -> list[tuple[float, float]]:
    """``[(audio minutes, RSS MB)]`` while streaming ``minutes`` of audio (1-minute pieces, looped)."""
    from koemorph.demo.synth import speechlike
    from koemorph.inference.stream import Streamer

    piece = speechlike(60.0, seed=2)
    streamer = Streamer.from_checkpoint(model, threads=1)
    n, points = round(chunk_s * SR), [(0.0, rss_mb())]
    for minute in range(int(minutes)):
        for i in range(0, piece.size, n):
            streamer.push(piece[i : i + n])
        points.append((minute + 1.0, rss_mb()))
    streamer.flush()
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint (default: a default-size model built here)")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio for (a) and (b)")
    ap.add_argument("--chunk-s", type=float, default=0.033)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--memory-minutes", type=float, default=60.0)
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = ap.parse_args()
    from koemorph.demo.synth import speechlike

    x = speechlike(args.seconds, seed=1)
    tmp = tempfile.TemporaryDirectory(prefix="bench_stream-")
    model = args.model or str(build_model(Path(tmp.name) / "model.pt", x, args.set))
    cpu, wall, frames = stream_once(model, x, args.chunk_s)
    render_cpu, naive = offline_baselines(model, x)
    ms, dur = args.chunk_s * 1000, args.seconds
    from koemorph.inference.bundled import describe

    inputs = " + ".join(describe(model)["inputs"])
    print(f"(a) one stream, one core, model inputs {inputs}, {ms:.0f} ms chunks, {dur:.0f} s audio:")
    print(f"    RTF {cpu / dur:.4f} CPU (wall {wall / dur:.4f}), {frames} frames (goal <= 0.1)")
    cpu_100, _, _ = stream_once(model, x, 0.1)
    print(
        f"    with 100 ms chunks (about 3 frames per model call): RTF {cpu_100 / dur:.4f} CPU (goal <= 0.1)"
    )
    print(f"    whole-file render path: RTF {render_cpu / dur:.4f}; streaming costs {cpu / render_cpu:.2f}x")
    print(f"    naive eGeMAPS (openSMILE on the last 20 s every 0.3 s) alone: RTF {naive / dur:.3f}")
    rtfs = concurrent(model, min(dur, 30.0), args.chunk_s, args.streams)
    held = sum(1 / r for r in rtfs)
    print(f"(b) {args.streams} streams at once: wall RTF {', '.join(f'{r:.3f}' for r in rtfs)}")
    print(f"    -> {held:.1f} real-time streams on this machine")
    s = latency(model, x[: round(args.latency_seconds * SR)], args.chunk_s)
    print(f"(c) latency, {ms:.0f} ms chunks in real time: algorithmic {s['algorithmic_ms']} ms")
    print(f"    arrival -> emission p50 {s['latency_p50_ms']} ms, p95 {s['latency_p95_ms']} ms")
    print("    (goal p95 <= lookahead + 50 ms)")
    points = memory(model, args.memory_minutes, args.chunk_s)
    growth = points[-1][1] - points[1][1] if len(points) > 2 else float("nan")
    print(
        f"(d) memory over {args.memory_minutes:.0f} min of streamed audio: RSS {points[1][1]:.0f} MB after"
        f" 1 min, {points[-1][1]:.0f} MB at the end: growth {growth:+.1f} MB (goal < 20 MB)"
    )


if __name__ == "__main__":
    main()
