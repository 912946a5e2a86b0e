"""Per-file feature extraction into the Zarr store, and the bookkeeping around it.

The Dask driver (``pipeline/extract.py``) only orchestrates: :func:`plan` decides what each
manifest entry needs, :func:`extract_file` runs in a worker and returns a record (never raises),
and :func:`finish` writes the results manifest, the failures file and the feature stats.

Invalidation is per array: the mel depends on the audio and the mel parameters, eGeMAPS on the
audio and the eGeMAPS parameters, the targets on the track, the audio length and the track
parameters. Changing one parameter recomputes exactly the arrays that depend on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koemorph import grid
from koemorph.config import DataConfig, FeaturesConfig
from koemorph.io.hold import hold
from koemorph.data.store import (
    ARRAYS,
    SCHEMA_VERSION,
    GroupWriter,
    check_group,
    group_path,
    read_group_attrs,
    sidecar,
)


def _short_hash(values: dict) -> str:
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def array_hashes(features: FeaturesConfig, data: DataConfig) -> dict[str, str | None]:
    """Config hash per stored array (None: the array is switched off)."""
    f = features
    base = {"schema": SCHEMA_VERSION, "fps": f.fps, "sample_rate": grid.SAMPLE_RATE}
    return {
        "mel": _short_hash({**base, "n_mels": f.n_mels, "n_fft": f.n_fft, "fmin": f.fmin, "fmax": f.fmax,
                            "db_floor": f.db_floor}),
        "egemaps": _short_hash({**base, "context": f.egemaps_context_s, "step": f.egemaps_step_s,
                                 "guard": f.egemaps_guard_s})
        if f.egemaps else None,
        "targets": _short_hash({**base, "tolerance": data.max_duration_mismatch_s,
                                "swap_mouth_lr": data.swap_mouth_lr}),
    }


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

    Returns ``(jobs, cached_records)``. Arrays of an existing group are reused only when their
    files are all there (:func:`koemorph.data.store.check_group`); a damaged array is recomputed.
    """
    hashes = array_hashes(features, data)
    jobs, cached = [], []
    for entry in entries:
        attrs = read_group_attrs(store, entry.id)
        keep = _valid_arrays(attrs, entry, hashes) if attrs else ()
        keep = tuple(n for n in keep if not check_group(group_path(store, entry.id), [n]))
        wanted = {name for name, h in hashes.items() if h is not None}
        if entry.track_path is None:
            wanted.discard("targets")
        if attrs and set(keep) == wanted and set(attrs.get("arrays", ())) == wanted:
            cached.append(_record(entry, "cached", attrs))
        else:
            jobs.append(Job(dataclasses.asdict(entry), str(store), dataclasses.asdict(features),
                            dataclasses.asdict(data), hashes, keep))
    return jobs, cached


def _valid_arrays(attrs: dict, entry, hashes: dict) -> tuple[str, ...]:
    if attrs.get("schema_version") != SCHEMA_VERSION or attrs.get("audio_sha256") != entry.audio_sha256:
        return ()
    old = attrs.get("hashes", {})
    valid = []
    for name in ARRAYS:
        if name not in attrs.get("arrays", ()) or hashes.get(name) is None or old.get(name) != hashes[name]:
            continue
        if name == "targets" and attrs.get("track_sha256") != entry.track_sha256:
            continue
        valid.append(name)
    return tuple(valid)


def _record(entry, status: str, attrs: dict | None = None, **extra) -> dict:
    entry = entry if isinstance(entry, dict) else dataclasses.asdict(entry)
    record = {"id": entry["id"], "split": entry["split"], "status": status, "duration": entry["duration"],
              "audio_sha256": entry["audio_sha256"], "track_sha256": entry.get("track_sha256")}
    if attrs:
        record.update(num_frames=attrs.get("num_frames"), fps=attrs.get("fps"), arrays=attrs.get("arrays"),
                      hashes=attrs.get("hashes"), sums=attrs.get("sums"))
    record.update(extra)
    return record


def bad_entry_record(error: Exception, raw) -> dict:
    """The failure record of a manifest line that could not become an entry (e.g. an unsafe id)."""
    raw = raw if isinstance(raw, dict) else {}
    duration = raw.get("duration")
    return {"id": str(raw.get("id")), "split": str(raw.get("split")), "status": "error",
            "duration": float(duration) if isinstance(duration, (int, float)) else 0.0,
            "audio_sha256": None, "track_sha256": None, "error": str(error)}


def _sums(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    return {"n": int(x.shape[0]), "sum": x.sum(0).tolist(), "sumsq": (x * x).sum(0).tolist()}


def extract_file(job: Job) -> dict:
    """Compute the features of one file and publish its group. Returns a record; never raises.

    Record ``status`` is ``ok`` or ``error``; errors carry ``error`` (a one-line message naming
    the file and the problem) and, for unexpected exceptions, ``traceback``.
    """
    from koemorph.errors import InputError
    from koemorph.io.audio import load_audio, sha256_file

    entry, start, cpu_start = job.entry, time.perf_counter(), time.process_time()
    features = FeaturesConfig(**{**job.features, "egemaps": job.hashes.get("egemaps") is not None})
    try:
        samples = load_audio(entry["audio_path"])
        if sha256_file(entry["audio_path"]) != entry["audio_sha256"]:
            raise InputError(entry["audio_path"], "audio changed since the manifest was built; "
                             "re-run `koemorph manifest`")
        n_frames = grid.num_frames_for_samples(len(samples), features.fps)
        duration = len(samples) / grid.SAMPLE_RATE
        arrays = list(job.keep)
        with GroupWriter(job.store, entry["id"], keep=job.keep) as writer:
            kept = (read_group_attrs(job.store, entry["id"]) or {}).get("sums", {}) if job.keep else {}
            sums = {k: v for k, v in kept.items() if k in job.keep}
            if "mel" not in job.keep:
                from koemorph.features.mel import log_mel

                mel = log_mel(samples, features)
                assert mel.shape == (n_frames, features.n_mels), (mel.shape, n_frames)
                writer.write("mel", mel.astype(np.float32))
                sums["mel"] = _sums(mel)
                arrays.append("mel")
            if features.egemaps and "egemaps" not in job.keep:
                from koemorph.features.egemaps import egemaps
                from koemorph.features.normalise import first_valid_frame

                aligned, _, ends = egemaps(samples, features)
                assert aligned.shape[0] == n_frames, (aligned.shape, n_frames)
                first = first_valid_frame(n_frames, len(ends), features)
                writer.write("egemaps", aligned.astype(np.float32),
                             {"first_valid_frame": first, "window_step_s": features.egemaps_step_s,
                              "windows": len(ends)})
                sums["egemaps"] = _sums(aligned[first:])
                arrays.append("egemaps")
            if entry.get("track_path") and "targets" not in job.keep:
                from koemorph.io.tracks import load_track_for_audio

                data = DataConfig(**job.data)
                targets = load_track_for_audio(entry["track_path"], duration, features.fps,
                                               tolerance_s=data.max_duration_mismatch_s,
                                               swap_mouth_lr=data.swap_mouth_lr)
                assert targets.shape == (n_frames, 52), (targets.shape, n_frames)
                writer.write("targets", targets.astype(np.float32))
                arrays.append("targets")
            attrs = {"id": entry["id"], "audio_sha256": entry["audio_sha256"],
                     "track_sha256": entry.get("track_sha256"), "schema_version": SCHEMA_VERSION,
                     "fps": features.fps, "num_frames": n_frames, "duration": round(duration, 6),
                     "split": entry["split"], "arrays": sorted(arrays),
                     "hashes": {k: v for k, v in job.hashes.items() if k in arrays}, "sums": sums}
            writer.publish(attrs)
        hold("extract.published", entry["id"])  # test hook; returns at once in normal use
        return _record(entry, "ok", attrs, seconds=round(time.perf_counter() - start, 3),
                       cpu_seconds=round(time.process_time() - cpu_start, 3),
                       computed=sorted(set(arrays) - set(job.keep)))
    except InputError as exc:
        return _record(entry, "error", error=str(exc), seconds=round(time.perf_counter() - start, 3))
    except Exception as exc:  # anything else (openSMILE failing, disk full): still a record
        return _record(entry, "error", error=f"{entry['audio_path']}: {type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc(), seconds=round(time.perf_counter() - start, 3))


def warm_up(features: FeaturesConfig | None = None) -> None:
    """Build this process's cached extractor objects (openSMILE, mel filters) on 2 s of silence,
    so timings of the first real file do not include them (benchmarks)."""
    from koemorph.features.egemaps import egemaps
    from koemorph.features.mel import log_mel

    features = features or FeaturesConfig()
    silence = np.zeros(2 * grid.SAMPLE_RATE, dtype=np.float32)
    log_mel(silence, features)
    if features.egemaps:
        egemaps(silence, features)


def feature_stats(records: list[dict], split: str = "train") -> dict:
    """Global per-dimension mean/std of mel and eGeMAPS over the files of ``split``.

    Uses the per-file sums kept in each group's attrs, so cached files cost nothing.
    """
    usable = [r for r in records if r["status"] != "error" and r.get("sums")]
    chosen = [r for r in usable if r["split"] == split]
    stats: dict = {"split": split, "files": len(chosen), "ids": sorted(r["id"] for r in chosen)}
    for name in ("mel", "egemaps"):
        parts = [r["sums"][name] for r in chosen if name in r["sums"]]
        n = sum(p["n"] for p in parts)
        if n == 0:
            continue
        total = np.sum([p["sum"] for p in parts], axis=0)
        sumsq = np.sum([p["sumsq"] for p in parts], axis=0)
        mean = total / n
        std = np.sqrt(np.maximum(sumsq / n - mean**2, 0.0))
        stats[name] = {"frames": int(n), "mean": mean.round(6).tolist(),
                       "std": np.maximum(std, 1e-5).round(6).tolist()}
    return stats


def finish(store: str | Path, records: list[dict], features: FeaturesConfig) -> dict:
    """Write results manifest, failures file and stats beside the store. Driver only.

    Returns a summary dict (counts and hours per status).
    """
    from koemorph.io.atomic import atomic_write_text, write_jsonl

    records = sorted(records, key=lambda r: r["id"])
    ok = [{k: v for k, v in r.items() if k not in ("sums", "traceback")} for r in records if r["status"] != "error"]
    failures = [r for r in records if r["status"] == "error"]
    write_jsonl(sidecar(store, "results.jsonl"), ok)
    write_jsonl(sidecar(store, "failures.jsonl"), failures)
    stats = feature_stats(records)
    stats["features"] = dataclasses.asdict(features)
    atomic_write_text(sidecar(store, "stats.json"), json.dumps(stats, indent=1) + "\n")
    summary = {}
    for status in ("ok", "cached", "error"):
        rows = [r for r in records if r["status"] == status]
        summary[f"{status} files"] = len(rows)
        summary[f"{status} hours"] = round(sum(r["duration"] for r in rows) / 3600, 4)
    summary["stats from train files"] = stats["files"]
    return summary
