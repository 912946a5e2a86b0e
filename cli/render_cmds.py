"""``koemorph render``, ``evaluate`` and ``summary``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import (
    ModelOpt,
    ParamsOpt,
    RuntimeOpt,
    SchedulerOpt,
    SetOpt,
    TrackingUriOpt,
    WorkersOpt,
    app,
    config_from,
    fail,
    print_summary,
)

RenderInputArg = Annotated[
    Path | None,
    typer.Argument(help="Folder searched recursively for .wav, .flac, .ogg (default: paths.render_input)."),
]
RenderOutOpt = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--out",
        help="Output folder: mirrors INPUT_DIR, plus render_manifest.jsonl (default: paths.render_dir).",
    ),
]
SmoothMouthOpt = Annotated[
    float | None, typer.Option(help="Extra Savitzky-Golay smoothing of the mouth, window in s (0 = off).")
]
SmoothFaceOpt = Annotated[
    float | None, typer.Option(help="Same for the upper face / expression channels (0 = off).")
]
RestPoseOpt = Annotated[
    bool | None, typer.Option("--rest-pose/--no-rest-pose", help="Ease the mouth to 0 in long silences.")
]
RestDbOpt = Annotated[float | None, typer.Option(help="Silence: RMS this far below the file's speech level.")]
ClampOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--clamp", help="NAME=LO:HI, bounds numbers or channel names, e.g. mouthClose=0:jawOpen (repeatable)."
    ),
]


TranscriptsOpt = Annotated[
    bool | None,
    typer.Option(
        "--transcripts/--no-transcripts",
        help="Read NAME.txt beside NAME.wav as the words said (phone models; default: render.transcripts).",
    ),
]
FpsOpt = Annotated[int | None, typer.Option("--fps", help="30 or 60 (default: render.fps, 0 = the model's).")]
FormatOpt = Annotated[
    str | None, typer.Option("--format", help="jsonl | livelink-csv | beat-json (default: render.format).")
]
StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="Feature store to reuse cached features from.")
]
RecogniseOpt = Annotated[
    bool | None,
    typer.Option(
        "--recognise-words/--no-recognise-words",
        help="A file without NAME.txt: recognise its words and read them as its transcript (phone "
        "models; slower; default: render.recognise_words).",
    ),
]


def _render_options(
    fmt, fps, smooth_mouth, smooth_face, rest_pose, rest_threshold_db, clamp, transcripts, recognise
) -> dict:
    """The render options given on the command line, as a ``render`` config section (None: not given)."""
    options = {
        "format": fmt,
        "fps": fps,
        "smooth_mouth_s": smooth_mouth,
        "smooth_face_s": smooth_face,
        "rest_pose": rest_pose,
        "rest_threshold_db": rest_threshold_db,
        "transcripts": transcripts,
        "recognise_words": recognise,
    }
    if clamp:
        from koemorph.inference.postprocess import parse_clamp

        try:
            options["clamp"] = parse_clamp(clamp)
        except ValueError as exc:
            fail(str(exc), code=2)
    return {k: v for k, v in options.items() if v is not None}


def _report_errors(errors: list[str], manifest: str) -> None:
    """The first 20 per-file errors on stderr; exit 1 if there are any."""
    for message in errors[:20]:
        typer.echo(f"  failed: {message}", err=True)
    if len(errors) > 20:
        typer.echo(f"  ... and {len(errors) - 20} more (see {manifest})", err=True)
    if errors:
        raise typer.Exit(1)


@app.command("render")
def render(
    input_dir: RenderInputArg = None,
    model: ModelOpt = None,
    out: RenderOutOpt = None,
    fps: FpsOpt = None,
    fmt: FormatOpt = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    store: StoreOpt = None,
    tracking_uri: TrackingUriOpt = None,
    smooth_mouth: SmoothMouthOpt = None,
    smooth_face: SmoothFaceOpt = None,
    rest_pose: RestPoseOpt = None,
    rest_threshold_db: RestDbOpt = None,
    clamp: ClampOpt = None,
    transcripts: TranscriptsOpt = None,
    recognise_words: RecogniseOpt = None,
    runtime: RuntimeOpt = "torch",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Render every audio file under INPUT_DIR to blendshapes, one output per input (mirrored tree).

    Options left out come from the `render` and `paths` sections of the config. Re-running skips
    files whose audio, transcript, model, fps, format and post-processing are unchanged.
    Audio: .wav, .flac, .ogg (libsndfile); convert .mp3/.m4a first (they need an extra decoder).
    """
    options = _render_options(
        fmt, fps, smooth_mouth, smooth_face, rest_pose, rest_threshold_db, clamp, transcripts, recognise_words
    )
    cfg = config_from(params, set_, {"render": options})
    paths = cfg.paths
    input_dir, out = input_dir or Path(paths.render_input), out or Path(paths.render_dir)
    from pipeline.render import render as run_render

    try:
        summary = run_render(
            input_dir,
            out,
            model or "default",  # resolved and checked by the loader
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
        fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc), code=2)
    errors = summary.pop("errors")
    print_summary(f"render {out}", summary)
    _report_errors(errors, summary["manifest"])


PredDirArg = Annotated[
    Path | None,
    typer.Argument(help="Predicted tracks, e.g. `koemorph render` output (default: paths.render_dir)."),
]
TruthDirArg = Annotated[
    Path | None,
    typer.Argument(
        help="True tracks, paired by relative path and stem, with audio (default: paths.render_input)."
    ),
]
BaselineStoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Feature store: enables the mean-pose and ridge baselines (default: paths.store if it exists).",
    ),
]
ScoreFpsOpt = Annotated[
    int | None, typer.Option("--fps", help="Grid frame rate to score at, 30 or 60 (default: features.fps).")
]


@app.command("evaluate")
def evaluate(
    pred_dir: PredDirArg = None,
    truth_dir: TruthDirArg = None,
    store: BaselineStoreOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: paths.report_dir).")
    ] = None,
    fps: ScoreFpsOpt = None,
    run: Annotated[
        str | None, typer.Option("--run", help="MLflow run id to log metrics and files to.")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any file could not be scored.")] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Score predicted blendshape tracks against true ones, with mean-pose and ridge baselines beside them.

    Metric settings: the `evaluate` section of the config (e.g. --set evaluate.silence_db=30).
    """
    full = config_from(params, set_)
    cfg, paths = full.evaluate, full.paths
    pred_dir, truth_dir = pred_dir or Path(paths.render_dir), truth_dir or Path(paths.render_input)
    out, fps = out or Path(paths.report_dir), fps or full.features.fps
    if store is None and Path(paths.store).exists():
        store = Path(paths.store)
    for folder in (pred_dir, truth_dir):
        if not folder.is_dir():
            fail(f"{folder}: not a folder", code=2)
    from koemorph.evaluation.evaluate import evaluate as run_evaluate

    try:
        ev = run_evaluate(
            pred_dir, truth_dir, fps=fps, store=store, cfg=cfg, ridge_cache=out / "ridge.npz", log=typer.echo
        )
    except ValueError as exc:
        fail(str(exc), code=2)
    context = {"pred_dir": str(pred_dir), "truth_dir": str(truth_dir), "store": str(store) if store else None}
    metrics = _report_evaluation(ev, cfg, out, context)
    if run:
        from koemorph.evaluation.report import log_to_mlflow

        uri = log_to_mlflow(run, metrics, out, tracking_uri)
        typer.echo(f"logged to MLflow run {run} ({uri})")
    if not ev.truths:
        fail("no file could be scored")
    if strict and ev.failures:
        raise typer.Exit(1)


def _report_evaluation(ev, cfg, out: Path, context: dict) -> dict:
    """Write the evaluation's files into ``out``, print its table and unscored files; its metrics."""
    from koemorph.evaluation.report import print_table, write_outputs

    metrics = write_outputs(ev, out, cfg, context)
    print_table(metrics, ev.notes)
    for failure in ev.failures:
        typer.echo(f"  not scored: {failure['problem']}", err=True)
    typer.echo(f"wrote {out}/metrics.json, per_file.csv, per_channel.csv and plots")
    return metrics


@app.command("summary")
def summary_cmd(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """What the pipeline made: data, training, model vs baselines, and where renders, plots and MLflow are."""
    cfg = config_from(params, set_)
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from koemorph.evaluation.summary import pipeline_summary

    table = Table(title="koemorph pipeline", show_header=False)
    for label, text in pipeline_summary(cfg):
        table.add_row(label, Text(text))  # plain text: `.[ui]` is not markup
    Console().print(table)


@app.command("model-info")
def model_info(
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="The card as JSON.")] = False,
):
    """Print a model's card: inputs, training data (every voice), held-out scores and licence."""
    import json

    from koemorph.inference import bundled

    try:
        card = bundled.describe(bundled.resolve(model))
    except (OSError, ValueError) as exc:
        fail(str(exc), code=2)
    typer.echo(json.dumps(card, indent=1) if as_json else bundled.format_card(card))


@app.command("package-model")
def package_model(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `koemorph train`.")],
    corpus: Annotated[Path, typer.Option("--corpus", help="The demo corpus it was trained on.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Release checkpoint to write.")],
    scores: Annotated[
        Path | None, typer.Option("--scores", help="benchmarks/generalise.py's JSON for the same recipe.")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="The model's name on its card.")] = "default",
):
    """Write a release checkpoint: what rendering needs, plus a model card (`koemorph model-info`)."""
    import json

    from koemorph.inference import bundled
    from koemorph.training.checkpoint import load_checkpoint

    try:
        folds = json.loads(scores.read_text()) if scores else None
        card = bundled.make_card(load_checkpoint(checkpoint), corpus, folds, name)
        bundled.package(checkpoint, out, card)
    except (OSError, ValueError, KeyError) as exc:
        fail(f"{checkpoint}: {exc}", code=2)
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
