"""Dask driver for ``koemorph extract``: one task per file, results gathered as they finish.

Thin by design: the work is :func:`koemorph.data.extract.extract_file`; this module starts (or joins)
a cluster, shows progress and hands the records to :func:`koemorph.data.extract.finish`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from koemorph.config import Config
from pipeline.dask_utils import close_client, dask_client, run_map


def extract(
    manifest: Path, store: Path, cfg: Config, workers: int | None = None, scheduler: str | None = None
) -> dict:
    """Extract every manifest entry into ``store``; return the summary (see koemorph.data.extract.finish)."""
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
    from koemorph.data.extract import bad_entry_record, extract_file, finish, plan
    from koemorph.data.manifest import load_manifest
    from koemorph.data.store import SCHEMA_VERSION, init_store

    bad: list = []
    entries = load_manifest(manifest, bad=bad)
    init_store(
        store, {"schema_version": SCHEMA_VERSION, "fps": cfg.features.fps, "features": to_dict(cfg.features)}
    )
    jobs, records = plan(entries, store, cfg.features, cfg.data)
    records += [bad_entry_record(exc, raw) for exc, raw in bad]
    if jobs:
        client = dask_client(workers, scheduler)
        try:
            for record in run_map(extract_file, jobs, client, lambda j: j.entry["duration"], "extract"):
                records.append(record)
        except KeyboardInterrupt:  # keep what finished: its groups are complete and recorded
            finish(store, records, cfg.features)
            raise
        finally:
            close_client(client)
    return finish(store, records, cfg.features)
