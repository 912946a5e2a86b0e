"""``koemorph train``: fit a model on the feature cache.

Data: the Zarr store written by ``koemorph extract`` (never audio), whole files in memory
(:mod:`koemorph.data.cache`). Targets per epoch come from :mod:`koemorph.training.sampling`
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

Stopping early (:mod:`koemorph.training.interrupt`): a first Ctrl-C (SIGINT) finishes the current
step, saves ``last.pt`` there (``--resume`` continues exactly), writes ``summary.json``, ends the
MLflow run as KILLED and raises :class:`~koemorph.training.interrupt.TrainingInterrupted`; an
exception ends the MLflow run as FAILED (with an ``error`` tag) and propagates.

Data parallel (started by torchrun, :mod:`koemorph.training.distributed`): every rank runs these same
functions on its rows of each global batch; steps, stops and the LR agree on all ranks; rank 0 alone
validates, logs to MLflow and writes the files above, and the others wait for it at the next collective.

The functions below share one :class:`~koemorph.training.setup.TrainState`:
:func:`~koemorph.training.setup.setup` builds it (config, checkpoint, data, model, optimiser,
tracker), :func:`run_epoch` trains, :func:`end_epoch` validates
(:func:`validate`), records and checkpoints (:func:`save`), :func:`finish` writes the summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from koemorph.config import Config, to_dict
from koemorph.training import augment, distributed, validation
from koemorph.training.batches import make_loader
from koemorph.training.checkpoint import rng_state, save_checkpoint
from koemorph.training.interrupt import (
    ABORTED,
    INTERRUPTED,
    TrainingInterrupted,
    signal_hook,
    stop_on_sigint,
)
from koemorph.training.outputs import write_epoch_rows, write_summary
from koemorph.training.schedule import better
from koemorph.training.setup import EpochRun, TrainState, begin, setup
from koemorph.training.step import train_step

default_clock: Callable[[], float] = time.perf_counter  # seconds; the training budget's clock


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
    console: Console | None = None,
    clock: Callable[[], float] | None = None,
) -> dict:
    """Train on ``store``; returns a summary (best metrics, checkpoint paths, MLflow run id, steps).

    ``epochs``/``max_minutes`` override the config (also on resume); ``max_steps`` stops after that
    many optimiser steps in total (checkpointing mid-epoch), for tests and smoke runs. ``clock``
    (seconds, default :data:`default_clock`) measures the ``max_minutes`` budget. Ctrl-C raises
    :class:`TrainingInterrupted` (carrying the summary) once ``last.pt`` and ``summary.json`` are saved.
    """
    overrides = {k: v for k, v in {"epochs": epochs, "max_minutes": max_minutes}.items() if v is not None}
    out = Path(out_dir or cfg.paths.run_dir)
    console = console or Console(stderr=True)
    try:
        state = setup(cfg, Path(store), out, resume, tracking_uri, overrides, console, clock or default_clock)
    except BaseException:
        distributed.shutdown(distributed.world_from_env())
        raise
    status = "FAILED"
    try:
        try:
            begin(state)
            with stop_on_sigint(state, state.console):
                run(state, max_steps, progress)
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, last.pt stays as last saved
            state.stop_reason = ABORTED
        summary = finish(state)
        status = "KILLED" if state.stop_reason in (INTERRUPTED, ABORTED) else "FINISHED"
    except BaseException as exc:
        distributed.ending(state.world)
        state.tracker.set_tags({"stop_reason": "failed", "error": f"{type(exc).__name__}: {exc}"[:5000]})
        if (
            state.world.distributed
            and isinstance(exc, Exception)
            and not isinstance(exc, distributed.RankStopped)
        ):
            raise distributed.rank_failed(state.world, exc) from exc
        raise
    finally:
        state.tracker.end(status)
        distributed.shutdown(state.world, wait=status == "FINISHED" or state.stop_reason == INTERRUPTED)
    if status == "KILLED":
        raise TrainingInterrupted(summary)
    return summary


# ---------------------------------------------------------------------------------------- the loop


def run(state: TrainState, max_steps: int | None, progress: bool) -> None:
    """Epochs until ``train.epochs`` (or the budget), early stopping, ``max_steps`` or Ctrl-C."""
    tc = state.cfg.train
    with progress_bar(state, progress) as bar:
        while state.stop_reason is None and (state.epoch < tc.epochs or state.budget_s > 0):
            # Ctrl-C during an epoch end (on any rank): last.pt is already saved here
            if agree(state, INTERRUPTED if state.interrupt_requested else None) == INTERRUPTED:
                state.stop_reason = INTERRUPTED
                break
            done = run_epoch(state, bar, max_steps)
            end_epoch(state, bar, done)
    state.stop_reason = state.stop_reason or "epochs"


def run_epoch(state: TrainState, bar, max_steps: int | None) -> EpochRun:
    """Train from batch ``state.batch`` of epoch ``state.epoch`` to the epoch's end or a stop
    (``max_steps``, the budget, Ctrl-C: ``state.stop_reason`` set)."""
    cfg, tc = state.cfg, state.cfg.train
    batches = state.sampler.batches(state.epoch)  # global batches; this rank trains on its rows of each
    mine = [distributed.shard(b, state.world) for b in batches[state.batch :]]
    loader = make_loader(state.dataset, mine, cfg.sampling.num_workers, seed=tc.seed + state.epoch)
    done = EpochRun(next_batch=len(batches), n_batches=len(batches))
    state.model.train()
    t_wait = time.perf_counter()
    for bi, batch in enumerate(loader, start=state.batch):
        if augment.enabled(cfg.augment):  # data preparation: its time counts as waiting for data
            rng, rows = (
                augment.batch_rng(tc.seed, state.epoch, bi),
                distributed.rows(len(batches[bi]), state.world),
            )
            batch = augment.augment_batch(batch, rng, cfg.augment, state.cache, rows)
        optimise(state, batch, t_wait)
        done.loss_sum, done.steps = done.loss_sum + state.last_loss, done.steps + 1
        bar(epoch=state.epoch, loss=f"{state.last_loss:.4f}", wps=f"{state.meter.windows_per_s:.1f}")
        signal_hook(state.step, lambda: state.interrupt_requested)
        distributed.hang_hook(state.step, state.world)
        state.stop_reason = agree(state, stop_reason(state, max_steps))
        if state.stop_reason is not None:
            done.rng, done.next_batch = rng_state(), bi + 1
            break
        t_wait = time.perf_counter()
    return done


def optimise(state: TrainState, batch: dict, t_wait: float) -> None:
    """One optimiser step at the scheduled LR; meters it and logs the step metrics every ``log_every``."""
    wait = time.perf_counter() - t_wait
    lr = state.lr()
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    world = state.world if state.world.distributed else None
    metrics = train_step(
        state.model,
        batch,
        state.optimizer,
        state.cfg,
        state.device,
        state.warner,
        state.scale,
        world,
        state.net,
    )
    state.step += 1
    state.last_loss = metrics["train/loss"]
    frames = int(batch["mask"].sum())
    state.meter.add(metrics, wait, time.perf_counter() - t_wait, len(batch["mel"]), frames)
    if state.step % state.cfg.train.log_every == 0:
        state.tracker.log_metrics({**state.meter.summary(), "lr": lr, "epoch": state.epoch}, step=state.step)


def agree(state: TrainState, reason: str | None) -> str | None:
    """Data parallel: the stop reason all ranks agree on (the most urgent of theirs), with rank 0's
    time shared (every rank calls it at the same points); one process: ``reason``."""
    return state.clock.sync(reason) if state.world.distributed else reason


def stop_reason(state: TrainState, max_steps: int | None) -> str | None:
    """Why training stops after this step (Ctrl-C, ``max_steps``, the budget), or None."""
    if state.interrupt_requested:
        return INTERRUPTED
    if max_steps and state.step >= max_steps:
        return "max_steps"
    if state.budget_s > 0 and state.elapsed() >= state.budget_s:
        return "max_minutes"
    return None


def end_epoch(state: TrainState, bar, done: EpochRun) -> None:
    """After an epoch or a stop: replan a budget, validate when due, record the epoch row, save
    ``last.pt`` at the next position, and check early stopping."""
    tc = state.cfg.train
    epoch_done = state.stop_reason is None or done.next_batch >= done.n_batches
    next_pos = (state.epoch + 1, 0) if epoch_done else (state.epoch, done.next_batch)
    if state.budget_s > 0 and epoch_done:  # expected steps in the budget (training goes past the epochs)
        expected = int(state.budget_s / (max(state.elapsed(), 1e-9) / max(1, state.step)))
        state.schedule.update(horizon=min(state.planned, expected), replanned=True)  # caps the warm-up
        bar(total=max(expected, state.step))
    due = validation_due(state, next_pos[0])
    agg = validate(state, state.epoch) if due and state.world.main else {}
    if due and state.world.distributed:  # rank 0 validated; every rank needs its verdict
        state.best, state.bad = distributed.broadcast((state.best, state.bad), state.world)
        state.t_last_val = state.clock()
    if state.world.main:
        record_epoch(state, done, agg)
    state.epoch, state.batch = next_pos
    save(state, state.out / "last.pt", next_pos, rng=done.rng, every_rank=True)
    if tc.early_stopping_patience and state.bad >= tc.early_stopping_patience and state.stop_reason is None:
        state.stop_reason = "early_stopping"


def validation_due(state: TrainState, next_epoch: int) -> bool:
    """Every ``val_every`` epochs (or ``val_every_minutes``) and at the last epoch or a stop; never
    after Ctrl-C (it stops at once)."""
    tc = state.cfg.train
    if state.stop_reason == INTERRUPTED:
        return False
    if tc.val_every > 0:
        due = (state.epoch + 1) % tc.val_every == 0
    else:
        due = state.clock() - state.t_last_val >= 60.0 * tc.val_every_minutes
    return due or (next_epoch >= tc.epochs and state.budget_s <= 0) or state.stop_reason is not None


def record_epoch(state: TrainState, done: EpochRun, agg: dict) -> None:
    """Append the epoch's row to ``metrics.csv`` and log its mean training loss."""
    state.rows.append(
        {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": done.loss_sum / max(1, done.steps),
            "val_loss": agg.get("val/loss"),
            "val_mae": agg.get("val/mae"),
            "val_mouth_pearson": agg.get("val/mouth_pearson"),
            "lr": state.lr(),
            "seconds": round(time.perf_counter() - done.t_start, 3),
        }
    )
    write_epoch_rows(state.out / "metrics.csv", state.rows)
    state.tracker.log_metrics({"train/epoch_loss": state.rows[-1]["train_loss"]}, step=state.step)


def validate(state: TrainState, tag_epoch: int) -> dict:
    """Validate on the val split ({} without val files): log the aggregates, the per-file table and
    curves (one name per validation: MLflow tables append), update ``best``/``bad`` and ``best.pt``."""
    if not state.val_ids:
        return {}
    tc, val_dir = state.cfg.train, state.out / "val"
    agg, per_file, preds = validation.validate(
        state.model, state.cache, state.val_ids, state.cfg.loss, state.device, state.scale
    )
    table, tag = pd.DataFrame(per_file), f"e{tag_epoch:03d}-s{state.step}"
    csv = val_dir / f"per_file_{tag}.csv"
    table.to_csv(csv, index=False)
    title = f"epoch {tag_epoch}  val MAE {agg['val/mae']:.4f}"
    plot_ids = state.val_ids[: tc.plot_files]
    png = validation.plot_curves(val_dir / f"curves_{tag}.png", preds, state.cache, plot_ids, title=title)
    state.tracker.log_metrics({**agg, "epoch": tag_epoch}, step=state.step)
    state.tracker.log_table(table, f"val/per_file_{tag}.json")
    state.tracker.log_artifact(csv, "val")
    state.tracker.log_artifact(png, "val")
    state.last_val = {"agg": agg, "table": table, "csv": csv, "png": png}
    value = agg.get(tc.monitor)
    if better(value, state.best, tc.monitor):
        state.best, state.bad = value, 0
        save(state, state.out / "best.pt", (tag_epoch + 1, 0))
    else:
        state.bad += 1
    state.t_last_val = state.clock()
    return agg


def save(
    state: TrainState, path: Path, position: tuple[int, int], rng: dict | None = None, every_rank=False
) -> Path:
    """Checkpoint the run at ``position`` ``(epoch, batch)`` (the next batch to run) with the RNG
    states ``rng`` there (default: now) and the time spent so far. Data parallel: rank 0 writes;
    with ``every_rank`` (``last.pt``) all ranks call it and their RNG states are saved too."""
    state.schedule["elapsed_s"] = state.elapsed()
    rng = rng or rng_state()
    ranks = distributed.gather_rng(rng, state.world) if every_rank else None
    if not state.world.main:
        return path
    extra = {"world_size": state.world.size, "rng_ranks": ranks} if state.world.distributed else None
    cache = state.cache
    return save_checkpoint(
        path,
        model=state.model,
        optimizer=state.optimizer,
        schedule=state.schedule,
        epoch=position[0],
        batch=position[1],
        step=state.step,
        best=state.best,
        bad_validations=state.bad,
        config=to_dict(state.cfg),
        stats={k: cache.stats[k] for k in ("mel", "egemaps", "split", "ids") if k in cache.stats}
        | {"level": cache.level},
        fps=cache.fps,
        run_id=state.tracker.run_id,
        rng=rng,
        extra=extra,
    )


@contextmanager
def progress_bar(state: TrainState, enabled: bool):
    """A rich progress bar over the planned steps; yields ``update(**fields)`` (step implied)."""
    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[wps]} windows/s"),
        TimeElapsedColumn(),
    )
    disable = not enabled or not state.world.main
    with Progress(*columns, console=state.console, disable=disable, transient=False) as bar:
        fields = dict(epoch=state.epoch, loss="-", wps="-")
        task = bar.add_task("train", total=state.schedule["horizon"], completed=state.step, **fields)
        yield lambda **kw: bar.update(task, completed=state.step, **kw)


# ---------------------------------------------------------------------------------------- the end


def finish(state: TrainState) -> dict:
    """Log the checkpoints, ``metrics.csv`` and the last per-file table; write ``summary.json``."""
    out, tracker = state.out, state.tracker
    state.warner.flush()
    for name in ("last.pt", "best.pt", "metrics.csv"):
        if (out / name).exists():
            tracker.log_artifact(out / name, "checkpoints" if name.endswith(".pt") else None)
    if state.last_val and state.world.main:
        tracker.log_table(state.last_val["table"], "val/per_file.json")
        final_csv = out / "val" / "per_file.csv"
        state.last_val["table"].to_csv(final_csv, index=False)
        tracker.log_artifact(final_csv, "val")
    tracker.set_tags({"stop_reason": state.stop_reason})
    summary = {
        "run_id": tracker.run_id,
        "tracking_uri": tracker.uri,
        "steps": state.step,
        "epochs_done": state.epoch,
        "stop_reason": state.stop_reason,
        "last_loss": state.last_loss,
        "monitor": state.cfg.train.monitor,
        "best": state.best,
        "val": state.last_val.get("agg", {}),
        "last": out / "last.pt" if (out / "last.pt").exists() else None,
        "best_checkpoint": out / "best.pt" if (out / "best.pt").exists() else None,
        "seconds": round(state.elapsed(), 2),
        "throughput": state.meter.totals(),
    }
    if (
        state.world.distributed and state.stop_reason != ABORTED
    ):  # every rank is here (not after a 2nd Ctrl-C)
        summary["world_size"], summary["rank"] = state.world.size, state.world.rank
        summary["throughput_ranks"] = distributed.gather_all(summary["throughput"], state.world)
    if state.world.main:
        write_summary(out / "summary.json", summary)
    return summary
