"""The ``koemorph`` command line. Thin: parse options, build the config, call ``koemorph.*``.

Heavy packages (torch, dask, zarr, mlflow, opensmile) are imported inside the commands so
that ``koemorph --help`` answers at once.

Every command runs under :func:`_guard`: a user error (bad config key, input file, path) prints
``error: <message>`` verbatim on stderr and exits 2 (or the code the command chose); anything else is
a bug and prints its traceback with :data:`BUG_HINT`.
"""

from __future__ import annotations

import functools
import traceback
from pathlib import Path
from typing import Annotated

import click
import typer

BUG_HINT = "this is a bug in koemorph: please report it with the traceback above"
EGEMAPS_MISSING = """eGeMAPS features are on (features.egemaps: true, the default) but openSMILE \
cannot be imported ({cause}).
Either install it (audEERING research-only licence, see README "Licences"):
    pip install "koemorph[egemaps]"        (in a source checkout: pip install -e ".[egemaps]")
or extract without eGeMAPS (a mel-only model; fine for commercial use):
    koemorph extract --set features.egemaps=false
    (or for every command: set `egemaps: false` under `features:` in params.yaml)"""


class CommandError(Exception):
    """A user error a command reports as ``error: <message>`` with exit code ``code`` (no traceback)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class _App(typer.Typer):
    """A Typer app whose commands all run under :func:`_guard` (user errors vs bugs)."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorate(fn):
            register(_guard(fn))
            return fn

        return decorate


def _user_error(exc: BaseException) -> tuple[str, int] | None:
    """``(message, exit code)`` if ``exc`` is the user's to fix (config, input file, path), else None."""
    from koemorph.config_rules import ConfigError
    from koemorph.errors import InputError

    if isinstance(exc, CommandError):
        return str(exc), exc.code
    if isinstance(exc, (ConfigError, InputError)):
        return str(exc), 2
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return (f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)), 2
    return None


def _guard(command):
    """Run ``command``: a user error prints ``error: <message>`` verbatim on stderr and exits 2 (or the
    code it carries); any other exception is a bug: its traceback, then :data:`BUG_HINT`, exit 1."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:
            known = _user_error(exc)
            if known is None:
                traceback.print_exc()
                typer.echo(BUG_HINT, err=True)
                raise typer.Exit(1) from None
            _print_error(known[0])
            raise typer.Exit(known[1]) from None

    return run


def _print_error(message: str) -> None:
    """``error: <message>`` on stderr, the message verbatim (no Rich markup, no wrapping)."""
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error:", "red"), " ", message))


app = _App(
    help="koemorph: speech audio to the 52 ARKit blendshapes (30/60 fps).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    add_completion=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Config file; missing file = built-in defaults.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set data.split_seed=3 (repeatable)."),
]


def _config(params: Path, overrides: list[str] | None, extra: dict | None = None):
    from koemorph.config import load_config

    try:
        return load_config(params, overrides or (), extra)
    except ValueError as exc:
        _fail(f"bad config: {exc}", code=2)


def _fail(message: str, code: int = 1):
    raise CommandError(message, code)


def _checkpoint(spec: str | Path, missing: str | None = None) -> str:
    """``spec``, after failing naming the file if it is a local file that cannot be read as a koemorph
    checkpoint (empty, truncated, garbage); a spec that is no file fails with ``missing`` if given
    (else it is left to the loader: an MLflow URI, or its own "no such file")."""
    from koemorph.errors import InputError

    path = Path(spec)
    if not path.is_file():
        if missing:
            _fail(f"{path}: {missing}", code=2)
        return str(spec)
    from koemorph.training.checkpoint import load_checkpoint

    try:
        load_checkpoint(path)
    except InputError:
        raise
    except Exception as exc:  # whatever the unpickler says, the file is the problem
        if str(path) in str(exc):
            _fail(str(exc), code=2)
        cause = "the file is empty" if path.stat().st_size == 0 else f"{type(exc).__name__}: {exc}"
        _fail(f"{path}: not a readable koemorph checkpoint ({cause})", code=2)
    return str(spec)


def _need_opensmile(features) -> None:
    """Fail with both ways out if eGeMAPS is on and openSMILE (the `egemaps` extra) is missing."""
    if not features.egemaps:
        return
    try:
        import opensmile  # noqa: F401
    except (ImportError, OSError) as exc:
        _fail(EGEMAPS_MISSING.format(cause=exc), code=2)


@app.command("params")
def params_cmd(
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Write here instead of printing.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Print the whole config (built-in defaults <- params.yaml <- --set) as a commented params.yaml."""
    cfg = _config(params, set_)
    from koemorph.io.atomic import atomic_write_text
    from koemorph.params_file import params_yaml

    text = params_yaml(cfg)
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
        typer.echo(f"wrote {out}", err=True)


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[
        Path | None, typer.Argument(help="Folder to write train/ val/ test/ into (default: demo.out_dir).")
    ] = None,
    minutes: Annotated[float | None, typer.Option(help="Total minutes of speech.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: same seed, same bytes.")] = None,
    engines: Annotated[
        str | None,
        typer.Option(help="Comma-separated: espeak (pip wheel), flite, festival (Debian packages)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel synthesis processes.")] = 2,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Generate a paired demo corpus: speech WAVs, ARKit JSONL tracks and phone timings."""
    chosen = {"minutes": minutes, "seed": seed, "engines": engines and engines.split(",")}
    cfg = _config(params, set_, {"demo": {k: v for k, v in chosen.items() if v is not None}})
    from koemorph.demo.corpus import generate_corpus
    from koemorph.demo.engines import EngineMissing

    try:
        summary = generate_corpus(
            out_dir or Path(cfg.demo.out_dir),
            minutes=cfg.demo.minutes,
            seed=cfg.demo.seed,
            workers=workers,
            engines=cfg.demo.engines,
        )
    except (EngineMissing, ValueError) as exc:
        _fail(str(exc), code=2)
    _print_summary("demo corpus", summary)


@app.command("manifest")
def manifest(
    data_dir: Annotated[
        Path | None,
        typer.Argument(help="Folder searched recursively for audio + tracks (default: paths.data_dir)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Manifest to write, JSONL (default: paths.manifest)."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any file is unpaired or bad.")] = False,
    audio_only: Annotated[
        bool,
        typer.Option("--audio-only", help="Also list audio without a track (renderable, not trainable)."),
    ] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Pair audio with blendshape tracks by stem and write a JSONL manifest with splits."""
    cfg = _config(params, set_)
    from koemorph.data.manifest import build_manifest, empty_manifest_message, print_manifest_summary

    data_dir, out = data_dir or Path(cfg.paths.data_dir), out or Path(cfg.paths.manifest)
    if not data_dir.is_dir():
        _fail(f"{data_dir}: not a folder", code=2)
    result = build_manifest(data_dir, out, cfg.data, include_audio_only=audio_only)
    print_manifest_summary(result)
    if not result.entries:
        _fail(empty_manifest_message(data_dir, result))
    if strict and result.problems:
        raise typer.Exit(1)


@app.command("import-livelink")
def import_livelink(
    takes_dir: Annotated[Path, typer.Argument(help="Folder of Live Link Face takes (CSV + .mov each).")],
    out_dir: Annotated[Path, typer.Argument(help="Where to write <take>.wav + <take>.jsonl pairs.")],
    swap_mouth_lr: Annotated[
        bool | None,
        typer.Option("--swap-mouth-lr/--no-swap-mouth-lr", help="Undo the app's MouthLeft/Right swap."),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Convert Live Link Face takes to 16 kHz WAV + JSONL pairs (audio taken out of the .mov)."""
    cfg = _config(params, set_)
    from koemorph.data.livelink import import_takes

    swap = cfg.data.swap_mouth_lr if swap_mouth_lr is None else swap_mouth_lr
    if not takes_dir.is_dir():
        _fail(f"{takes_dir}: not a folder", code=2)
    records = import_takes(
        takes_dir, out_dir, swap_mouth_lr=swap, tolerance_s=cfg.data.max_duration_mismatch_s
    )
    if not records:
        _fail(f"{takes_dir}: no Live Link Face takes found (a take is a folder with a .csv and a .mov)")
    failed = [r for r in records if r.get("status") == "error"]
    _print_summary(
        "import-livelink",
        {"takes": len(records), "imported": len(records) - len(failed), "failed": len(failed)},
    )
    for r in failed:
        typer.echo(f"  failed: {r.get('error')}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command("extract")
def extract(
    manifest: Annotated[
        Path | None, typer.Argument(help="Manifest from `koemorph manifest` (default: paths.manifest).")
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="Zarr store to create or update (default: paths.store).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="LocalCluster worker processes (default: all cores).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Existing Dask scheduler address (or $DASK_SCHEDULER_ADDRESS).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Cache log-mel, eGeMAPS and targets per file on the frame grid in a Zarr store (resumable).

    eGeMAPS uses openSMILE, whose licence is research-only: `--set features.egemaps=false` for
    commercial work (see README).
    """
    cfg = _config(params, set_)
    manifest, store = manifest or Path(cfg.paths.manifest), store or Path(cfg.paths.store)
    if not manifest.is_file():
        _fail(f"{manifest}: no manifest; run `koemorph manifest DATA_DIR -o {manifest}` first", code=2)
    _need_opensmile(cfg.features)
    from koemorph.data.store import sidecar
    from pipeline.extract import extract as run_extract

    try:
        summary = run_extract(manifest, store, cfg, workers=workers, scheduler=scheduler)
    except RuntimeError as exc:
        _fail(str(exc), code=2)
    _print_summary(f"extract {store}", summary)
    if summary["error files"]:
        typer.echo(
            f"{summary['error files']} file(s) failed: see {sidecar(store, 'failures.jsonl')}", err=True
        )
        _print_failures(sidecar(store, "failures.jsonl"))
        raise typer.Exit(1)


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


def _launch_ranks(nproc: int, store, out, tracking_uri, epochs, max_minutes, params, resume, sets):
    """``koemorph train`` with these options on ``nproc`` local ranks (torchrun); exits with its code."""
    import os

    from koemorph.training.distributed import launch

    if os.environ.get("WORLD_SIZE"):
        _fail("--nproc: already running under torchrun (WORLD_SIZE is set); leave --nproc out", code=2)
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
    cfg = _config(params, set_)
    store = store or Path(cfg.paths.store)
    if not store.exists():
        _fail(f"{store}: no feature store; run `koemorph extract MANIFEST --store {store}` first", code=2)
    out_dir = out or Path(cfg.paths.run_dir)
    if resume:
        _checkpoint(out_dir / "last.pt", missing="nothing to resume")
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
        _fail(str(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C: the loop saved what it could (TrainingInterrupted)
        _fail(_interrupted(exc), code=130)
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
    _print_summary(f"train {out_dir}", summary)
    uri = s["tracking_uri"]
    typer.echo(f'MLflow UI: pip install -e ".[ui]" && mlflow ui --backend-store-uri {uri}')


@app.command("render")
def render(
    input_dir: Annotated[
        Path | None,
        typer.Argument(
            help="Folder searched recursively for .wav, .flac, .ogg (default: paths.render_input)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Checkpoint or MLflow URI (runs:/<run_id>/<path>, models:/<name>/<version>);"
            " default: paths.run_dir/best.pt.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            help="Output folder: mirrors INPUT_DIR, plus render_manifest.jsonl (default: paths.render_dir).",
        ),
    ] = None,
    fps: Annotated[
        int | None, typer.Option("--fps", help="30 or 60 (default: render.fps, 0 = the model's).")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="jsonl | livelink-csv | beat-json (default: render.format)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="LocalCluster worker processes (default: all cores; 0: no Dask).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Existing Dask scheduler address (or $DASK_SCHEDULER_ADDRESS).")
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="Feature store to reuse cached features from.")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
        ),
    ] = None,
    smooth_mouth: Annotated[
        float | None,
        typer.Option(help="Extra Savitzky-Golay smoothing of the mouth, window in s (0 = off)."),
    ] = None,
    smooth_face: Annotated[
        float | None, typer.Option(help="Same for the upper face / expression channels (0 = off).")
    ] = None,
    rest_pose: Annotated[
        bool | None,
        typer.Option("--rest-pose/--no-rest-pose", help="Ease the mouth to 0 in long silences."),
    ] = None,
    rest_threshold_db: Annotated[
        float | None, typer.Option(help="Silence: RMS this far below the file's speech level.")
    ] = None,
    clamp: Annotated[
        list[str] | None,
        typer.Option(
            "--clamp",
            help="NAME=LO:HI, bounds numbers or channel names, e.g. mouthClose=0:jawOpen (repeatable).",
        ),
    ] = None,
    runtime: Annotated[
        str, typer.Option("--runtime", help="torch | onnx (onnxruntime on the checkpoint's ONNX export).")
    ] = "torch",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Render every audio file under INPUT_DIR to blendshapes, one output per input (mirrored tree).

    Options left out come from the `render` and `paths` sections of the config. Re-running skips
    files whose audio, model, fps, format and post-processing are unchanged.
    Audio: .wav, .flac, .ogg (libsndfile); convert .mp3/.m4a first (they need an extra decoder).
    """
    try:
        options = {
            "format": fmt,
            "fps": fps,
            "smooth_mouth_s": smooth_mouth,
            "smooth_face_s": smooth_face,
            "rest_pose": rest_pose,
            "rest_threshold_db": rest_threshold_db,
        }
        if clamp:
            from koemorph.inference.postprocess import parse_clamp

            options["clamp"] = parse_clamp(clamp)
    except ValueError as exc:
        _fail(str(exc), code=2)
    cfg = _config(params, set_, {"render": {k: v for k, v in options.items() if v is not None}})
    paths = cfg.paths
    input_dir, out = input_dir or Path(paths.render_input), out or Path(paths.render_dir)
    from pipeline.render import render as run_render

    try:
        summary = run_render(
            input_dir,
            out,
            _checkpoint(model or Path(paths.run_dir) / "best.pt"),
            fmt=cfg.render.format,
            fps=cfg.render.fps or None,
            post=cfg.render,
            store=store,
            workers=workers,
            scheduler=scheduler,
            tracking_uri=tracking_uri,
            runtime=runtime,
        )
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc), code=2)
    errors = summary.pop("errors")
    _print_summary(f"render {out}", summary)
    for message in errors[:20]:
        typer.echo(f"  failed: {message}", err=True)
    if len(errors) > 20:
        typer.echo(f"  ... and {len(errors) - 20} more (see {summary['manifest']})", err=True)
    if errors:
        raise typer.Exit(1)


@app.command("evaluate")
def evaluate(
    pred_dir: Annotated[
        Path | None,
        typer.Argument(help="Predicted tracks, e.g. `koemorph render` output (default: paths.render_dir)."),
    ] = None,
    truth_dir: Annotated[
        Path | None,
        typer.Argument(
            help="True tracks, paired by relative path and stem, with audio (default: paths.render_input)."
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            help="Feature store: enables the mean-pose and ridge baselines"
            " (default: paths.store if it exists).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: paths.report_dir).")
    ] = None,
    fps: Annotated[
        int | None,
        typer.Option("--fps", help="Grid frame rate to score at, 30 or 60 (default: features.fps)."),
    ] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="MLflow run id to log metrics and files to.")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
        ),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any file could not be scored.")] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Score predicted blendshape tracks against true ones, with mean-pose and ridge baselines beside them.

    Metric settings: the `evaluate` section of the config (e.g. --set evaluate.silence_db=30).
    """
    full = _config(params, set_)
    cfg, paths = full.evaluate, full.paths
    pred_dir, truth_dir = pred_dir or Path(paths.render_dir), truth_dir or Path(paths.render_input)
    out, fps = out or Path(paths.report_dir), fps or full.features.fps
    if store is None and Path(paths.store).exists():
        store = Path(paths.store)
    for folder in (pred_dir, truth_dir):
        if not folder.is_dir():
            _fail(f"{folder}: not a folder", code=2)
    from koemorph.evaluation.evaluate import evaluate as run_evaluate
    from koemorph.evaluation.report import log_to_mlflow, print_table, write_outputs

    try:
        ev = run_evaluate(
            pred_dir, truth_dir, fps=fps, store=store, cfg=cfg, ridge_cache=out / "ridge.npz", log=typer.echo
        )
    except ValueError as exc:
        _fail(str(exc), code=2)
    context = {"pred_dir": str(pred_dir), "truth_dir": str(truth_dir), "store": str(store) if store else None}
    metrics = write_outputs(ev, out, cfg, context)
    print_table(metrics, ev.notes)
    for failure in ev.failures:
        typer.echo(f"  not scored: {failure['problem']}", err=True)
    typer.echo(f"wrote {out}/metrics.json, per_file.csv, per_channel.csv and plots")
    if run:
        uri = log_to_mlflow(run, metrics, out, tracking_uri)
        typer.echo(f"logged to MLflow run {run} ({uri})")
    if not ev.truths:
        _fail("no file could be scored")
    if strict and ev.failures:
        raise typer.Exit(1)


@app.command("summary")
def summary_cmd(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """What the pipeline made: data, training, model vs baselines, and where renders, plots and MLflow are."""
    cfg = _config(params, set_)
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from koemorph.evaluation.summary import pipeline_summary

    table = Table(title="koemorph pipeline", show_header=False)
    for label, text in pipeline_summary(cfg):
        table.add_row(label, Text(text))  # plain text: `.[ui]` is not markup
    Console().print(table)


def _print_failures(path: Path, limit: int = 20):
    from koemorph.io.atomic import read_jsonl

    rows = read_jsonl(path)
    for row in rows[:limit]:
        typer.echo(f"  {row.get('error')}", err=True)
    if len(rows) > limit:
        typer.echo(f"  ... and {len(rows) - limit} more", err=True)


def _print_summary(title: str, summary: dict):
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), show_header=False)  # Text: paths like take[1].wav are not markup
    for key, value in summary.items():
        table.add_row(Text(str(key)), Text(f"{value:.3f}" if isinstance(value, float) else str(value)))
    Console().print(table)


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `koemorph train`.")],
    onnx: Annotated[Path, typer.Option("--onnx", help="Output ONNX file: the block model.")],
):
    """Export a checkpoint's block model (features in, frames out) to ONNX, with its metadata."""
    from koemorph.inference.export import export_checkpoint

    if not checkpoint.is_file():
        _fail(f"{checkpoint}: no such checkpoint", code=2)
    try:
        out = export_checkpoint(checkpoint, onnx)
    except (ValueError, KeyError, ImportError) as exc:
        _fail(f"{checkpoint}: {exc}", code=2)
    typer.echo(f"wrote {out}")


@app.command("preview")
def preview_cmd(
    audio: Annotated[Path, typer.Argument(help="Audio file, or a folder of them (then TRACKs are folders).")],
    tracks: Annotated[
        list[Path] | None, typer.Argument(help="Blendshape tracks (or folders) shown beside each other.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Checkpoint or MLflow URI: its render is shown first.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Page (default preview.html), or folder (default previews)."),
    ] = None,
    channel: Annotated[
        list[str] | None, typer.Option("--channel", help="ARKit channel whose curve is shown (repeatable).")
    ] = None,
    fps: Annotated[int, typer.Option("--fps", help="Grid of the preview: 30 or 60.")] = 30,
    mp4: Annotated[
        bool, typer.Option("--mp4", help="Also write an MP4 with the audio beside each page.")
    ] = False,
    runtime: Annotated[str, typer.Option("--runtime", help="torch | onnx, for --model.")] = "torch",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Self-contained HTML pages with faces drawn from the tracks, in sync with the audio (#t=SECONDS)."""
    from koemorph.preview.build import preview_file, preview_folder

    cfg = _config(params, set_)
    tracks = tracks or []
    options = {"model": model, "channels": channel, "fps": fps, "runtime": runtime}
    try:
        if audio.is_dir():
            done = preview_folder(audio, tracks, out or Path("previews"), cfg=cfg, mp4=mp4, **options)
        elif audio.is_file():
            done = preview_file(audio, tracks, out or Path("preview.html"), cfg=cfg, mp4=mp4, **options)
        else:
            _fail(f"{audio}: no such file or folder", code=2)
    except (OSError, ValueError, KeyError) as exc:
        _fail(str(exc), code=2)
    typer.echo(
        f"wrote {done.get('index') or done['page']}" + (f" and {done['mp4']}" if done.get("mp4") else "")
    )
    for message in done.get("errors", []):
        typer.echo(f"  failed: {message}", err=True)
    if done.get("errors"):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
