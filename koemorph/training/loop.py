"""``koemorph train``: fit a model on the feature cache.

Data: the Zarr store written by ``koemorph extract`` (never audio), whole files in memory
(:mod:`koemorph.training.batches`). Targets per epoch come from :mod:`koemorph.training.sampling`
(dense / sparse / mixed / progressive blocks); a step is one homogeneous batch of blocks.

Optimiser: AdamW (weight decay on matrices only), gradient clipping at ``optim.grad_clip``,
linear warm-up, then cosine annealing per step from ``optim.lr`` to ``optim.min_lr`` over the
planned steps. The plan is the number of batches of ``train.epochs`` epochs. With a wall-clock
budget (``train.max_minutes`` > 0) the cosine runs over the budget's wall time instead (progress =
share of the budget spent, so a slow or busy stretch never leaves the LR at its floor early), and
training goes on past ``train.epochs`` until the budget is spent, then validates and checkpoints;
the time spent is saved in the checkpoint and a resumed run continues the same clock.

Outputs in ``out_dir`` (default ``paths.run_dir``): ``last.pt`` (every epoch end and at the stop),
``best.pt`` (best ``train.monitor``), ``metrics.csv`` (one row per epoch), ``summary.json`` (what
:func:`train` returns: steps, seconds of training including resumed time, last validation, MLflow
run), ``val/`` (per-file tables, plots), and one MLflow run with params, step metrics, validation
metrics and those files as artifacts. ``resume=True`` continues from ``last.pt`` exactly: same
config, optimiser, LR schedule, sampler position ``(epoch, batch)``, RNG states and MLflow run.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from koemorph.config import Config, FeaturesConfig, flatten, load_config, to_dict
from koemorph.data.cache import FeatureCache
from koemorph.io.atomic import atomic_write_text
from koemorph.model.windows import spans
from koemorph.training import augment
from koemorph.training.batches import BlockDataset, make_loader
from koemorph.training.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from koemorph.training.sampling import Sampler

LOWER_IS_BETTER = ("loss", "mae", "rmse", "mse")


def lr_at(step: int, horizon: int, optim, progress: float | None = None) -> float:
    """Linear warm-up over ``optim.warmup_steps`` steps (at most a tenth of ``horizon``), then cosine
    annealing from ``optim.lr`` to ``optim.min_lr``: at ``progress`` (0..1, e.g. the share of a time
    budget spent) when given, else at ``(step - warmup) / (horizon - warmup)``."""
    warm = min(int(optim.warmup_steps), horizon // 10)
    if step < warm:
        return optim.lr * (step + 1) / warm
    if progress is None:
        progress = (step - warm) / max(1, horizon - warm)
    progress = min(1.0, max(0.0, progress))
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1.0 + math.cos(math.pi * progress))


def better(value: float, best: float | None, monitor: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if any(k in monitor for k in LOWER_IS_BETTER) else value > best


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def store_features(cfg: Config, cache: FeatureCache) -> FeaturesConfig:
    """The feature config the store was built with (fps, mel parameters), eGeMAPS as used here."""
    known = {k: v for k, v in cache.features.items() if k in FeaturesConfig.__dataclass_fields__}
    merged = {**to_dict(cfg.features), **known, "egemaps": cache.use_egemaps, "fps": cache.fps}
    return load_config(None, extra={"features": merged}).features


def train(
    cfg: Config,
    store: str | Path,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    epochs: int | None = None,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    console=None,
) -> dict:
    """Train on ``store``; returns a summary (best metrics, checkpoint paths, MLflow run id, steps).

    ``epochs``/``max_minutes`` override the config (also on resume); ``max_steps`` stops after that
    many optimiser steps in total (checkpointing mid-epoch), for tests and smoke runs.
    """
    from koemorph.model import build_model
    from koemorph.training.step import (
        GradientWarnings,
        StepMeter,
        read_epoch_rows,
        train_step,
        write_epoch_rows,
    )
    from koemorph.training.tracking import Tracker, resolve_uri
    from koemorph.training.validation import plot_curves, validate

    # ---------------------------------------------------------------- config, checkpoint, data
    out = Path(out_dir or cfg.paths.run_dir)
    ckpt = load_checkpoint(out / "last.pt") if resume else None
    if ckpt is not None:
        cfg = load_config(None, extra=ckpt["config"])  # the run's own config, exactly
    overrides = {k: v for k, v in {"epochs": epochs, "max_minutes": max_minutes}.items() if v is not None}
    if overrides:
        cfg = load_config(None, extra={**to_dict(cfg), "train": {**to_dict(cfg.train), **overrides}})
    tc = cfg.train
    cache = FeatureCache(store, use_egemaps=cfg.features.egemaps)
    cfg = load_config(None, extra={**to_dict(cfg), "features": to_dict(store_features(cfg, cache))})
    fps = cache.fps
    train_ids, val_ids = cache.ids("train"), cache.ids("val")
    if not train_ids:
        raise ValueError(f"{store}: no train-split files with targets")
    for fid in train_ids + val_ids:  # whole files in memory, before DataLoader workers fork (they share them)
        cache.load(fid)
    geometry = spans(cfg.model, cfg.features)  # C, L, E in frames at the store's fps
    dataset = BlockDataset(cache, train_ids, geometry.context, geometry.lookahead, geometry.emotion_context)
    sampler = Sampler([cache.num_frames(i) for i in train_ids], cfg.sampling, tc.seed, tc.epochs)

    # ---------------------------------------------------------------- model, optimiser, schedule
    seed_everything(tc.seed)
    device = pick_device(tc.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(8, len(os.sched_getaffinity(0)))))
    model = build_model(cfg.model, cfg.features, n_mels=cache.n_mels, n_egemaps=cache.n_egemaps).to(device)
    train_targets = np.concatenate([cache.load(i)["targets"] for i in train_ids])
    if ckpt is None and hasattr(model.decoder, "init_bias"):  # start at the train mean pose
        model.decoder.init_bias(train_targets.mean(0))
    from koemorph.training.losses import channel_scale

    scale = channel_scale(train_targets.std(0), cfg.loss.channel_floor)
    scale = None if scale is None else scale.to(device)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
    )
    planned = sum(sampler.steps(e) for e in range(tc.epochs))
    schedule = {"horizon": planned, "replanned": False}
    epoch, batch_start, step, best, bad = 0, 0, 0, None, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule = dict(ckpt["schedule"])
        if "epochs" in overrides:
            schedule["horizon"] = planned
        epoch, batch_start, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        best, bad = ckpt["best"], ckpt["bad_validations"]
        set_rng_state(ckpt["rng"])

    # ---------------------------------------------------------------- tracking
    uri = resolve_uri(tracking_uri, tc.tracking_uri)
    tracker = Tracker(
        uri, tc.experiment, run_id=ckpt.get("mlflow_run_id") if ckpt else None, run_name=out.name
    )
    if ckpt is None:
        tracker.log_params(flatten(to_dict(cfg)))
        tracker.log_dict(to_dict(cfg), "config.yaml")
        tracker.set_tags(
            {
                "store": str(Path(store).resolve()),
                "dataset.fingerprint": cache.fingerprint(),
                "model.kind": cfg.model.kind,
                "fps": fps,
                "device": str(device),
                "train.files": len(train_ids),
                "val.files": len(val_ids),
                **{f"features.hash.{k}": v for k, v in cache.hashes().items()},
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "val").mkdir(exist_ok=True)
    rows = [r for r in read_epoch_rows(out / "metrics.csv") if int(r["epoch"]) < epoch] if ckpt else []

    def checkpoint(path, next_epoch, next_batch, rng=None):
        schedule["elapsed_s"] = time.perf_counter() - t_start
        return save_checkpoint(
            path,
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            epoch=next_epoch,
            batch=next_batch,
            step=step,
            best=best,
            bad_validations=bad,
            config=to_dict(cfg),
            stats={k: cache.stats[k] for k in ("mel", "egemaps", "split", "ids") if k in cache.stats},
            fps=fps,
            run_id=tracker.run_id,
            rng=rng,
        )

    last_val: dict = {}

    def run_validation(tag_epoch: int) -> dict:  # one name per validation: MLflow tables append
        nonlocal best, bad, last_val
        if not val_ids:
            return {}
        agg, per_file, preds = validate(model, cache, val_ids, cfg.loss, device, scale)
        import pandas as pd

        table = pd.DataFrame(per_file)
        tag = f"e{tag_epoch:03d}-s{step}"
        csv = out / "val" / f"per_file_{tag}.csv"
        table.to_csv(csv, index=False)
        png = plot_curves(
            out / "val" / f"curves_{tag}.png",
            preds,
            cache,
            val_ids[: tc.plot_files],
            title=f"epoch {tag_epoch}  val MAE {agg['val/mae']:.4f}",
        )
        tracker.log_metrics({**agg, "epoch": tag_epoch}, step=step)
        tracker.log_table(table, f"val/per_file_{tag}.json")
        tracker.log_artifact(csv, "val")
        tracker.log_artifact(png, "val")
        last_val = {"agg": agg, "table": table, "csv": csv, "png": png}
        value = agg.get(tc.monitor)
        if better(value, best, tc.monitor):
            best, bad = value, 0
            checkpoint(out / "best.pt", tag_epoch + 1, 0)
        else:
            bad += 1
        return agg

    # ---------------------------------------------------------------- the loop
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    meter, warner = StepMeter(), GradientWarnings(console)
    budget_s = tc.max_minutes * 60.0
    t_start = time.perf_counter() - float(schedule.get("elapsed_s", 0.0))

    def spent() -> float | None:  # share of the time budget spent (None: no budget)
        return (time.perf_counter() - t_start) / budget_s if budget_s > 0 else None

    stop_reason, last_loss, t_last_val = "epochs", float("nan"), time.perf_counter()
    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[wps]} windows/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task(
            "train", total=schedule["horizon"], completed=step, epoch=epoch, loss="-", wps="-"
        )
        while (epoch < tc.epochs or budget_s > 0) and stop_reason == "epochs":  # a budget alone ends it
            batches = sampler.batches(epoch)
            loader = make_loader(
                dataset, batches[batch_start:], cfg.sampling.num_workers, seed=tc.seed + epoch
            )
            epoch_loss, epoch_n, t_epoch = 0.0, 0, time.perf_counter()
            model.train()
            t_wait = time.perf_counter()
            for bi, batch in enumerate(loader, start=batch_start):
                if augment.enabled(cfg.augment):  # data preparation: its time counts as waiting for data
                    batch = augment.augment_batch(
                        batch, augment.batch_rng(tc.seed, epoch, bi), cfg.augment, cache
                    )
                wait = time.perf_counter() - t_wait
                lr = lr_at(step, schedule["horizon"], cfg.optim, spent())
                for group in optimizer.param_groups:
                    group["lr"] = lr
                metrics = train_step(model, batch, optimizer, cfg, device, check=warner, scale=scale)
                step += 1
                last_loss = metrics["train/loss"]
                epoch_loss, epoch_n = epoch_loss + last_loss, epoch_n + 1
                meter.add(
                    metrics, wait, time.perf_counter() - t_wait, len(batch["mel"]), int(batch["mask"].sum())
                )
                if step % tc.log_every == 0:
                    tracker.log_metrics({**meter.summary(), "lr": lr, "epoch": epoch}, step=step)
                bar.update(
                    task,
                    completed=step,
                    epoch=epoch,
                    loss=f"{last_loss:.4f}",
                    wps=f"{meter.windows_per_s:.1f}",
                )
                out_of_time = budget_s > 0 and time.perf_counter() - t_start >= budget_s
                if (max_steps and step >= max_steps) or out_of_time:
                    stop_reason = "max_steps" if max_steps and step >= max_steps else "max_minutes"
                    rng = rng_state()
                    batch_start = bi + 1
                    break
                t_wait = time.perf_counter()
            else:
                batch_start = 0
            if stop_reason == "epochs":
                epoch_done, next_pos, rng = True, (epoch + 1, 0), None
            else:
                epoch_done = batch_start >= len(batches)
                next_pos = (epoch + 1, 0) if epoch_done else (epoch, batch_start)
            if budget_s > 0 and epoch_done:  # expected steps in the budget (training goes past the epochs)
                expected = int(budget_s / ((time.perf_counter() - t_start) / max(1, step)))
                schedule.update(horizon=min(planned, expected), replanned=True)  # caps the warm-up
                bar.update(task, total=max(expected, step))
            is_last = (next_pos[0] >= tc.epochs and budget_s <= 0) or stop_reason != "epochs"
            if tc.val_every > 0:
                due = (epoch + 1) % tc.val_every == 0
            else:
                due = time.perf_counter() - t_last_val >= 60.0 * tc.val_every_minutes
            agg = run_validation(epoch) if (due or is_last) else {}
            if agg:
                t_last_val = time.perf_counter()
            rows.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "train_loss": epoch_loss / max(1, epoch_n),
                    "val_loss": agg.get("val/loss"),
                    "val_mae": agg.get("val/mae"),
                    "val_mouth_pearson": agg.get("val/mouth_pearson"),
                    "lr": lr_at(step, schedule["horizon"], cfg.optim, spent()),
                    "seconds": round(time.perf_counter() - t_epoch, 3),
                }
            )
            write_epoch_rows(out / "metrics.csv", rows)
            tracker.log_metrics({"train/epoch_loss": rows[-1]["train_loss"]}, step=step)
            epoch = next_pos[0]
            checkpoint(out / "last.pt", *next_pos, rng=rng)
            if tc.early_stopping_patience and bad >= tc.early_stopping_patience and stop_reason == "epochs":
                stop_reason = "early_stopping"

    # ---------------------------------------------------------------- the end
    warner.flush()
    for name in ("last.pt", "best.pt"):
        if (out / name).exists():
            tracker.log_artifact(out / name, "checkpoints")
    tracker.log_artifact(out / "metrics.csv")
    if last_val:
        tracker.log_table(last_val["table"], "val/per_file.json")
        final_csv = out / "val" / "per_file.csv"
        last_val["table"].to_csv(final_csv, index=False)
        tracker.log_artifact(final_csv, "val")
    tracker.set_tags({"stop_reason": stop_reason})
    tracker.end("FINISHED")
    summary = {
        "run_id": tracker.run_id,
        "tracking_uri": uri,
        "steps": step,
        "epochs_done": epoch,
        "stop_reason": stop_reason,
        "last_loss": last_loss,
        "monitor": tc.monitor,
        "best": best,
        "val": last_val.get("agg", {}),
        "last": out / "last.pt",
        "best_checkpoint": out / "best.pt" if (out / "best.pt").exists() else None,
        "seconds": round(time.perf_counter() - t_start, 2),
        "throughput": meter.totals(),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    return summary
