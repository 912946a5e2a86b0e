"""Benchmark of `koemorph extract` against the original's per-window approach.

Prints, from measurements taken in this one run (machines are noisy, so compare ratios):

1. whole-extraction real-time factor (decode + mel + eGeMAPS + targets + Zarr write) with one
   worker over a generated demo corpus (>= 10 minutes), i.e. per core;
2. the original's approach on the same audio: one openSMILE call per 300 ms update on the
   preceding 20 s (timed on a sample of windows deep into a long signal, then per second of audio),
   plus its per-window mel, and the speed-up;
3. two workers vs one: throughput ratio;
4. a one-hour WAV: RTF (vs the corpus RTF: no quadratic cost) and peak memory of the process;
5. one-pass vs per-window eGeMAPS agreement (median relative difference, worst features).

Usage: python benchmarks/bench_extract.py [--minutes 10] [--long-minutes 60] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
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
from koemorph.config import load_config  # noqa: E402
from koemorph.io.audio import load_audio, write_wav  # noqa: E402


def timed_extract(manifest: Path, store: Path, workers: int) -> tuple[float, float]:
    """(wall seconds of the Dask map alone; CPU seconds summed over tasks). Cluster start-up and each
    worker's one-time cache building (openSMILE objects, ~0.5 s) are excluded: steady state."""
    from koemorph.data.extract import extract_file, plan
    from koemorph.data.manifest import load_manifest
    from pipeline.dask_utils import close_client, dask_client, run_map

    cfg = load_config(None)
    jobs, _ = plan(load_manifest(manifest), store, cfg.features, cfg.data)
    client = dask_client(workers, None)  # the same cluster set-up `koemorph extract` uses
    try:
        client.run(
            lambda: __import__("koemorph.data.extract", fromlist=["warm_up"]).warm_up()
        )  # per-worker caches
        start = time.perf_counter()
        records = list(
            run_map(extract_file, jobs, client, lambda j: j.entry["duration"], f"{workers} worker(s)")
        )
        seconds = time.perf_counter() - start
    finally:
        close_client(client)
    bad = [r for r in records if r.status == "error"]
    assert not bad, bad[:3]
    return seconds, sum(r.cpu_seconds for r in records)


def per_window_cost(signal: np.ndarray, n_windows: int) -> tuple[float, float]:
    """Seconds per 300 ms update the original spends: (openSMILE on the last 20 s, mel of 8.5 s)."""
    import librosa

    from koemorph.features.egemaps import egemaps_per_window

    cfg = load_config(None).features
    ends = 20.0 + 0.3 * np.arange(1, n_windows + 1) * 7.3  # deep in the file: full 20 s contexts
    start = time.process_time()  # CPU time: robust on a busy machine
    egemaps_per_window(signal, cfg, ends)
    smile_s = (time.process_time() - start) / n_windows
    window = signal[: 256 * 533]
    start = time.process_time()
    for _ in range(n_windows):
        librosa.power_to_db(
            librosa.feature.melspectrogram(
                y=window, sr=16000, n_fft=1024, hop_length=533, n_mels=80, fmin=80, fmax=8000
            ),
            ref=np.max,
        )
    mel_s = (time.process_time() - start) / n_windows
    return smile_s, mel_s


def long_file_run(wav: Path, work: Path) -> dict:
    """Extract one long WAV in a fresh process; return its CPU time and peak RSS."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT)!r})
from koemorph.config import load_config
from koemorph.data.manifest import build_manifest, load_manifest
from koemorph.data.extract import plan, extract_file
cfg = load_config(None, ["data.max_duration_mismatch_s=1e9"])
build_manifest({str(wav.parent)!r}, {str(work / "long.jsonl")!r}, cfg.data, include_audio_only=True)
entries = load_manifest({str(work / "long.jsonl")!r})
jobs, _ = plan(entries, {str(work / "long.zarr")!r}, cfg.features, cfg.data)
start = time.process_time()
record = extract_file(jobs[0])
seconds = time.process_time() - start
assert record.status == "ok", record
# VmHWM: this process's own peak (ru_maxrss would carry the parent's peak over the exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"seconds": seconds, "peak_mb": int(hwm.split()[1]) / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="demo corpus size")
    parser.add_argument("--long-minutes", type=float, default=60.0, help="length of the long-file run")
    parser.add_argument("--windows", type=int, default=12, help="per-window openSMILE calls to time")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_extract_"))

    from koemorph.data.manifest import build_manifest, load_manifest
    from koemorph.demo.corpus import generate_corpus

    corpus = work / "demo"
    generate_corpus(corpus, minutes=args.minutes, seed=0, workers=2)
    manifest = work / "demo.jsonl"
    build_manifest(corpus, manifest, load_config(None).data)
    entries = load_manifest(manifest)
    audio_s = sum(e.duration for e in entries)
    print(f"corpus: {len(entries)} files, {audio_s / 60:.1f} min of audio")

    one, one_cpu = timed_extract(manifest, work / "w1.zarr", 1)
    two, _ = timed_extract(manifest, work / "w2.zarr", 2)
    rtf, rtf_cpu = one / audio_s, one_cpu / audio_s

    signal = np.concatenate([load_audio(e.audio_path) for e in entries])
    smile_s, mel_s = per_window_cost(signal, args.windows)
    rtf_orig = smile_s / 0.3  # one openSMILE call per 300 ms of audio
    rtf_orig_mel = mel_s * grid.DEFAULT_FPS  # the original also recomputes an 8.5 s mel per frame
    print("\n== whole extraction, per worker (core) ==")
    print(
        f"koemorph extract, 1 worker:        RTF {rtf:.4f} wall, {rtf_cpu:.4f} CPU"
        f"   ({one:.1f} s for {audio_s:.0f} s)"
        "   goal <= 0.02"
    )
    print(
        f"original eGeMAPS, per-window call: RTF {rtf_orig:.3f}   ({smile_s * 1000:.0f} ms per 300 ms update)"
    )
    print(f"speed-up vs per-window openSMILE:  {rtf_orig / rtf_cpu:.0f}x (CPU vs CPU)   goal >= 25x")
    print(
        f"(original mel per output frame:    RTF {rtf_orig_mel:.3f}, {mel_s * 1000:.1f} ms per 8.5 s window)"
    )
    print(f"2 workers vs 1:                    {one / two:.2f}x throughput   goal >= 1.6x")

    long_dir = work / "long"
    n_long = int(args.long_minutes * 60 * grid.SAMPLE_RATE)
    write_wav(long_dir / "long.wav", np.resize(signal, n_long))
    res = long_file_run(long_dir / "long.wav", work)
    long_rtf = res["seconds"] / (n_long / grid.SAMPLE_RATE)
    print(f"\n== one {args.long_minutes:.0f}-minute WAV, 1 process ==")
    print(
        f"RTF {long_rtf:.4f} CPU ({long_rtf / rtf_cpu:.2f}x the corpus CPU RTF: ~1 means no quadratic cost)"
    )
    print(f"peak memory {res['peak_mb']:.0f} MB   goal < 2048 MB")

    print("\n== one-pass vs per-window eGeMAPS agreement ==")
    from benchmarks.bench_egemaps import agreement_report

    agreement_report(signal[: 120 * grid.SAMPLE_RATE], n_windows=24)
    print(
        f"\n(work dir: {work}; peak RSS of this driver"
        f" {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
    )


if __name__ == "__main__":
    main()
