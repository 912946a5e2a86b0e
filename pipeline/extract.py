"""Dask driver for ``koemorph extract``: one task per file, results gathered as they finish.

Thin by design: the work is :func:`koemorph.extract.extract_file`; this module starts (or joins)
a cluster, shows progress and hands the records to :func:`koemorph.extract.finish`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from koemorph.config import Config


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


def run_map(fn, jobs, client, describe, label: str):
    """Run ``fn(job)`` for every job on ``client``; yield results as they complete, with a progress bar.

    ``describe(job) -> seconds of audio`` drives the bar (files, audio hours, ETA on stderr).
    """
    from distributed import as_completed
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    total_s = sum(describe(j) for j in jobs)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[files]}"),
               TextColumn("{task.completed:.0f}/{task.total:.0f} s audio"), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    futures = client.map(fn, jobs, pure=False)
    seconds_of = {f.key: describe(j) for f, j in zip(futures, jobs)}
    done = 0
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(label, total=max(total_s, 1e-9), files=f"0/{len(jobs)} files")
        for future in as_completed(futures):
            done += 1
            progress.update(task, advance=seconds_of[future.key], files=f"{done}/{len(jobs)} files")
            yield future.result()
            future.release()


def extract(manifest: Path, store: Path, cfg: Config, workers: int | None = None,
            scheduler: str | None = None) -> dict:  # fmt: skip
    """Extract every manifest entry into ``store``; return the summary (see koemorph.extract.finish)."""
    from koemorph.config import to_dict
    from koemorph.extract import extract_file, finish, plan
    from koemorph.manifest import load_manifest
    from koemorph.store import SCHEMA_VERSION, init_store

    if cfg.features.egemaps and importlib.util.find_spec("opensmile") is None:
        raise RuntimeError('eGeMAPS needs openSMILE: pip install -e ".[egemaps]" (research-only licence, '
                           "see README), or --set features.egemaps=false")  # fmt: skip
    entries = load_manifest(manifest)
    init_store(store, {"schema_version": SCHEMA_VERSION, "fps": cfg.features.fps,
                       "features": to_dict(cfg.features)})  # fmt: skip
    jobs, records = plan(entries, store, cfg.features, cfg.data)
    if jobs:
        client = dask_client(workers, scheduler)
        try:
            for record in run_map(extract_file, jobs, client, lambda j: j.entry["duration"], "extract"):
                records.append(record)
        except KeyboardInterrupt:  # keep what finished: its groups are complete and recorded
            finish(store, records, cfg.features)
            raise
        finally:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    return finish(store, records, cfg.features)
