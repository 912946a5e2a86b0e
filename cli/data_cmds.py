"""Data commands: ``params``, ``demo-data``, ``manifest``, ``import-livelink`` and ``extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import ParamsOpt, SetOpt, app, config_from, fail, need_extras, print_failures, print_summary


@app.command("params")
def params_cmd(
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Write here instead of printing.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
):
    """Print the whole config (built-in defaults <- params.yaml <- --set) as a commented params.yaml."""
    cfg = config_from(params, set_)
    from koemorph.config.params_file import params_yaml
    from koemorph.io.atomic import atomic_write_text

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
    cfg = config_from(params, set_, {"demo": {k: v for k, v in chosen.items() if v is not None}})
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
        fail(str(exc), code=2)
    print_summary("demo corpus", summary)


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
    cfg = config_from(params, set_)
    from koemorph.data.manifest import build_manifest, empty_manifest_message, print_manifest_summary

    data_dir, out = data_dir or Path(cfg.paths.data_dir), out or Path(cfg.paths.manifest)
    if not data_dir.is_dir():
        fail(f"{data_dir}: not a folder", code=2)
    result = build_manifest(data_dir, out, cfg.data, include_audio_only=audio_only)
    print_manifest_summary(result)
    if not result.entries:
        fail(empty_manifest_message(data_dir, result))
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
    cfg = config_from(params, set_)
    from koemorph.data.livelink import import_takes

    swap = cfg.data.swap_mouth_lr if swap_mouth_lr is None else swap_mouth_lr
    if not takes_dir.is_dir():
        fail(f"{takes_dir}: not a folder", code=2)
    records = import_takes(
        takes_dir, out_dir, swap_mouth_lr=swap, tolerance_s=cfg.data.max_duration_mismatch_s
    )
    if not records:
        fail(f"{takes_dir}: no Live Link Face takes found (a take is a folder with a .csv and a .mov)")
    failed = [r for r in records if r.get("status") == "error"]
    print_summary(
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
    """Cache log-mel, recognised phones (eGeMAPS if on) and targets per file on the frame grid in a
    Zarr store (resumable).

    eGeMAPS uses openSMILE, whose licence is research-only: `--set features.egemaps=false` for
    commercial work (see README).
    """
    cfg = config_from(params, set_)
    manifest, store = manifest or Path(cfg.paths.manifest), store or Path(cfg.paths.store)
    if not manifest.is_file():
        fail(f"{manifest}: no manifest; run `koemorph manifest DATA_DIR -o {manifest}` first", code=2)
    need_extras(cfg.features)
    from koemorph.data.store import sidecar
    from pipeline.extract import extract as run_extract

    try:
        summary = run_extract(manifest, store, cfg, workers=workers, scheduler=scheduler)
    except RuntimeError as exc:
        fail(str(exc), code=2)
    print_summary(f"extract {store}", summary)
    if summary["error files"]:
        typer.echo(
            f"{summary['error files']} file(s) failed: see {sidecar(store, 'failures.jsonl')}", err=True
        )
        print_failures(sidecar(store, "failures.jsonl"))
        raise typer.Exit(1)
