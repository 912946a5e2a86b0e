"""Dask helpers shared by the batch drivers (``extract``, ``render``): the client and a progress map."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

# glibc malloc in local workers. Dask's default MALLOC_TRIM_THRESHOLD_=65536 hands freed memory back
# to the OS at once (and fixes the mmap threshold at 128 kB), so every large temporary is faulted in
# again: a render worker spent 0.014 CPU s per audio s in page faults (4.6 M faults for 10 min of
# audio) against 0.001 with these values; they keep at most 64 MB of free heap per worker.
WORKER_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(64 << 20), "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored, so that processes started inside inherit SIG_IGN through exec; the handler
    comes back on exit. Outside the main thread, where handlers cannot change, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def dask_client(workers: int | None, scheduler: str | None):
    """A client on ``scheduler`` (or $DASK_SCHEDULER_ADDRESS), else on a new LocalCluster.

    Local workers are processes with one thread each: the work is CPU-bound Python/C. Ctrl-C is the
    driver's: a terminal signals the whole process group, and a worker killed by it mid-task can leave
    its nanny and the driver's shutdown hanging. So the worker processes start with SIGINT ignored
    (inherited through exec); the price is that a Ctrl-C during the cluster's start (a second or
    two) is ignored too.
    """
    import dask
    from distributed import Client, LocalCluster

    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return Client(address)
    n = workers or max(1, min(os.cpu_count() or 1, 8))
    env = {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        # the worker's statistical profiler samples every 10 ms: ~15% of a core for nothing here
        "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    }
    malloc = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    with _sigint_ignored(), dask.config.set(malloc):  # malloc: in the environment before the spawn
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0", env=env
        )
    return Client(cluster)


def close_client(client) -> None:
    """Close ``client`` and, if it started one, its LocalCluster."""
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def progress_columns():
    """rich Progress columns: label, bar, files done, audio hours done/total, elapsed, ETA."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        TextColumn("{task.fields[hours]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def run_map(fn, jobs, client, describe, label: str):
    """Run ``fn(job)`` for every job on ``client``; yield results as they complete, with a progress bar.

    ``describe(job) -> seconds of audio`` drives the bar (files, audio hours, ETA on stderr).
    ``client=None`` runs the jobs one after the other in this process (no Dask; for debugging).
    """
    from rich.console import Console
    from rich.progress import Progress

    total_s = sum(describe(j) for j in jobs)
    done_s = 0.0

    def advance(progress, task, done: int, seconds: float):
        nonlocal done_s
        done_s += seconds
        progress.update(
            task,
            advance=seconds,
            files=f"{done}/{len(jobs)} files",
            hours=f"{done_s / 3600:.3f}/{total_s / 3600:.3f} h audio",
        )

    with Progress(*progress_columns(), console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(
            label,
            total=max(total_s, 1e-9),
            files=f"0/{len(jobs)} files",
            hours=f"0/{total_s / 3600:.3f} h audio",
        )
        if client is None:
            for done, job in enumerate(jobs, 1):
                result = fn(job)
                advance(progress, task, done, describe(job))
                yield result
            return
        from distributed import as_completed

        futures = client.map(fn, jobs, pure=False)
        seconds_of = {f.key: describe(j) for f, j in zip(futures, jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            advance(progress, task, done, seconds_of[future.key])
            yield future.result()
            future.release()
