"""Dask driver for ``koemorph render``: one task per input file, results gathered as they finish.

Thin by design: the work is :func:`koemorph.inference.render.render_file`; this module resolves the model,
plans, and hands the jobs to :func:`pipeline.jobs.run_jobs`, which preloads and warms the model once per
worker and ends with :func:`koemorph.inference.render.finish` (the only writer of the manifest).
"""

from __future__ import annotations

from pathlib import Path

from koemorph.inference.postprocess import RenderConfig
from pipeline.jobs import run_jobs


def _preload(path: str, sha256: str) -> None:
    """Worker-side: load the model into this process's cache, with one torch thread, and warm up."""
    from koemorph.inference.render import warm_up

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
) -> dict:
    """Render every audio file under ``input_dir`` into ``out_dir``; return the summary of
    :func:`koemorph.inference.render.finish`. ``workers=0`` runs in this process without Dask."""
    from koemorph.inference.render import failed, finish, plan, render_file, resolve_model

    if not Path(input_dir).is_dir():
        raise FileNotFoundError(f"{input_dir}: not a folder")
    ref = resolve_model(model, out_dir, tracking_uri)
    local = workers == 0 and not scheduler
    jobs, records = plan(
        input_dir, out_dir, ref, fmt=fmt, fps=fps, post=post, store=store, threads=None if local else 1
    )
    summary = run_jobs(
        jobs,
        render_file,
        lambda records: finish(out_dir, records),
        done=records,
        failed=failed,
        source=lambda job: job.input,
        seconds=lambda job: job.duration,
        label="render",
        statuses=("ok", "skipped", "error"),
        workers=workers,
        scheduler=scheduler,
        local=local,
        on_start=lambda client: client.run(_preload, ref.path, ref.sha256),  # once per worker, in parallel
    )
    summary["model"] = ref.id
    return summary
