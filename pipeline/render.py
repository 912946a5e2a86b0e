"""Dask driver for ``koemorph render``: one task per input file, results gathered as they finish.

Thin by design: the work is :func:`koemorph.inference.render.render_file`; this module locks the output
folder, resolves the model, plans, and hands the jobs to :func:`pipeline.jobs.run_jobs`, which preloads
and warms the model once per worker; each record is journalled as it arrives, and
:func:`koemorph.inference.manifest.finish` writes the manifest (this driver is its only writer).
"""

from __future__ import annotations

from pathlib import Path

from koemorph.inference.postprocess import RenderConfig
from pipeline.jobs import run_jobs


def _preload(path: str, sha256: str) -> None:
    """Worker-side: load the model into this process's cache, with one torch thread, and warm up."""
    from koemorph.inference.models import warm_up

    warm_up(path, sha256, threads=1)


def render(
    input_dir: Path,
    out_dir: Path,
    model: str,
    *,
    fmt: str = "jsonl",
    fps: int | None = None,
    post: RenderConfig | None = None,
    store: Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    tracking_uri: str | None = None,
    runtime: str = "torch",
) -> dict:
    """Render every audio file under ``input_dir`` into ``out_dir``; return the summary of
    :func:`koemorph.inference.manifest.finish`. ``workers=0`` runs in this process without Dask;
    ``runtime="onnx"`` runs the model's blocks with onnxruntime on its ONNX export.
    Interrupted (Ctrl-C), it records what finished and re-raises; killed, the journal has it."""
    from koemorph.inference.manifest import render_lock
    from koemorph.inference.models import resolve_model

    if not Path(input_dir).is_dir():
        raise FileNotFoundError(f"{input_dir}: not a folder")
    ref = resolve_model(model, out_dir, tracking_uri, runtime)
    with render_lock(out_dir):
        return _render(input_dir, out_dir, ref, fmt, fps, post, store, workers, scheduler)


def _render(input_dir, out_dir, ref, fmt, fps, post, store, workers, scheduler) -> dict:
    from koemorph.inference.manifest import Journal, finish
    from koemorph.inference.render import failed, plan, render_file

    local = workers == 0 and not scheduler
    jobs, records = plan(
        input_dir, out_dir, ref, fmt=fmt, fps=fps, post=post, store=store, threads=None if local else 1
    )
    scope = {  # which older manifest records this run supersedes
        "input_dir": str(Path(input_dir).resolve()),
        "planned": {j.rel for j in jobs} | {r.input for r in records},
    }
    journal = Journal(out_dir) if jobs else None
    try:
        summary = run_jobs(
            jobs,
            render_file,
            lambda done: finish(out_dir, done, **scope),
            done=records,
            failed=failed,
            source=lambda job: job.input,
            seconds=lambda job: job.duration,
            label="render",
            statuses=("ok", "skipped", "error"),
            workers=workers,
            scheduler=scheduler,
            local=local,
            on_start=lambda client: client.run(_preload, ref.path, ref.sha256),  # once per worker
            on_record=journal.append if journal else None,
        )
    finally:
        if journal is not None:
            journal.close()
    summary["model"] = ref.id
    return summary
