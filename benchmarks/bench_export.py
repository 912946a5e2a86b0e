"""Whole-file inference speed: onnxruntime on the exported block graph against PyTorch, in one run.

``python benchmarks/bench_export.py [--seconds 60] [--threads 1] [--reps 3] [--kind dual_stream]
[--no-egemaps]``: a default-config model with random weights (speed does not depend on training),
random normalised features for ``--seconds`` of audio at 30 fps, blocks of 512 frames as
``koemorph render`` runs them. Prints, per runtime, the best wall time over ``reps`` (after a warm-up),
the CPU seconds per audio second, the ratio ONNX / PyTorch, and the largest output difference.
PyTorch runs its dense-block shortcut (:mod:`koemorph.model.dense`); the exported graph runs the
generic attention path (a static graph cannot take the data-dependent shortcut).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from koemorph.config import load_config
from koemorph.inference.export import export_model, load_onnx, predict_file_onnx
from koemorph.model import build_model
from koemorph.model.infer import predict_file


def timed(fn, reps: int) -> tuple[float, float, np.ndarray]:
    """``(best wall s, its CPU s, last output)`` over ``reps`` calls after one warm-up call."""
    out = fn()
    best = (float("inf"), 0.0)
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best[0], best[1], out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kind", default="dual_stream")
    ap.add_argument("--no-egemaps", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ege = not args.no_egemaps
    cfg = load_config(None, [f"model.kind={args.kind}", f"features.egemaps={str(ege).lower()}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.features, n_egemaps=88 if ege else 0).eval()
    stats = {"mel": {"mean": [-50.0] * 80, "std": [20.0] * 80}}
    if ege:
        stats["egemaps"] = {"mean": [0.0] * 88, "std": [1.0] * 88}
    meta = {"config": cfg, "stats": stats, "fps": 30, "sha256": None}
    n = int(args.seconds * 30)
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(n, 80)).astype(np.float32)
    eg = np.repeat(rng.normal(size=(-(-n // 9), 88)), 9, 0)[:n].astype(np.float32) if ege else None
    pad = np.full(80, -2.5, np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        session = load_onnx(export_model(model, meta, Path(tmp) / "m.onnx"), threads=args.threads)
        print(
            f"{args.kind}, eGeMAPS {'on' if ege else 'off'}, {args.seconds:.0f} s of audio, "
            f"{args.threads} thread(s)"
        )
        print(f"  export + session: {time.perf_counter() - t0:.1f} s")
        wt, ct, yt = timed(lambda: predict_file(model, mel, eg, 30, chunk=512, pad_mel=pad), args.reps)
        wo, co, yo = timed(lambda: predict_file_onnx(session, mel, eg, 30, chunk=512, pad_mel=pad), args.reps)
    for name, wall, cpu in (("pytorch", wt, ct), ("onnxruntime", wo, co)):
        print(f"  {name:12s} wall {wall:.2f} s, {cpu / args.seconds:.4f} CPU s per audio s")
    print(
        f"  onnxruntime / pytorch: wall {wo / wt:.2f}x, CPU {co / ct:.2f}x; "
        f"max |difference| {np.abs(yo - yt).max():.2e}"
    )


if __name__ == "__main__":
    main()
