"""Dask driver for ``koemorph extract``: one task per file, results gathered as they finish.

Thin by design: the work is :func:`koemorph.data.extract.extract_file`; this module takes the
store's lock, plans, and hands the jobs to :func:`pipeline.jobs.run_jobs` with
:func:`koemorph.data.extract.finish` as the last step.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from koemorph.config import Config
from pipeline.jobs import run_jobs


def extract(
    manifest: Path, store: Path, cfg: Config, workers: int | None = None, scheduler: str | None = None
) -> dict:
    """Extract every manifest entry into ``store``; return the summary (files and hours per status)."""
    from koemorph.data.store import store_lock

    if cfg.features.egemaps and importlib.util.find_spec("opensmile") is None:
        raise RuntimeError(
            'eGeMAPS needs openSMILE: pip install -e ".[egemaps]" (research-only licence, '
            "see README), or --set features.egemaps=false"
        )
    with store_lock(store):  # one writer per store: a second run fails naming this one's PID
        return _extract(manifest, store, cfg, workers, scheduler)


def _extract(manifest: Path, store: Path, cfg: Config, workers: int | None, scheduler: str | None) -> dict:
    from koemorph.config import to_dict
    from koemorph.data.extract import bad_entry_record, extract_file, failed, finish, plan
    from koemorph.data.manifest import load_manifest
    from koemorph.data.store import SCHEMA_VERSION, init_store

    bad: list = []
    entries = load_manifest(manifest, bad=bad)
    init_store(
        store, {"schema_version": SCHEMA_VERSION, "fps": cfg.features.fps, "features": to_dict(cfg.features)}
    )
    jobs, records = plan(entries, store, cfg.features, cfg.data)
    return run_jobs(
        jobs,
        extract_file,
        lambda records: finish(store, records, cfg.features),
        done=records + [bad_entry_record(exc, raw) for exc, raw in bad],
        failed=failed,
        source=lambda job: job.entry["audio_path"],
        seconds=lambda job: job.entry["duration"],
        label="extract",
        statuses=("ok", "cached", "error"),
        workers=workers,
        scheduler=scheduler,
    )
