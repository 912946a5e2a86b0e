"""The state of one ``koemorph train`` run and how it is set up (config, checkpoint, data, model,
optimiser, MLflow run); :mod:`koemorph.training.loop` advances it."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from koemorph.config import ADDED_KEYS, Config, FeaturesConfig, flatten, load_config, to_dict
from koemorph.data.cache import FeatureCache
from koemorph.model import build_model
from koemorph.model.windows import spans
from koemorph.training import distributed
from koemorph.training.batches import BlockDataset
from koemorph.training.checkpoint import load_checkpoint, seed_everything, set_rng_state
from koemorph.training.diagnostics import GradientWarnings, StepMeter
from koemorph.training.losses import channel_scale
from koemorph.training.outputs import read_epoch_rows
from koemorph.training.sampling import Sampler
from koemorph.training.schedule import lr_at, pick_device
from koemorph.training.tracking import Tracker, resolve_uri


@dataclass
class TrainState:
    """One training run: what :func:`setup` builds and the loop advances.

    ``(epoch, batch)`` is the next batch to run, ``step`` the optimiser steps done (a resumed run's
    included); ``best``/``bad`` the best monitored value and the validations since it improved;
    ``schedule`` holds ``horizon`` (the steps the cosine spans), ``replanned`` and ``elapsed_s``
    (saved in checkpoints); ``clock`` (seconds) measures the budget from ``t_start``, which a
    resumed run sets back by the time already spent.
    """

    cfg: Config
    out: Path
    store: Path
    cache: FeatureCache
    train_ids: list[str]
    val_ids: list[str]
    dataset: BlockDataset
    sampler: Sampler
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scale: torch.Tensor | None  # [52] per-channel error scale of the loss
    planned: int  # steps of train.epochs epochs
    schedule: dict
    tracker: Tracker
    console: Console
    clock: Callable[[], float]
    resumed: bool = False
    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float | None = None
    bad: int = 0
    t_start: float = 0.0
    t_last_val: float = 0.0
    last_loss: float = float("nan")
    last_val: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)  # metrics.csv
    stop_reason: str | None = None  # None while training
    interrupt_requested: bool = False
    meter: StepMeter = field(default_factory=StepMeter)
    warner: GradientWarnings | None = None
    world: distributed.World = field(default_factory=distributed.World)
    net: torch.nn.Module | None = None  # what the steps run: the DDP-wrapped model (None: ``model``)

    @property
    def budget_s(self) -> float:
        return self.cfg.train.max_minutes * 60.0

    def elapsed(self) -> float:
        """Seconds of training, a resumed run's earlier time included."""
        return self.clock() - self.t_start

    def spent(self) -> float | None:
        """Share of the time budget spent (None: no budget)."""
        return self.elapsed() / self.budget_s if self.budget_s > 0 else None

    def lr(self) -> float:
        return lr_at(self.step, self.schedule["horizon"], self.cfg.optim, self.spent())


@dataclass
class EpochRun:
    """What :func:`run_epoch` did: the epoch's loss sum over ``steps``, where it stopped
    (``next_batch`` of ``n_batches``), the RNG states at a mid-epoch stop and the start time."""

    loss_sum: float = 0.0
    steps: int = 0
    next_batch: int = 0
    n_batches: int = 0
    rng: dict | None = None
    t_start: float = field(default_factory=time.perf_counter)


def setup(
    cfg: Config,
    store: Path,
    out: Path,
    resume: bool,
    tracking_uri: str | None,
    overrides: dict,
    console: Console,
    clock: Callable[[], float],
) -> TrainState:
    """Config, checkpoint, data, model, optimiser and MLflow run of a training: a :class:`TrainState`
    at its start, or at ``out/last.pt``'s position with its RNG states restored when ``resume``."""
    ckpt = load_checkpoint(out / "last.pt") if resume else None
    cfg, cache = open_store(cfg, store, ckpt, overrides)
    tc = cfg.train
    world, ddp_device = distributed.init_from_env(tc.device)
    train_ids, val_ids = cache.ids("train"), cache.ids("val")
    if not train_ids:
        raise ValueError(f"{store}: no train-split files with targets")
    for fid in train_ids + val_ids:  # whole files in memory, before DataLoader workers fork (they share them)
        cache.load(fid)
    geometry = spans(cfg.model, cfg.features)  # C, L, E in frames at the store's fps
    dataset = BlockDataset(cache, train_ids, geometry.context, geometry.lookahead, geometry.emotion_context)
    sampler = Sampler(
        [cache.num_frames(i) for i in train_ids], global_batches(cfg, world), tc.seed, tc.epochs
    )
    seed_everything(tc.seed)
    device = ddp_device or pick_device(tc.device)
    if device.type == "cpu":  # data parallel: the host's cores shared among its ranks
        cores = max(1, min(8, len(os.sched_getaffinity(0)) // world.local_size))
        torch.set_num_threads(tc.threads or cores)
    model, optimizer, scale = build_optimised_model(cfg, cache, train_ids, device, fresh=ckpt is None)
    planned = sum(sampler.steps(e) for e in range(tc.epochs))
    position = {"schedule": {"horizon": planned, "replanned": False}}
    if ckpt is not None:
        position = restore(ckpt, model, optimizer, planned if "epochs" in overrides else None, world)
    tracker = make_tracker(cfg, out, ckpt, tracking_uri, world)
    if world.distributed:
        clock = distributed.SharedClock(clock, world, device)
        console = console if world.main else Console(stderr=True, quiet=True)
    parts = dict(cfg=cfg, out=out, store=store, cache=cache, train_ids=train_ids, val_ids=val_ids)
    parts.update(dataset=dataset, sampler=sampler, device=device, model=model, optimizer=optimizer)
    parts.update(scale=scale, planned=planned, tracker=tracker, console=console, clock=clock, world=world)
    parts.update(net=distributed.wrap(model, world, device) if world.distributed else None)
    return TrainState(**parts, **position, resumed=ckpt is not None, warner=GradientWarnings(console))


def global_batches(cfg: Config, world: distributed.World):
    """The sampling config of the global batches: ``sampling.*_batch_size`` are per rank, so the
    sampler forms batches of that many blocks times the world size (itself for one process)."""
    sc = cfg.sampling
    if not world.distributed:
        return sc
    return dataclasses.replace(
        sc,
        dense_batch_size=sc.dense_batch_size * world.size,
        sparse_batch_size=sc.sparse_batch_size * world.size,
    )


def make_tracker(cfg: Config, out: Path, ckpt: dict | None, tracking_uri: str | None, world):
    """Rank 0: the run's MLflow :class:`Tracker` (the checkpoint's run on resume, else a new one);
    the other ranks: a :class:`~koemorph.training.distributed.NullTracker` with rank 0's run id."""
    tc = cfg.train
    uri = resolve_uri(tracking_uri, tc.tracking_uri)
    if not world.main:
        return distributed.NullTracker(uri, distributed.broadcast(None, world))
    run_id = ckpt.get("mlflow_run_id") if ckpt else None
    tracker = Tracker(uri, tc.experiment, run_id=run_id, run_name=out.name)
    distributed.broadcast(tracker.run_id, world)
    return tracker


def open_store(cfg: Config, store: Path, ckpt: dict | None, overrides: dict) -> tuple[Config, FeatureCache]:
    """The run's config, built once, and the feature cache.

    The config is the checkpoint's own on resume (else ``cfg``), with the ``epochs``/``max_minutes``
    ``overrides`` and the store's feature parameters (fps, mel, eGeMAPS as available and asked for).
    """
    values = ckpt["config"] if ckpt is not None else to_dict(cfg)
    want = values["features"]
    cache = FeatureCache(
        store,
        use_egemaps=bool(want["egemaps"]),
        use_phones=bool(want.get("phones")),
        use_text=bool(want.get("phones_text")),
    )
    # a store written before a features key existed was extracted with the value it had then
    known = {key: value for (section, key), value in ADDED_KEYS.items() if section == "features"}
    known |= {k: v for k, v in cache.features.items() if k in FeaturesConfig.__dataclass_fields__}
    used = {"egemaps": cache.use_egemaps, "phones": cache.use_phones, "phones_text": cache.use_text}
    used["fps"] = cache.fps
    features = {**values["features"], **known, **used}
    train = {**values["train"], **overrides}
    return load_config(None, extra={**values, "train": train, "features": features}), cache


def build_optimised_model(cfg: Config, cache: FeatureCache, train_ids: list[str], device, fresh: bool):
    """``(model, AdamW, scale)``: the network on ``device`` (decoder bias at the train mean pose when
    ``fresh``), AdamW with weight decay on matrices only, the loss's per-channel scale ``[52]`` or None."""
    model = build_model(cfg.model, cfg.features, n_mels=cache.n_mels, n_egemaps=cache.n_egemaps)
    model = model.to(device)
    train_targets = np.concatenate([cache.load(i)["targets"] for i in train_ids])
    if fresh and hasattr(model.decoder, "init_bias"):  # start at the train mean pose
        model.decoder.init_bias(train_targets.mean(0))
    scale = channel_scale(train_targets.std(0), cfg.loss.channel_floor)
    scale = None if scale is None else scale.to(device)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    return model, optimizer, scale


def restore(ckpt: dict, model, optimizer, horizon: int | None, world: distributed.World) -> dict:
    """Load a checkpoint's weights, optimiser and RNG states; returns its position (TrainState fields).
    ``horizon`` replaces the saved LR horizon (when the epochs were overridden). Each rank restores its
    own RNG states when the checkpoint holds them for this world size (``rng_ranks``), else rank 0's."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule = dict(ckpt["schedule"])
    if horizon is not None:
        schedule["horizon"] = horizon
    ranks = ckpt.get("rng_ranks") or []
    set_rng_state(ranks[world.rank] if len(ranks) == world.size else ckpt["rng"])
    return {
        "schedule": schedule,
        "epoch": ckpt["epoch"],
        "batch": ckpt["batch"],
        "step": ckpt["step"],
        "best": ckpt["best"],
        "bad": ckpt["bad_validations"],
    }


def begin(state: TrainState) -> None:
    """Log a new run's params, config and tags; make the run folder; keep a resumed run's epoch rows;
    start the clocks."""
    cfg, cache = state.cfg, state.cache
    if state.world.distributed:
        state.clock.sync()  # rank 0's time on every rank
    if not state.resumed:
        state.tracker.log_params({**flatten(to_dict(cfg)), "world_size": state.world.size})
        state.tracker.log_dict(to_dict(cfg), "config.yaml")
        tags = {
            "store": str(state.store.resolve()),
            "dataset.fingerprint": cache.fingerprint(),
            "model.kind": cfg.model.kind,
            "fps": cache.fps,
            "device": str(state.device),
            "train.files": len(state.train_ids),
            "val.files": len(state.val_ids),
        }
        state.tracker.set_tags({**tags, **{f"features.hash.{k}": v for k, v in cache.hashes().items()}})
    (state.out / "val").mkdir(parents=True, exist_ok=True)
    if state.resumed:
        rows = read_epoch_rows(state.out / "metrics.csv")
        state.rows = [r for r in rows if int(r["epoch"]) < state.epoch]
    state.t_start = state.clock() - float(state.schedule.get("elapsed_s", 0.0))
    state.t_last_val = state.clock()
