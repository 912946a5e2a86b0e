"""Per-file feature extraction into the Zarr store, and the bookkeeping around it.

The Dask driver (``pipeline/extract.py``) only orchestrates: :func:`plan` decides what each
manifest entry needs, :func:`extract_file` runs in a worker and returns a
:class:`~koemorph.data.store.FileRecord` (bad input raises; ``pipeline.jobs.run_jobs`` turns any
exception into an error record with :func:`failed`), and :func:`finish` writes the results
manifest, the failures file and the feature stats.

Invalidation is per array: each feature of :mod:`koemorph.features.registry` depends on the audio
and its own parameters, the targets on the track, the audio length and the track parameters.
Changing one parameter recomputes exactly the arrays that depend on it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koemorph import grid
from koemorph.config import DataConfig, FeaturesConfig
from koemorph.data.store import (
    SCHEMA_VERSION,
    FileRecord,
    GroupWriter,
    check_group,
    group_path,
    read_group_attrs,
    write_sidecars,
)
from koemorph.features.registry import FEATURES, enabled, first_valid
from koemorph.io.digest import short_hash
from koemorph.io.hold import hold


def array_hashes(features: FeaturesConfig, data: DataConfig) -> dict[str, str | None]:
    """Config hash per stored array: every registered feature, then ``targets`` (None: switched off)."""
    base = {"schema": SCHEMA_VERSION, "fps": features.fps, "sample_rate": grid.SAMPLE_RATE}
    hashes: dict[str, str | None] = {
        f.name: short_hash({**base, **f.config_values(features)}) if f.enabled(features) else None
        for f in FEATURES.values()
    }
    targets = {"tolerance": data.max_duration_mismatch_s, "swap_mouth_lr": data.swap_mouth_lr}
    hashes["targets"] = short_hash({**base, **targets})
    hashes["phones_text"] = None
    if features.phones and features.phones_text:
        from koemorph.features.transcript import hash_constants

        text = {**FEATURES["phones"].config_values(features), **hash_constants()}
        hashes["phones_text"] = short_hash({**base, "phones_text": text})
    return hashes


@dataclass
class Job:
    """Everything one worker task needs (plain, picklable values)."""

    entry: dict  # a ManifestEntry as a dict, paths absolute
    store: str
    features: dict  # FeaturesConfig as a dict
    data: dict  # DataConfig as a dict
    hashes: dict
    keep: tuple[str, ...]  # arrays still valid in the existing group


def plan(entries, store: str | Path, features: FeaturesConfig, data: DataConfig):
    """Split manifest entries into jobs to run and records of files already done.

    Returns ``(jobs, done)``: ``done`` holds ``cached`` records and ``error`` records of entries
    repeating an earlier entry's id. Arrays of an existing group are reused only when their files
    are all there (:func:`koemorph.data.store.check_group`); a damaged array is recomputed.
    """
    hashes = array_hashes(features, data)
    jobs, cached, seen = [], [], set()
    for entry in entries:
        if entry.id in seen:
            problem = f"{entry.audio_path}: id {entry.id!r} is already used by another manifest entry"
            cached.append(_record(entry, "error", error=problem))
            continue
        seen.add(entry.id)
        attrs = read_group_attrs(store, entry.id)
        keep = _valid_arrays(attrs, entry, hashes) if attrs else ()
        keep = tuple(n for n in keep if not check_group(group_path(store, entry.id), [n]))
        wanted = {name for name, h in hashes.items() if h is not None}
        if entry.track_path is None:
            wanted.discard("targets")
        if entry.transcript_path is None:
            wanted.discard("phones_text")
        if attrs and set(keep) == wanted and set(attrs.get("arrays", ())) == wanted:
            cached.append(_record(entry, "cached", attrs))
        else:
            job_cfg = dataclasses.asdict(features), dataclasses.asdict(data)
            jobs.append(Job(dataclasses.asdict(entry), str(store), *job_cfg, hashes, keep))
    return jobs, cached


def _valid_arrays(attrs: dict, entry, hashes: dict) -> tuple[str, ...]:
    if attrs.get("schema_version") != SCHEMA_VERSION or attrs.get("audio_sha256") != entry.audio_sha256:
        return ()
    old = attrs.get("hashes", {})
    valid = []
    for name, value in hashes.items():
        if name not in attrs.get("arrays", ()) or value is None or old.get(name) != value:
            continue
        if name == "targets" and attrs.get("track_sha256") != entry.track_sha256:
            continue
        if name == "phones_text" and attrs.get("transcript_sha256") != entry.transcript_sha256:
            continue
        valid.append(name)
    return tuple(valid)


def _record(entry, status: str, attrs: dict | None = None, **extra) -> FileRecord:
    entry = entry if isinstance(entry, dict) else dataclasses.asdict(entry)
    record = FileRecord(
        entry["id"],
        entry["split"],
        status,
        entry["duration"],
        entry["audio_sha256"],
        entry.get("track_sha256"),
    )
    if attrs:
        keys = ("num_frames", "fps", "arrays", "hashes", "sums")
        record = dataclasses.replace(record, **{k: attrs.get(k) for k in keys})
    return dataclasses.replace(record, **extra)


def failed(job: Job, error: str, traceback: str | None, seconds: float) -> FileRecord:
    """The error record of a job whose worker raised (``error`` names the file and the problem)."""
    return _record(job.entry, "error", error=error, traceback=traceback, seconds=round(seconds, 3))


def bad_entry_record(error: Exception, raw) -> FileRecord:
    """The failure record of a manifest line that could not become an entry (e.g. an unsafe id)."""
    raw = raw if isinstance(raw, dict) else {}
    duration = raw.get("duration")
    seconds = float(duration) if isinstance(duration, (int, float)) else 0.0
    return FileRecord(str(raw.get("id")), str(raw.get("split")), "error", seconds, error=str(error))


def _sums(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    return {"n": int(x.shape[0]), "sum": x.sum(0).tolist(), "sumsq": (x * x).sum(0).tolist()}


def extract_file(job: Job) -> FileRecord:
    """Compute the missing arrays of one file and publish its group; return its ``ok`` record.

    Bad input raises :class:`koemorph.errors.InputError` naming the file and the problem.
    """
    from koemorph.errors import InputError
    from koemorph.io.audio import load_audio, sha256_file

    entry, start, cpu_start = job.entry, time.perf_counter(), time.process_time()
    features = FeaturesConfig(**{**job.features, "egemaps": job.hashes.get("egemaps") is not None})
    samples = load_audio(entry["audio_path"])
    if sha256_file(entry["audio_path"]) != entry["audio_sha256"]:
        problem = "audio changed since the manifest was built; re-run `koemorph manifest`"
        raise InputError(entry["audio_path"], problem)
    n_frames = grid.num_frames_for_samples(len(samples), features.fps)
    duration = len(samples) / grid.SAMPLE_RATE
    arrays = list(job.keep)
    with GroupWriter(job.store, entry["id"], keep=job.keep) as writer:
        kept = (read_group_attrs(job.store, entry["id"]) or {}).get("sums", {}) if job.keep else {}
        sums = {k: v for k, v in kept.items() if k in job.keep}
        arrays += _write_features(writer, job, samples, features, sums)
        if _write_text_phones(writer, job, samples, features):
            arrays.append("phones_text")
        if entry.get("track_path") and "targets" not in job.keep:
            writer.write(
                "targets", _targets(entry["track_path"], DataConfig(**job.data), duration, n_frames, features)
            )
            arrays.append("targets")
        attrs = {
            "id": entry["id"],
            "audio_sha256": entry["audio_sha256"],
            "track_sha256": entry.get("track_sha256"),
            "transcript_sha256": entry.get("transcript_sha256"),
            "schema_version": SCHEMA_VERSION,
            "fps": features.fps,
            "num_frames": n_frames,
            "duration": round(duration, 6),
            "split": entry["split"],
            "arrays": sorted(arrays),
            "hashes": {k: v for k, v in job.hashes.items() if k in arrays},
            "sums": sums,
        }
        writer.publish(attrs)
    hold("extract.published", entry["id"])  # test hook; returns at once in normal use
    return _record(
        entry,
        "ok",
        attrs,
        seconds=round(time.perf_counter() - start, 3),
        cpu_seconds=round(time.process_time() - cpu_start, 3),
        computed=sorted(set(arrays) - set(job.keep)),
    )


def _write_features(writer, job: Job, samples: np.ndarray, features: FeaturesConfig, sums: dict) -> list:
    """Compute and write each enabled registered feature that ``job`` does not keep (``[T, D]``,
    ``T`` the file's grid frames); add their ``sums`` (from the first valid frame); return their names."""
    n_frames = grid.num_frames_for_samples(len(samples), features.fps)
    written = []
    for feature in enabled(features):
        if feature.name in job.keep:
            continue
        values, attrs = feature.compute(samples, features)
        assert values.shape == (n_frames, feature.dim(features)), (feature.name, values.shape, n_frames)
        writer.write(feature.name, values, attrs or None)
        sums[feature.name] = _sums(values[first_valid(attrs) :])
        written.append(feature.name)
    return written


def _write_text_phones(writer, job: Job, samples: np.ndarray, features: FeaturesConfig) -> bool:
    """Write ``phones_text`` ``[T, 40]`` (the recognised phones renamed with the entry's transcript,
    :func:`koemorph.features.transcript.transcript_phone_features`) unless kept or not wanted;
    True when written. An unreadable transcript raises InputError naming it."""
    from koemorph.features.transcript import read_transcript, transcript_phone_features

    path = job.entry.get("transcript_path")
    if not path or job.hashes.get("phones_text") is None or "phones_text" in job.keep:
        return False
    values, _ = transcript_phone_features(samples, features, read_transcript(path))
    writer.write("phones_text", values)
    return True


def _targets(track_path: str, data: DataConfig, duration: float, n_frames: int, features) -> np.ndarray:
    """The track resampled onto the grid: ``[n_frames, 52]`` float32 (TrackError if it does not fit)."""
    from koemorph.io.tracks import load_track_for_audio

    targets = load_track_for_audio(
        track_path,
        duration,
        features.fps,
        tolerance_s=data.max_duration_mismatch_s,
        swap_mouth_lr=data.swap_mouth_lr,
    )
    assert targets.shape == (n_frames, 52), (targets.shape, n_frames)
    return targets.astype(np.float32)


def warm_up(features: FeaturesConfig | None = None) -> None:
    """Build this process's cached extractor objects (openSMILE, mel filters) on 2 s of silence,
    so timings of the first real file do not include them (benchmarks)."""
    features = features or FeaturesConfig()
    silence = np.zeros(2 * grid.SAMPLE_RATE, dtype=np.float32)
    for feature in enabled(features):
        feature.compute(silence, features)


def feature_stats(records: list[FileRecord], split: str = "train") -> dict:
    """Global per-dimension mean/std of every registered feature over the files of ``split``.

    Uses the per-file sums kept in each group's attrs, so cached files cost nothing.
    """
    chosen = [r for r in records if r.status != "error" and r.sums and r.split == split]
    stats: dict = {"split": split, "files": len(chosen), "ids": sorted(r.id for r in chosen)}
    for name in FEATURES:
        parts = [r.sums[name] for r in chosen if name in r.sums]
        n = sum(p["n"] for p in parts)
        if n == 0:
            continue
        total = np.sum([p["sum"] for p in parts], axis=0)
        sumsq = np.sum([p["sumsq"] for p in parts], axis=0)
        mean = total / n
        std = np.sqrt(np.maximum(sumsq / n - mean**2, 0.0))
        stats[name] = {
            "frames": int(n),
            "mean": mean.round(6).tolist(),
            "std": np.maximum(std, 1e-5).round(6).tolist(),
        }
    return stats


def finish(store: str | Path, records: list[FileRecord], features: FeaturesConfig) -> dict:
    """Write results manifest, failures file and stats beside the store. Driver only.

    Returns what the per-status summary of ``pipeline.jobs.run_jobs`` does not hold.
    """
    stats = feature_stats(records)
    stats["features"] = dataclasses.asdict(features)
    write_sidecars(store, records, stats)
    return {"stats from train files": stats["files"]}
