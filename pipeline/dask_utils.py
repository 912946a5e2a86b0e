"""Dask helpers shared by the batch drivers (``extract``, ``render``): the client and a progress map."""

from __future__ import annotations

import os


def dask_client(workers: int | None, scheduler: str | None):
    """A client on ``scheduler`` (or $DASK_SCHEDULER_ADDRESS), else on a new LocalCluster.

    Local workers are processes with one thread each: the work is CPU-bound Python/C.
    """
    from distributed import Client, LocalCluster

    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return Client(address)
    n = workers or max(1, min(os.cpu_count() or 1, 8))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})  # fmt: skip
    return Client(cluster)


def close_client(client) -> None:
    """Close ``client`` and, if it started one, its LocalCluster."""
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def progress_columns():
    """rich Progress columns: label, bar, files done, audio seconds done/total, elapsed, ETA."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[files]}"),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s audio"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip


def run_map(fn, jobs, client, describe, label: str):
    """Run ``fn(job)`` for every job on ``client``; yield results as they complete, with a progress bar.

    ``describe(job) -> seconds of audio`` drives the bar (files, audio hours, ETA on stderr).
    ``client=None`` runs the jobs one after the other in this process (no Dask; for debugging).
    """
    from rich.console import Console
    from rich.progress import Progress

    total_s = sum(describe(j) for j in jobs)
    with Progress(*progress_columns(), console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(label, total=max(total_s, 1e-9), files=f"0/{len(jobs)} files")
        if client is None:
            for done, job in enumerate(jobs, 1):
                result = fn(job)
                progress.update(task, advance=describe(job), files=f"{done}/{len(jobs)} files")
                yield result
            return
        from distributed import as_completed

        futures = client.map(fn, jobs, pure=False)
        seconds_of = {f.key: describe(j) for f, j in zip(futures, jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            progress.update(task, advance=seconds_of[future.key], files=f"{done}/{len(jobs)} files")
            yield future.result()
            future.release()
