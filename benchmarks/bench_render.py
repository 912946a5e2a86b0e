"""Benchmark of `koemorph render`: real-time factors, the naive per-frame baseline, long-file memory.

Prints, from measurements taken in this one run (the machine is shared: compare ratios, and CPU
times rather than wall times where both are given; the load average is printed at start and end):

1. whole render (decode + the model's features + model + JSONL write) of a >= 10-minute demo corpus
   with 2 Dask workers: wall RTF of the map (cluster start and per-worker warm-up excluded, shown
   apart); goal <= 0.05; beside it the ideal, (features + model CPU RTF) / workers;
2. per audio second, CPU seconds, 1 torch thread, on the same audio, in this process (started again
   with the render workers' malloc settings, ``WORKER_MALLOC_ENV``: with glibc's defaults each large
   tensor of a block is faulted in afresh, about +30% on the model): features (log-mel alone and
   all of the model's features, as a worker computes them), the model alone (``predict_file`` on the
   normalised features, render chunk, file by file after each file's features) with its goal
   <= 0.01, the same frames joined into one file (no feature extraction in between), and
   ``predict_file`` as the render ran it before the dense attention shortcut (generic path,
   blocks of 64 frames);
3. naive per-frame inference (``predict_file_naive``: one forward pass per output frame over its
   whole window, plain softmax attention) timed on a subset and extrapolated to the same audio,
   and the speed-ups;
4. one long WAV (default 60 min) and a 10-min WAV rendered by ``render_file`` in fresh processes
   (with the workers' malloc settings): peak RSS of each and the growth per hour (goal < 2 GB for
   the hour; flat in file length).

The model is the default dual-stream network, untrained (``build_model``; timing does not depend on
the weights), normalised with stats from the corpus; or ``--model CHECKPOINT``.

Usage: python benchmarks/bench_render.py [--minutes 10] [--long-minutes 60] [--work DIR] [--model PT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from koemorph import grid  # noqa: E402
from koemorph.io.audio import load_audio, write_wav  # noqa: E402


def default_checkpoint(path: Path, wavs: list[Path]) -> Path:
    """An untrained default model, saved with feature stats from a few corpus files."""
    import torch

    from koemorph.config import load_config
    from koemorph.features.egemaps import egemaps
    from koemorph.features.mel import log_mel
    from koemorph.model import build_model
    from koemorph.training.checkpoint import save_untrained

    cfg = load_config(None)
    values: dict[str, list] = {"mel": [], **({"egemaps": []} if cfg.features.egemaps else {})}
    for wav in wavs[:4]:
        x = load_audio(wav)
        values["mel"].append(log_mel(x, cfg.features))
        if cfg.features.egemaps:
            values["egemaps"].append(egemaps(x, cfg.features)[1])  # the windows, not the held frames
    stats = {
        name: {
            "mean": np.concatenate(a).mean(0).tolist(),
            "std": np.maximum(np.concatenate(a).std(0), 1e-5).tolist(),
        }
        for name, a in values.items()
    }
    torch.manual_seed(0)
    return save_untrained(path, build_model(cfg.model, cfg.features), cfg, stats)


def dask_render(corpus: Path, out: Path, ckpt: Path, workers: int) -> dict:
    """Render the corpus on a LocalCluster; wall seconds of start-up and of the map, CPU seconds per task."""
    from koemorph.inference.models import resolve_model
    from koemorph.inference.render import plan, render_file
    from pipeline.dask_utils import close_client, dask_client, run_map
    from pipeline.render import _preload

    ref = resolve_model(str(ckpt), out)
    jobs, _ = plan(corpus, out, ref, threads=1)
    start = time.perf_counter()
    client = dask_client(workers, None)
    client.run(_preload, ref.path, ref.sha256)
    startup = time.perf_counter() - start
    try:
        start = time.perf_counter()
        records = list(run_map(render_file, jobs, client, lambda j: j.duration, f"render, {workers} workers"))
        wall = time.perf_counter() - start
    finally:
        close_client(client)
    bad = [r for r in records if r.status != "ok"]
    assert not bad, bad[:3]
    return {
        "startup": startup,
        "wall": wall,
        "cpu": sum(r.cpu_seconds for r in records),
        "audio": sum(r.duration for r in records),
        "files": len(records),
    }


def model_alone(ckpt: Path, wavs: list[Path], naive_frames: int) -> dict:
    """CPU seconds per audio second of the features, predict_file (dense shortcut on and off) and
    predict_file_naive (on a subset, extrapolated), all on the same audio with 1 torch thread."""
    import torch

    from koemorph.features.mel import log_mel
    from koemorph.inference.render import RenderJob, file_features
    from koemorph.model import dense
    from koemorph.model.infer import predict_file, predict_file_naive
    from koemorph.training.checkpoint import load_model

    torch.set_num_threads(1)
    model, meta = load_model(ckpt)
    job = RenderJob("", "", "", "", "jsonl", meta["fps"], {}, {}, None, 0.0)
    cpu = {"mel": 0.0, "features": 0.0, "model": 0.0, "model_long": 0.0, "generic": 0.0}
    feats, audio_s = [], 0.0

    def timed(name, fn):
        start = time.process_time()
        out = fn()
        cpu[name] += time.process_time() - start
        return out

    timed("mel", lambda: log_mel(load_audio(wavs[0])[:16000], meta["config"].features))  # imports, filterbank
    cpu["mel"] = 0.0
    for wav in wavs:
        x = load_audio(wav)
        audio_s += x.size / grid.SAMPLE_RATE
        timed("mel", lambda x=x: log_mel(x, meta["config"].features))
        f, _ = timed("features", lambda x=x: file_features(x, "", meta, job))
        timed(
            "model",
            lambda f=f: predict_file(
                model, f["mel"], f["egemaps"], meta["fps"], chunk=job.chunk, pad_mel=f["mel_pad"]
            ),
        )
        feats.append(f)
    joined = {  # one 10-min "file" (a model without eGeMAPS has None for them)
        k: None if feats[0][k] is None else np.concatenate([f[k] for f in feats]) for k in ("mel", "egemaps")
    }
    timed(
        "model_long",
        lambda: predict_file(
            model, joined["mel"], joined["egemaps"], meta["fps"], chunk=job.chunk, pad_mel=feats[0]["mel_pad"]
        ),
    )
    shift = dense.DenseWindow.shift
    dense.DenseWindow.shift = lambda *args: None  # every block through the generic (softmax) attention path
    try:
        for f in feats:  # as render ran before the shortcut: generic path, blocks of 64 frames
            timed(
                "generic",
                lambda f=f: predict_file(
                    model, f["mel"], f["egemaps"], meta["fps"], chunk=64, pad_mel=f["mel_pad"]
                ),
            )
        f = max(feats, key=lambda f: len(f["mel"]))
        n = min(naive_frames, len(f["mel"]))
        start = time.process_time()
        ege = None if f["egemaps"] is None else f["egemaps"][:n]
        predict_file_naive(model, f["mel"][:n], ege, meta["fps"], pad_mel=f["mel_pad"])
        naive_per_frame = (time.process_time() - start) / n
    finally:
        dense.DenseWindow.shift = shift
    frames = sum(len(f["mel"]) for f in feats)
    out = {k: v / audio_s for k, v in cpu.items()}
    out.update(audio=audio_s, naive=naive_per_frame * frames / audio_s, naive_frames=n, chunk=job.chunk)
    return out


def fresh_process_render(wav: Path, ckpt: Path, out: Path) -> dict:
    """render_file on one WAV in a new process: CPU seconds and peak RSS (MB)."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from koemorph.inference.models import resolve_model
from koemorph.inference.render import plan, render_file
ref = resolve_model({str(ckpt)!r}, {str(out)!r})
jobs, _ = plan(Path({str(wav.parent)!r}), Path({str(out)!r}), ref)
start = time.process_time()
record = render_file(jobs[0])
assert record.status == "ok", record
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]  # ru_maxrss survives fork+exec
peak = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"cpu": time.process_time() - start, "frames": record.frames, "peak_mb": peak}}))
"""
    from pipeline.dask_utils import WORKER_MALLOC_ENV

    env = {**os.environ, **WORKER_MALLOC_ENV}  # as in a render worker
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    from pipeline.dask_utils import WORKER_MALLOC_ENV

    if any(os.environ.get(k) != v for k, v in WORKER_MALLOC_ENV.items()):  # glibc reads them at start-up
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **WORKER_MALLOC_ENV})
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="demo corpus size")
    parser.add_argument("--long-minutes", type=float, default=60.0, help="length of the long-file run")
    parser.add_argument("--naive-frames", type=int, default=150, help="frames timed with predict_file_naive")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--model", type=Path, default=None, help="checkpoint (default: untrained default model)"
    )
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_render_"))

    from koemorph.demo.corpus import generate_corpus

    corpus = work / "demo"
    generate_corpus(corpus, minutes=args.minutes, seed=0, workers=2)
    wavs = sorted(corpus.rglob("*.wav"))
    ckpt = args.model or default_checkpoint(work / "untrained.pt", wavs)

    load = os.getloadavg()
    run = dask_render(corpus, work / f"out{args.workers}", ckpt, args.workers)
    print(f"corpus: {run['files']} files, {run['audio'] / 60:.1f} min of audio; model {ckpt}")
    alone = model_alone(ckpt, wavs, args.naive_frames)
    rtf = run["wall"] / run["audio"]
    print(f"\n== whole render, {args.workers} Dask workers (decode, features, model, JSONL) ==")
    print(
        f"wall RTF {rtf:.4f}   goal <= 0.05   ({run['wall']:.1f} s for {run['audio']:.0f} s of audio; "
        f"cluster start + worker warm-up {run['startup']:.1f} s not included)"
    )
    print(
        f"CPU per audio second, all tasks: {run['cpu'] / run['audio']:.4f}; ideal wall RTF "
        f"(features + model) / {args.workers} = {(alone['features'] + alone['model']) / args.workers:.4f}"
    )
    print(f"\n== per audio second, CPU seconds, 1 thread, same audio (chunk {alone['chunk']}) ==")
    print(f"features: log-mel alone                    {alone['mel']:.4f}")
    from koemorph.inference.bundled import describe

    inputs = ", ".join(describe(ckpt)["inputs"])
    print(f"features: all the model's (as render)      {alone['features']:.4f}   ({inputs})")
    print(f"model alone, predict_file                  {alone['model']:.4f}   goal <= 0.01")
    print(f"  the same frames as one file, no features {alone['model_long']:.4f}   (blocks back to back)")
    print(
        f"predict_file as before (generic, chunk 64) {alone['generic']:.4f}   ("
        f"{alone['generic'] / alone['model']:.1f}x the model alone above)"
    )
    print(
        f"naive per-frame inference                  {alone['naive']:.4f}   (timed on "
        f"{alone['naive_frames']} frames, extrapolated)"
    )
    print(f"predict_file vs naive:                     {alone['naive'] / alone['model']:.1f}x faster")
    whole_cpu = run["cpu"] / run["audio"]
    print(f"whole render vs naive model alone:         {alone['naive'] / whole_cpu:.1f}x (CPU vs CPU)")

    signal = np.concatenate([load_audio(w) for w in wavs])
    results = {}
    for minutes in sorted({10.0, args.long_minutes}):
        folder = work / f"long{minutes:g}"
        write_wav(folder / "long.wav", np.resize(signal, int(minutes * 60 * grid.SAMPLE_RATE)))
        results[minutes] = fresh_process_render(folder / "long.wav", ckpt, work / f"out_long{minutes:g}")
        print(f"\n== one {minutes:g}-minute WAV, fresh process (render_file) ==")
        r = results[minutes]
        print(f"CPU RTF {r['cpu'] / (minutes * 60):.4f}; peak memory {r['peak_mb']:.0f} MB   goal < 2048 MB")
    if len(results) == 2:
        (m0, r0), (m1, r1) = sorted(results.items())
        print(f"growth: {(r1['peak_mb'] - r0['peak_mb']) / ((m1 - m0) / 60):.0f} MB per hour of audio")
    print(
        f"\n(work dir: {work}; peak RSS of this driver"
        f" {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
    )
    end = os.getloadavg()
    print(
        f"load average (1, 5, 15 min): at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
        f"at end {end[0]:.1f} {end[1]:.1f} {end[2]:.1f}; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
