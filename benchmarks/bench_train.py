"""Training throughput of both networks and the data pipeline against per-window recomputation (issue 4).

    python benchmarks/bench_train.py [--store /tmp/demo10.zarr] [--manifest /tmp/demo10.jsonl]
                                     [--steps 60] [--windows 24] [--threads 2] [--workers 0]

Everything comes from ONE run on the store's train split with the default config (sampling mode
``mixed``: dense blocks of 32 frames and sparse blocks of 256 frames with a target every 32).

1. Data pipeline: every batch of the first epochs is produced by the training loader
   (:class:`koemorph.training.batches.BlockDataset` + :func:`koemorph.training.batches.make_loader`,
   whole normalised files
   loaded once from the Zarr store), without training. The one-time load is timed too and charged
   to one epoch. Printed: blocks/s (a block = one window of context shared by its targets) and
   target frames/s. Also the same blocks read chunk by chunk from Zarr (``in_memory=False``).
2. The original's way: for each of ``--windows`` target frames (spread over the same epoch's
   targets), the log-mel of the 8.53 s window ending at that frame (``librosa.feature.melspectrogram``,
   n_fft 1024, hop 533, 80 mels, 80-8000 Hz, ``power_to_db(ref=max)``) and eGeMAPS (openSMILE
   eGeMAPSv02 functionals) over its 20 s context: ONE ``process_signal`` call per window, a lower bound
   (the original's offline path made 29 calls per window on a growing buffer). Audio is decoded
   once per file beforehand and not charged. One window = one supervised frame there, so the ratio
   that matters is cache target frames/s over original windows/s; cache blocks/s over it is printed too.
3. Training: real optimiser steps (:func:`koemorph.training.step.train_step`, AdamW, default config,
   decoder bias at the train mean pose) for each model, batches in the training order, timed exactly
   as ``koemorph train`` does (``StepMeter``: wait = time blocked on the loader plus the voice
   augmentation of the batch, :mod:`koemorph.training.augment`; step = wait + compute).
   Printed: windows/s (blocks), target frames/s, the share of step time spent waiting for data
   (goal < 10%), and CPU seconds per step (robust on a shared machine).
4. Data parallel (only this, with ``--ranks 1,2``): ``koemorph train`` under torchrun on 1 and 2 ranks,
   one torch thread each, ``--minutes`` of training per run (``--device cuda`` on a GPU machine: one GPU
   per rank, NCCL). Printed: windows/s of each run (summed over its ranks), the ratio to 1 process,
   and each rank's data-wait share.

    PYTHONPATH=$PWD python benchmarks/bench_train.py --store STORE --ranks 1,2 [--minutes 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from koemorph import grid
from koemorph.config import load_config
from koemorph.data.cache import FeatureCache
from koemorph.model.windows import spans
from koemorph.training.batches import BlockDataset, make_loader
from koemorph.training.sampling import Sampler

CACHE_GOAL, WAIT_GOAL = 100.0, 0.10


def cpu_s() -> float:
    """CPU seconds of this process and its reaped children (DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pipeline(dataset: BlockDataset, sampler: Sampler, epochs: int, workers: int) -> dict:
    """Blocks and target frames per second out of the training loader over ``epochs`` epochs."""
    blocks = frames = 0
    w0, c0 = time.perf_counter(), cpu_s()
    for epoch in range(epochs):
        for batch in make_loader(dataset, sampler.batches(epoch), workers, seed=epoch):
            blocks += len(batch["mel"])
            frames += int(batch["mask"].sum())
    wall, cpu = time.perf_counter() - w0, cpu_s() - c0
    return {"blocks": blocks, "frames": frames, "wall": wall, "cpu": cpu}


def original_windows(
    cache: FeatureCache, manifest: str, ids: list[str], targets: list[tuple[int, int]], cfg
) -> dict:
    """Time the per-window recomputation for ``targets`` ``[(file index, frame)]``."""
    import librosa

    from koemorph.data.manifest import load_manifest
    from koemorph.features.egemaps import _plain_smile
    from koemorph.io.audio import load_audio

    paths = {e.id: e.audio_path for e in load_manifest(manifest)}
    audio = {f: load_audio(paths[ids[f]]) for f in {f for f, _ in targets}}
    hop = grid.SAMPLE_RATE // cfg.features.fps  # 533 at 30 fps, as the original
    mel_len = int(round(cfg.model.context_s * cfg.features.fps)) * hop  # 136,448 samples
    ege_len = int(cfg.features.egemaps_context_s * grid.SAMPLE_RATE)
    smile = _plain_smile()
    warm = np.random.default_rng(0).standard_normal(mel_len).astype(np.float32) * 0.1
    librosa.feature.melspectrogram(
        y=warm, sr=grid.SAMPLE_RATE, n_fft=1024, hop_length=hop, n_mels=80, fmin=80, fmax=8000
    )  # warm-up (filterbank, FFT plans), not timed
    smile.process_signal(warm, grid.SAMPLE_RATE)

    def ending_at(x: np.ndarray, end: int, n: int) -> np.ndarray:
        seg = x[max(0, end - n) : end]
        return np.concatenate([np.zeros(n - len(seg), np.float32), seg]) if len(seg) < n else seg

    w0, c0 = time.perf_counter(), cpu_s()
    for f, frame in targets:
        x = audio[f]
        end = min(len(x), (frame + 1) * hop)
        mel = librosa.feature.melspectrogram(
            y=ending_at(x, end, mel_len),
            sr=grid.SAMPLE_RATE,
            n_fft=1024,
            hop_length=hop,
            n_mels=80,
            fmin=80,
            fmax=8000,
        )
        mel = (librosa.power_to_db(mel, ref=np.max) + 80.0) / 80.0
        seg = x[max(0, end - ege_len) : end]
        seg = seg / max(1e-9, float(np.abs(seg).max()))  # the original peak-normalised each call
        smile.process_signal(seg, grid.SAMPLE_RATE)
    return {"windows": len(targets), "wall": time.perf_counter() - w0, "cpu": cpu_s() - c0}


def training(
    kind,  # a model kind (default config), or a whole Config
    cache: FeatureCache,
    dataset: BlockDataset,
    sampler: Sampler,
    steps: int,
    warmup: int,
    workers: int,
) -> dict:
    """Real training steps of ``kind``; the first ``warmup`` are not counted."""
    from koemorph.model import build_model, count_parameters
    from koemorph.training import augment
    from koemorph.training.checkpoint import seed_everything
    from koemorph.training.diagnostics import StepMeter
    from koemorph.training.step import train_step

    base = load_config(None) if isinstance(kind, str) else kind  # a model kind, or a whole config
    kind = kind if isinstance(kind, str) else base.model.kind
    cfg = replace(
        base, model=replace(base.model, kind=kind), sampling=replace(base.sampling, num_workers=workers)
    )
    seed_everything(0)
    model = build_model(cfg.model, cfg.features, n_mels=cache.n_mels, n_egemaps=cache.n_egemaps)
    model.decoder.init_bias(np.concatenate([cache.load(i)["targets"] for i in cache.ids("train")]).mean(0))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.optim.lr,
    )
    model.train()
    meter, done, epoch, cpu = StepMeter(), 0, 0, 0.0
    while done < warmup + steps:
        loader = make_loader(dataset, sampler.batches(epoch), workers, seed=epoch)
        t_wait = time.perf_counter()
        for bi, batch in enumerate(loader):
            if augment.enabled(cfg.augment):  # as koemorph.training.loop does: part of the data wait
                batch = augment.augment_batch(batch, augment.batch_rng(0, epoch, bi), cfg.augment, cache)
            wait = time.perf_counter() - t_wait
            c0 = cpu_s()
            train_step(model, batch, optimizer, cfg, torch.device("cpu"))
            if done >= warmup:
                cpu += cpu_s() - c0
                meter.add({}, wait, time.perf_counter() - t_wait, len(batch["mel"]), int(batch["mask"].sum()))
            done += 1
            if done >= warmup + steps:
                break
            t_wait = time.perf_counter()
        epoch += 1
    return {**meter.totals(), "params": count_parameters(model), "cpu_per_step": cpu / steps}


def data_parallel(store: str, ranks: list[int], minutes: float, device: str, tmp: Path) -> None:
    """``koemorph train`` on 1, 2, ... ranks (torchrun, ``train.threads=1`` each, per-rank batch as
    configured so the global batch grows with the ranks) for ``minutes`` each: windows/s of the whole
    run (the sum over its ranks, which step in lockstep), the ratio to 1 process, and each rank's
    data-wait share, from ``summary.json``."""
    base = None
    print(f"data parallel: {minutes} min of training per run, device {device}, one torch thread per rank")
    for n in ranks:
        out = tmp / f"ranks{n}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
        cmd += ["-m", "cli.main", "train", "--store", store, "--out", str(out), "--max-minutes", str(minutes)]
        cmd += ["--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--params", str(tmp / "none.yaml")]
        for kv in ("train.threads=1", f"train.device={device}", "train.val_every=100000"):
            cmd += ["--set", kv]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((out / "summary.json").read_text())
        per_rank = summary.get("throughput_ranks", [summary["throughput"]])
        wps = sum(r["windows_per_s"] for r in per_rank)
        base = base or wps
        waits = ", ".join(f"rank {i} {100 * r['data_wait_share']:.1f}%" for i, r in enumerate(per_rank))
        print(
            f"  {n} process{'es' if n > 1 else '  '}: {wps:7.1f} windows/s ({summary['steps']} steps), "
            f"x{wps / base:.2f} of 1 process; data wait: {waits}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="/tmp/demo10.zarr")
    ap.add_argument("--manifest", default="/tmp/demo10.jsonl", help="for the audio of the original's way")
    ap.add_argument("--steps", type=int, default=60, help="timed training steps per model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps per model")
    ap.add_argument("--windows", type=int, default=24, help="windows recomputed the original's way")
    ap.add_argument("--epochs", type=int, default=20, help="loader epochs timed without training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (sampling.num_workers)")
    ap.add_argument("--ranks", default="", help="e.g. 1,2: only the data-parallel comparison (torchrun)")
    ap.add_argument("--minutes", type=float, default=1.0, help="training time per data-parallel run")
    ap.add_argument("--device", default="cpu", help="train.device of the data-parallel runs (cpu | cuda)")
    ap.add_argument("--recipe", default="", help="a params YAML whose model is timed too (e.g. with phones)")
    args = ap.parse_args()
    if args.ranks:
        with tempfile.TemporaryDirectory() as tmp:
            ranks = [int(n) for n in args.ranks.split(",")]
            data_parallel(args.store, ranks, args.minutes, args.device, Path(tmp))
        return
    torch.set_num_threads(args.threads)
    cfg = load_config(None)
    geometry = spans(cfg.model, cfg.features)

    w0, c0 = time.perf_counter(), cpu_s()
    cache = FeatureCache.for_features(args.store, cfg.features)
    ids = cache.ids("train")
    for fid in ids:
        cache.load(fid)
    load = {"wall": time.perf_counter() - w0, "cpu": cpu_s() - c0}
    dataset = BlockDataset(cache, ids, geometry.context, geometry.lookahead, geometry.emotion_context)
    sampler = Sampler([cache.num_frames(i) for i in ids], cfg.sampling, cfg.train.seed, cfg.train.epochs)
    minutes = sum(cache.num_frames(i) for i in ids) / cache.fps / 60
    per_epoch = sampler.steps(0)
    print(
        f"store {args.store}: {len(ids)} train files, {minutes:.1f} min; {per_epoch} batches per epoch "
        f"(sampling {cfg.sampling.mode}); torch threads {args.threads}, loader workers {args.workers}"
    )

    # ---------------------------------------------------------------- data pipeline
    mem = pipeline(dataset, sampler, args.epochs, args.workers)
    epoch_wall = mem["wall"] / args.epochs
    mem_bps, mem_fps = mem["blocks"] / mem["wall"], mem["frames"] / mem["wall"]
    with_load = mem["frames"] / args.epochs / (epoch_wall + load["wall"])
    lazy_cache = FeatureCache.for_features(args.store, cfg.features, in_memory=False)
    lazy = pipeline(
        BlockDataset(lazy_cache, ids, geometry.context, geometry.lookahead, geometry.emotion_context),
        sampler,
        1,
        args.workers,
    )
    targets = [(b.file, fr) for batch in sampler.batches(0) for b in batch for fr in b.frames]
    pick = np.linspace(0, len(targets) - 1, args.windows).round().astype(int)
    orig = original_windows(cache, args.manifest, ids, [targets[i] for i in pick], cfg)
    orig_wps = orig["windows"] / orig["wall"]
    print("\ndata pipeline (no training)")
    print(
        f"  cache, whole files in memory : {mem_bps:10.0f} blocks/s {mem_fps:10.0f} target frames/s "
        f"({mem['blocks']} blocks, {args.epochs} epochs, {mem['wall']:.2f} s wall, {mem['cpu']:.2f} s CPU)"
    )
    print(
        f"    one-time load of {len(ids)} files from Zarr: {load['wall']:.2f} s wall; with it charged to one "
        f"epoch: {with_load:.0f} target frames/s"
    )
    print(
        f"  cache, Zarr chunks per block : {lazy['blocks'] / lazy['wall']:10.0f} blocks/s "
        f"{lazy['frames'] / lazy['wall']:10.0f} target frames/s (1 epoch, {lazy['wall']:.2f} s)"
    )
    print(
        f"  original, per-window librosa mel (8.53 s) + 1 openSMILE call (20 s): {orig_wps:.1f} windows/s "
        f"({orig['windows']} windows, {orig['wall']:.2f} s wall, {orig['cpu']:.2f} s CPU)"
    )
    ratio = mem_fps / orig_wps
    print(
        f"  cache / original: {ratio:.0f}x per supervised frame (goal >= {CACHE_GOAL:.0f}x: "
        f"{'MET' if ratio >= CACHE_GOAL else 'NOT MET'}); {mem_bps / orig_wps:.0f}x per block; "
        f"{lazy['frames'] / lazy['wall'] / orig_wps:.0f}x reading Zarr per block"
    )

    # ---------------------------------------------------------------- training steps
    print(f"\ntraining ({args.steps} timed steps per model after {args.warmup} untimed, default config)")
    base = None
    for kind in ("dual_stream", "simplified"):
        res = training(kind, cache, dataset, sampler, args.steps, args.warmup, args.workers)
        base = base or res
        share = res["data_wait_share"]
        print(
            f"  {kind:12s} {res['params']:>9,} params: {res['windows_per_s']:7.1f} windows/s "
            f"{res['frames_per_s']:8.1f} target frames/s, data wait {100 * share:.2f}% of step time "
            f"(goal < {100 * WAIT_GOAL:.0f}%: {'MET' if share < WAIT_GOAL else 'NOT MET'}), "
            f"{res['cpu_per_step']:.3f} CPU s/step"
        )
    if args.recipe:
        recipe(args, sampler, base)


def recipe(args, sampler, base: dict) -> None:
    """The dual-stream model as ``--recipe`` (a params YAML) configures it, on the same store and the
    same batches, against the default dual-stream run (ratio of windows/s and of CPU s per step)."""
    cfg = load_config(args.recipe)
    geometry = spans(cfg.model, cfg.features)
    cache = FeatureCache.for_features(args.store, cfg.features)
    ids = cache.ids("train")
    dataset = BlockDataset(cache, ids, geometry.context, geometry.lookahead, geometry.emotion_context)
    res = training(cfg, cache, dataset, sampler, args.steps, args.warmup, args.workers)
    print(
        f"  {args.recipe}: {res['params']:>9,} params: {res['windows_per_s']:7.1f} windows/s, "
        f"x{res['windows_per_s'] / base['windows_per_s']:.2f} of the default dual-stream; "
        f"{res['cpu_per_step']:.3f} CPU s/step (x{res['cpu_per_step'] / base['cpu_per_step']:.2f})"
    )


if __name__ == "__main__":
    main()
