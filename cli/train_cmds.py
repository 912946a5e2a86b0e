"""``koemorph train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import ParamsOpt, SetOpt, app, config_from, fail, print_summary


def _interrupted(exc: KeyboardInterrupt) -> str:
    """The one line ``koemorph train`` prints on Ctrl-C: where last.pt is and how to resume."""
    from koemorph.training.interrupt import INTERRUPTED, TrainingInterrupted

    if not isinstance(exc, TrainingInterrupted):
        return "interrupted outside the training steps: last.pt (if any) is as last saved"
    s = exc.summary
    if s["last"] is None:
        return f"interrupted at step {s['steps']}: no checkpoint saved yet"
    saved = "saved at this step" if s["stop_reason"] == INTERRUPTED else "as last saved"
    return (
        f"interrupted at step {s['steps']}: {s['last']} {saved}; to continue, rerun the command with --resume"
    )


def _check_resumable(path: Path) -> None:
    """Fail (exit 2), naming ``path``, unless it is a readable koemorph checkpoint to resume from."""
    from koemorph.training.checkpoint import load_checkpoint

    if not path.is_file():
        fail(f"{path}: nothing to resume", code=2)
    try:
        load_checkpoint(path)
    except (ValueError, OSError) as exc:  # the loader's message names the file and the problem
        fail(str(exc), code=2)


def _launch_ranks(nproc: int, store, out, tracking_uri, epochs, max_minutes, params, resume, sets):
    """``koemorph train`` with these options on ``nproc`` local ranks (torchrun); exits with its code."""
    import os

    from koemorph.training.distributed import launch

    if os.environ.get("WORLD_SIZE"):
        fail("--nproc: already running under torchrun (WORLD_SIZE is set); leave --nproc out", code=2)
    options = {"--store": store, "--out": out, "--tracking-uri": tracking_uri, "--epochs": epochs}
    options.update({"--max-minutes": max_minutes, "--params": params})
    args = [x for k, v in options.items() if v is not None for x in (k, str(v))]
    args += ["--resume"] * resume + [x for kv in sets or [] for x in ("--set", kv)]
    raise typer.Exit(launch(nproc, args))


@app.command("train")
def train(
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Feature store from `koemorph extract` (default: paths.store)."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: paths.run_dir).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue exactly from OUT/last.pt.")] = False,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (overrides train.epochs).")] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Wall-clock budget in minutes (0 = none).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    nproc: Annotated[
        int, typer.Option("--nproc", help="Data-parallel ranks on this host (torchrun); 1 = one process.")
    ] = 1,
):
    """Train a model on the cached features; checkpoints, metrics.csv and an MLflow run."""
    if nproc > 1:  # the same command on nproc ranks, started by torchrun
        _launch_ranks(nproc, store, out, tracking_uri, epochs, max_minutes, params, resume, set_)
    cfg = config_from(params, set_)
    store = store or Path(cfg.paths.store)
    if not store.exists():
        fail(f"{store}: no feature store; run `koemorph extract MANIFEST --store {store}` first", code=2)
    out_dir = out or Path(cfg.paths.run_dir)
    if resume:
        _check_resumable(out_dir / "last.pt")
    from koemorph.training.distributed import RankStopped
    from koemorph.training.loop import train as run_train

    try:
        s = run_train(
            cfg,
            store,
            out_dir=out_dir,
            resume=resume,
            tracking_uri=tracking_uri,
            epochs=epochs,
            max_minutes=max_minutes,
        )
    except (FileNotFoundError, ValueError, RankStopped) as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C: the loop saved what it could (TrainingInterrupted)
        fail(_interrupted(exc), code=130)
    _print_train_summary(out_dir, s)


def _print_train_summary(out_dir: Path, s: dict) -> None:
    """The summary table of ``koemorph train`` (data parallel: printed by rank 0 only; windows/s of all
    ranks together)."""
    if s.get("rank", 0) != 0:
        return
    summary = {
        "steps": s["steps"],
        "epochs done": s["epochs_done"],
        "stopped by": s["stop_reason"],
        f"best {s['monitor']}": s["best"],
        **{k: v for k, v in s["val"].items()},
        "windows/s": sum(r["windows_per_s"] for r in s.get("throughput_ranks", [s["throughput"]])),
        "last checkpoint": s["last"],
        "best checkpoint": s["best_checkpoint"],
        "MLflow run": s["run_id"],
        "tracking URI": s["tracking_uri"],
    }
    print_summary(f"train {out_dir}", summary)
    uri = s["tracking_uri"]
    typer.echo(f'MLflow UI: pip install -e ".[ui]" && mlflow ui --backend-store-uri {uri}')
