"""Dask driver for ``koemorph render``: one task per input file, results gathered as they finish.

Thin by design: the work is :func:`koemorph.inference.render.render_file`; this module resolves the model,
plans, starts (or joins) a cluster, preloads and warms the model once per worker, shows progress and hands
the records to :func:`koemorph.inference.render.finish` (the only writer of the manifest).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from koemorph.inference.postprocess import RenderConfig
from pipeline.dask_utils import close_client, dask_client, run_map


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
    runtime: str = "torch",
) -> dict:
    """Render every audio file under ``input_dir`` into ``out_dir``; return the summary of
    :func:`koemorph.inference.render.finish`. ``workers=0`` runs in this process without Dask;
    ``runtime="onnx"`` runs the model's blocks with onnxruntime on its ONNX export."""
    from koemorph.inference.render import finish, plan, render_file, resolve_model

    if not Path(input_dir).is_dir():
        raise FileNotFoundError(f"{input_dir}: not a folder")
    if runtime not in ("torch", "onnx"):
        raise ValueError(f"unknown runtime {runtime!r}: choose 'torch' or 'onnx'")
    ref = dataclasses.replace(resolve_model(model, out_dir, tracking_uri), runtime=runtime)
    local = workers == 0 and not scheduler
    jobs, records = plan(
        input_dir, out_dir, ref, fmt=fmt, fps=fps, post=post, store=store, threads=None if local else 1
    )
    if jobs:
        client = None if local else dask_client(workers, scheduler)
        try:
            if client is not None:
                client.run(_preload, ref.path, ref.sha256)  # once per worker, in parallel
            for record in run_map(render_file, jobs, client, lambda j: j.duration, "render"):
                records.append(record)
        except KeyboardInterrupt:  # keep what finished: its outputs are complete and recorded
            finish(out_dir, records)
            raise
        finally:
            if client is not None:
                close_client(client)
    summary = finish(out_dir, records)
    summary["model"] = ref.id
    return summary
