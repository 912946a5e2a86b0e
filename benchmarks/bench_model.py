"""Forward+backward time of one training batch, both networks, default config (CPU).

``python benchmarks/bench_model.py [--threads 2] [--reps 6] [--fps 30]``: a dense batch (B=8, S=32,
all positions, smoothing on) and a sparse batch (B=8, S=256, 8 positions each); prints the parameter
count, min / median wall seconds over ``reps`` after one warm-up, and the minimum CPU seconds (all
threads; on a machine shared with other jobs wall time inflates, CPU time / threads much less).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from koemorph.config import FeaturesConfig, ModelConfig
from koemorph.model import build_model, count_parameters


def batch(spans, b: int, span: int, n: int, gen: torch.Generator):
    mel = torch.randn(b, span + spans.context - 1 + spans.lookahead, 80, generator=gen)
    eg = torch.randn(b, span + spans.emotion_context - 1, 88, generator=gen)
    stride = span // n
    pos = torch.arange(n) * stride + torch.randint(0, stride, (b, 1), generator=gen)
    return mel, eg, pos


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--fps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    for kind in ("dual_stream", "simplified"):
        model = build_model(ModelConfig(kind=kind), FeaturesConfig(fps=args.fps)).train()
        print(f"{kind}: {count_parameters(model):,} parameters, spans {model.spans}")
        for name, (span, n), smooth in (("dense", (32, 32), True), ("sparse", (256, 8), False)):
            mel, eg, pos = batch(model.spans, 8, span, n, gen)
            times, cpu = [], []
            for _ in range(args.reps + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                out = model(mel, eg, pos, smooth=smooth)
                out["blendshapes"].square().mean().backward()
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                model.zero_grad(set_to_none=True)
            times, cpu = times[1:], cpu[1:]
            print(
                f"  {name:6s} B=8 S={span} n={n}: wall min {min(times):.3f} s, median "
                f"{statistics.median(times):.3f} s; CPU time min {min(cpu):.3f} s"
            )


if __name__ == "__main__":
    main()
