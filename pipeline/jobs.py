"""The one batch runner shared by ``koemorph extract`` and ``koemorph render``.

:func:`run_jobs` starts (or joins) a Dask cluster, maps a per-file function over the jobs with a
progress bar, turns any exception in a job into a typed error record naming the file (so one bad
file never stops the batch), keeps what finished when interrupted (Ctrl-C), and returns the
per-status summary together with what the stage's ``finish`` reports.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.dask_utils import close_client, dask_client, run_map


@dataclass(frozen=True)
class Guarded:
    """``fn(job)``, never raising: an exception becomes ``failed(job, error, traceback, seconds)``.

    ``error`` is the message of a :class:`koemorph.errors.InputError` (it names the file and the
    problem), else ``"<source(job)>: <type>: <message>"`` with the traceback kept.
    """

    fn: Callable
    failed: Callable
    source: Callable

    def __call__(self, job):
        from koemorph.errors import InputError

        start = time.perf_counter()
        try:
            return self.fn(job)
        except InputError as exc:
            return self.failed(job, str(exc), None, time.perf_counter() - start)
        except Exception as exc:  # anything else (a library failing, disk full): still a record
            error = f"{self.source(job)}: {type(exc).__name__}: {exc}"
            return self.failed(job, error, traceback.format_exc(), time.perf_counter() - start)


def _get(record, key: str):
    return record[key] if isinstance(record, dict) else getattr(record, key)


def status_summary(records, statuses: Sequence[str]) -> dict:
    """Files and hours of audio (record ``duration``, seconds; None counts as 0) per status."""
    summary = {}
    for status in statuses:
        rows = [r for r in records if _get(r, "status") == status]
        summary[f"{status} files"] = len(rows)
        summary[f"{status} hours"] = round(sum(_get(r, "duration") or 0.0 for r in rows) / 3600, 4)
    return summary


def run_jobs(
    jobs: list,
    fn: Callable,
    finish: Callable[[list], dict],
    *,
    done: list,
    failed: Callable,
    source: Callable,
    seconds: Callable,
    label: str,
    statuses: Sequence[str],
    workers: int | None = None,
    scheduler: str | None = None,
    local: bool = False,
    on_start: Callable | None = None,
    on_record: Callable | None = None,
) -> dict:
    """Run ``fn(job) -> record`` for every job; return the per-status summary plus ``finish(records)``.

        ``done``: records already final (cached, skipped, refused); ``failed``/``source``: see
        :class:`Guarded`; ``seconds(job)``: audio seconds, for the progress bar. ``local`` runs the jobs
        in this process without Dask; ``on_start(client)`` runs once a cluster is up (e.g. preloading a
        model on every worker); ``on_record(record)`` sees each record as it arrives (e.g. a journal
    that survives a kill). On Ctrl-C the finished records are passed to ``finish`` before the
        interrupt goes on, so nothing done is lost.
    """
    records = list(done)
    if jobs:
        client = None if local else dask_client(workers, scheduler)
        try:
            if client is not None and on_start is not None:
                on_start(client)
            for record in run_map(Guarded(fn, failed, source), jobs, client, seconds, label):
                records.append(record)
                if on_record is not None:
                    on_record(record)
        except KeyboardInterrupt:  # keep what finished: its outputs are complete and recorded
            finish(records)
            raise
        finally:
            if client is not None:
                close_client(client)
    return {**status_summary(records, statuses), **finish(records)}
