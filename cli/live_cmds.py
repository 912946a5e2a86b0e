"""Commands that take a model further: ``export`` (ONNX), ``preview`` (faces) and ``stream`` (live)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import ParamsOpt, SetOpt, app, config_from, fail


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `koemorph train`.")],
    onnx: Annotated[Path, typer.Option("--onnx", help="Output ONNX file: the block model.")],
):
    """Export a checkpoint's block model (features in, frames out) to ONNX, with its metadata."""
    from koemorph.inference.export import export_checkpoint

    if not checkpoint.is_file():
        fail(f"{checkpoint}: no such checkpoint", code=2)
    try:
        out = export_checkpoint(checkpoint, onnx)
    except (ValueError, KeyError, ImportError) as exc:
        fail(f"{checkpoint}: {exc}", code=2)
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

    cfg = config_from(params, set_)
    tracks = tracks or []
    options = {"model": model, "channels": channel, "fps": fps, "runtime": runtime}
    try:
        if audio.is_dir():
            done = preview_folder(audio, tracks, out or Path("previews"), cfg=cfg, mp4=mp4, **options)
        elif audio.is_file():
            done = preview_file(audio, tracks, out or Path("preview.html"), cfg=cfg, mp4=mp4, **options)
        else:
            fail(f"{audio}: no such file or folder", code=2)
    except (OSError, ValueError, KeyError) as exc:
        fail(str(exc), code=2)
    typer.echo(
        f"wrote {done.get('index') or done['page']}" + (f" and {done['mp4']}" if done.get("mp4") else "")
    )
    for message in done.get("errors", []):
        typer.echo(f"  failed: {message}", err=True)
    if done.get("errors"):
        raise typer.Exit(1)


@app.command("stream")
def stream_cmd(
    source: Annotated[
        str | None, typer.Argument(help="Audio file, or '-' / nothing for raw PCM on stdin.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Checkpoint, or a bundled model: 'default-live' (when left out; the phones decoded "
            "as a stream decodes them) or 'default' (render's).",
        ),
    ] = None,
    chunk_s: Annotated[float, typer.Option("--chunk-s", help="Chunk length in seconds.")] = 0.033,
    realtime: Annotated[bool, typer.Option("--realtime", help="Pace a file source in real time.")] = False,
    rate: Annotated[int, typer.Option("--rate", help="Sample rate of stdin / microphone PCM (Hz).")] = 16000,
    fmt: Annotated[str, typer.Option("--format", help="stdin PCM: s16le | f32le.")] = "s16le",
    channels: Annotated[int, typer.Option("--channels", help="stdin / microphone channels.")] = 1,
    mic: Annotated[bool, typer.Option("--mic", help="Read the default microphone (extra: mic).")] = False,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="JSONL on stdout (default with no other sink).")
    ] = False,
    osc: Annotated[
        str | None, typer.Option("--osc", help="HOST:PORT: VMC blendshape messages over OSC.")
    ] = None,
    ws: Annotated[
        str | None, typer.Option("--ws", help="HOST:PORT: WebSocket server broadcasting frames.")
    ] = None,
    ws_wait: Annotated[int, typer.Option("--ws-wait", help="Wait for N WebSocket clients first.")] = 0,
    threads: Annotated[int, typer.Option("--threads", help="torch threads.")] = 1,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Stream audio through the model: frames as they become computable, to JSONL / OSC / WebSocket.

    Frames are those `koemorph render` writes for the same audio (frame k at k/fps s from the start;
    an input far from the training levels is scaled to them once a second is heard: render.match_level).
    Latency, RTF and input level go to stderr; Ctrl-C flushes the last frames and closes the sinks.
    """
    from koemorph.errors import InputError
    from koemorph.inference import live
    from koemorph.inference.stream import Streamer

    cfg = config_from(params, set_)  # a bad params file or --set stops here, as for every command
    from koemorph.inference.bundled import LIVE_NAME, resolve

    ckpt = resolve(model, default=LIVE_NAME)
    try:
        rate, chunks, name = live.open_source(source, mic, rate, fmt, channels, chunk_s, realtime)
        streamer = Streamer.from_checkpoint(
            ckpt, rate=rate, name=name, threads=threads, match_level=cfg.render.match_level
        )
        sinks = live.open_sinks(jsonl, osc, ws, ws_wait)
    except (InputError, ValueError, OSError, RuntimeError) as exc:
        fail(str(exc), code=2)
    try:
        summary = live.run(streamer, chunks, sinks, chunk_s)
    except InputError as exc:
        fail(str(exc))
    if summary["interrupted"]:
        raise typer.Exit(130)
