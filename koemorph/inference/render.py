"""``koemorph render``: whole folders of speech to blendshape files, one output per input.

The Dask driver (``pipeline/render.py``) only orchestrates: :func:`resolve_model` turns
``--model`` into a local checkpoint, :func:`plan` walks the input tree and decides what needs
rendering, :func:`render_file` runs in a worker and returns a record (``pipeline.jobs.run_jobs`` turns
an exception into an error record with :func:`failed`), and
:func:`finish` writes ``OUT/render_manifest.jsonl``. Only the driver writes the manifest.

Per file (all on the time grid: frame ``k`` at ``k / fps`` s, 16 kHz audio):

1. decode the audio (:func:`koemorph.io.audio.load_audio`): ``[N]`` samples;
2. features with the training extractors and the checkpoint's ``features`` config: log-mel
   ``[T, n_mels]`` and eGeMAPS ``[T, 88]`` at the model's native fps, ``T = num_frames_for_samples(N)``,
   or the same arrays read from a feature store (``--store``) whose group has the same audio
   sha256 and feature hashes; normalised with the checkpoint's stats by
   :func:`koemorph.features.normalise.normalise_features` (the code training uses);
3. :func:`koemorph.model.infer.predict_file`: ``[T, 52]`` for every frame from t = 0 (frames before
   a full context see the same padding as in training);
4. another output fps than the model's (30 <-> 60): linear interpolation at the output grid times
   ``k / fps`` (``num_frames_for_samples(N, fps)`` frames; the last frame is held past the end);
5. optional post-processing (:mod:`koemorph.inference.postprocess`), then an atomic write.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koemorph import grid
from koemorph.inference.postprocess import RenderConfig, postprocess
from koemorph.io.tracks.formats import FORMATS as _TRACK_FORMATS
from koemorph.io.tracks.formats import format_named

FORMATS = {f.name: f.suffix for f in _TRACK_FORMATS}  # output format name -> suffix
MANIFEST_NAME = "render_manifest.jsonl"
MODEL_DIR = ".render_models"  # MLflow downloads, inside OUT_DIR (workers must see them)
MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")
SKIP_KEYS = ("audio_sha256", "model_sha256", "fps", "format", "postprocess", "output")
# Output frames per inference block (the result does not depend on it). At 512 a block's
# [512, 52, 256] float32 tensors (27 MB) stay under the workers' 32 MB mmap threshold
# (pipeline.dask_utils.WORKER_MALLOC_ENV), so they reuse heap memory instead of being faulted in
# afresh; and a block's context (C - 1 + L mel frames before and after) is shared by twice the
# outputs of a 256-frame block.
CHUNK = 512


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``--model``: local checkpoint path, its sha256, the id written to the manifest."""

    path: str
    sha256: str
    id: str  # MLflow run id, or the checkpoint's sha256 prefix
    source: str  # what the user passed
    fps: int  # the model's native (features) fps
    features: dict  # the checkpoint's FeaturesConfig as a dict


def resolve_model(spec: str, out_dir: str | Path, tracking_uri: str | None = None) -> ModelRef:
    """A checkpoint path, or an MLflow URI (``runs:/<run_id>/<path>``, ``models:/<name>/<version>``)
    downloaded with ``mlflow.artifacts.download_artifacts`` into ``OUT_DIR/.render_models/``.

    Tracking URI: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.
    """
    from koemorph.io.audio import sha256_file
    from koemorph.training.checkpoint import load_checkpoint

    run_id = None
    if spec.startswith(MLFLOW_SCHEMES):
        from mlflow.artifacts import download_artifacts

        from koemorph.training.tracking import resolve_uri

        if spec.startswith("runs:/"):
            run_id = spec[len("runs:/") :].strip("/").split("/")[0]
        dst = Path(out_dir) / MODEL_DIR / re.sub(r"[^A-Za-z0-9._-]+", "_", spec)
        dst.mkdir(parents=True, exist_ok=True)
        local = Path(
            download_artifacts(artifact_uri=spec, dst_path=str(dst), tracking_uri=resolve_uri(tracking_uri))
        )
        if local.is_dir():
            found = sorted(local.rglob("*.pt"))
            found = [p for p in found if p.name == "best.pt"] or found
            if len(found) != 1:
                raise ValueError(f"{spec}: expected one checkpoint (.pt) in the artifact, found {len(found)}")
            local = found[0]
    else:
        local = Path(spec)
        if not local.is_file():
            raise FileNotFoundError(f"{spec}: no such checkpoint file")
    ckpt = load_checkpoint(local)
    sha = sha256_file(local)
    run_id = run_id or (ckpt.get("mlflow_run_id") if spec.startswith(MLFLOW_SCHEMES) else None)
    return ModelRef(
        str(local.resolve()),
        sha,
        run_id or sha[:16],
        spec,
        int(ckpt["fps"]),
        dict(ckpt["config"]["features"]),
    )


@dataclass
class RenderJob:
    """Everything one worker task needs (plain, picklable values). Paths are absolute."""

    input: str
    rel: str  # input path relative to INPUT_DIR (posix)
    output: str
    output_rel: str  # relative to OUT_DIR (posix)
    format: str
    fps: int  # output fps
    model: dict  # ModelRef as a dict
    post: dict  # RenderConfig as a dict
    audio_sha256: str | None  # the driver's hash (None: unreadable)
    duration: float  # seconds from the header (0: unknown); drives the progress bar
    store: str | None = None
    store_group: str | None = None
    threads: int | None = None  # torch threads in the worker (1 under Dask)
    chunk: int = CHUNK  # output frames per inference block


def find_inputs(input_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Audio files under ``input_dir`` (``AUDIO_EXTENSIONS``), recursively, sorted by relative path.

    Hidden files and folders (``.*``, e.g. macOS ``._x.wav``) and anything under ``exclude`` are skipped
    (:func:`koemorph.io.walk.files_under`).
    """
    from koemorph.io.audio import is_audio_file
    from koemorph.io.walk import files_under

    return [p for p in files_under(input_dir, exclude=exclude) if is_audio_file(p) and p.is_file()]


def read_manifest(out_dir: Path) -> dict[str, dict]:
    """The previous run's records by input relative path (empty if absent or unreadable)."""
    from koemorph.io.atomic import read_jsonl

    try:
        return {r["input"]: r for r in read_jsonl(Path(out_dir) / MANIFEST_NAME) if "input" in r}
    except (OSError, ValueError, TypeError):
        return {}


def store_index(store: str | Path, features: dict) -> dict[str, str]:
    """``{audio_sha256: group id}`` of complete store groups whose mel (and eGeMAPS, if used) hashes
    match the checkpoint's feature config (the store's results: :func:`koemorph.data.store.read_results`)."""
    from koemorph.config import load_config
    from koemorph.data.extract import array_hashes
    from koemorph.data.store import read_results

    records = read_results(store)
    want = _wanted_hashes(load_config(None, extra={"features": features}).features, array_hashes)
    return {
        r.audio_sha256: r.id
        for r in records
        if r.status != "error" and all((r.hashes or {}).get(k) == v for k, v in want.items())
    }


def _wanted_hashes(features, array_hashes) -> dict:
    from koemorph.config import DataConfig

    hashes = array_hashes(features, DataConfig())
    return {k: hashes[k] for k in ("mel", "egemaps") if hashes.get(k) is not None}


def plan(
    input_dir,
    out_dir,
    model: ModelRef,
    *,
    fmt: str = "jsonl",
    fps: int | None = None,
    post: RenderConfig | None = None,
    store=None,
    threads: int | None = None,
    chunk: int = CHUNK,
):
    """Walk ``input_dir`` and split it into jobs to run and records already final.

    Returns ``(jobs, records)``: records are ``skipped`` (input audio sha256, model sha256, fps,
    format and post-processing unchanged since the previous manifest, and the output exists) or
    ``error`` (two inputs that would write the same output, e.g. ``x.wav`` and ``x.flac``).
    """
    from koemorph.io.audio import audio_info, sha256_file

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {sorted(FORMATS)}")
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    fps = grid.check_fps(fps or model.fps)
    post = post or RenderConfig()
    previous = read_manifest(out_dir)
    index = store_index(store, model.features) if store else {}
    inputs = find_inputs(input_dir, exclude=out_dir)
    targets: dict[str, list[str]] = {}
    for path in inputs:
        targets.setdefault(path.relative_to(input_dir).with_suffix(FORMATS[fmt]).as_posix(), []).append(
            path.relative_to(input_dir).as_posix()
        )
    jobs, records = [], []
    for path in inputs:
        rel = path.relative_to(input_dir).as_posix()
        out_rel = Path(rel).with_suffix(FORMATS[fmt]).as_posix()
        try:
            sha = sha256_file(path)
        except OSError:
            sha = None
        try:
            duration = audio_info(path).duration
        except Exception:
            duration = 0.0
        job = RenderJob(
            str(path.resolve()),
            rel,
            str((out_dir / out_rel).resolve()),
            out_rel,
            fmt,
            fps,
            dataclasses.asdict(model),
            post.to_dict(),
            sha,
            duration,
            str(store) if store else None,
            index.get(sha),
            threads,
            chunk,
        )
        if len(targets[out_rel]) > 1:
            others = [o for o in targets[out_rel] if o != rel]
            records.append(
                _record(
                    job,
                    "error",
                    error=f"{path}: output {out_rel} would also be written by "
                    f"{', '.join(others)}; rename one of them",
                )
            )
            continue
        prev = previous.get(rel)
        fresh = _record(job, "skipped")
        if (
            prev
            and prev.get("status") in ("ok", "skipped")
            and sha is not None
            and Path(job.output).is_file()
            and all(prev.get(k) == fresh[k] for k in SKIP_KEYS)
        ):
            records.append({**prev, "status": "skipped", "seconds": 0.0})
        else:
            jobs.append(job)
    return jobs, records


def _record(job: RenderJob, status: str, **extra) -> dict:
    record = {
        "input": job.rel,
        "output": job.output_rel,
        "status": status,
        "audio_sha256": job.audio_sha256,
        "model_id": job.model["id"],
        "model_sha256": job.model["sha256"],
        "model_source": job.model["source"],
        "fps": job.fps,
        "native_fps": job.model["fps"],
        "format": job.format,
        "postprocess": job.post,
        "frames": None,
        "duration": None,
        "features": None,
        "error": None,
        "seconds": None,
    }
    record.update(extra)
    return record


_MODELS: dict[tuple[str, str], tuple] = {}  # per worker process: (checkpoint path, sha256) -> (model, meta)


def get_model(path: str, sha256: str, threads: int | None = None):
    """The checkpoint's ``(model, meta)``, loaded once per process (cached by path and sha256)."""
    import torch

    from koemorph.training.checkpoint import load_model

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    key = (path, sha256)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker at a time
        _MODELS[key] = load_model(path)
    return _MODELS[key]


def warm_up(path: str, sha256: str, threads: int | None = None) -> None:
    """Worker start-up: load the model (:func:`get_model`) and render 1 s of faint noise without
    writing anything, so that imports, openSMILE objects and the attention kernels are ready
    before the first file (about 2 CPU s otherwise spent in it)."""
    from koemorph.model.infer import predict_file

    model, meta = get_model(path, sha256, threads)
    samples = np.random.default_rng(0).normal(0.0, 1e-3, grid.SAMPLE_RATE).astype(np.float32)
    job = RenderJob("", "", "", "", "jsonl", meta["fps"], {}, {}, None, 0.0)
    try:
        feats, _ = file_features(samples, "", meta, job)
        predict_file(
            model, feats["mel"], feats["egemaps"], meta["fps"], chunk=job.chunk, pad_mel=feats["mel_pad"]
        )
    except Exception:  # best effort (e.g. openSMILE missing): every file reports its own error record
        pass


def file_features(samples: np.ndarray, audio_sha256: str, meta: dict, job: RenderJob) -> tuple[dict, str]:
    """Normalised features of one file at the model's fps: ``({"mel", "egemaps", "mel_pad"}, source)``.

    ``source`` is ``"store:<group>"`` when read from ``job.store`` (same audio sha256 and feature
    hashes, same frame count), else ``"computed"``.
    """
    from koemorph.features.normalise import normalise_features

    cfg = meta["config"].features
    use_ege = bool(cfg.egemaps and "egemaps" in meta["stats"])
    n_frames = grid.num_frames_for_samples(samples.size, cfg.fps)
    if job.store and job.store_group:
        cached = _from_store(job.store, job.store_group, audio_sha256, cfg, use_ege, n_frames)
        if cached is not None:
            mel, ege, first = cached
            return normalise_features(mel, ege, first, meta["stats"], cfg), f"store:{job.store_group}"
    from koemorph.features.registry import FEATURES

    (mel, _), ege, first = FEATURES["mel"].compute(samples, cfg), None, n_frames
    if use_ege:
        ege, attrs = FEATURES["egemaps"].compute(samples, cfg)
        first = attrs["first_valid_frame"]
    return normalise_features(mel, ege, first, meta["stats"], cfg), "computed"


def _from_store(store, group, audio_sha256, cfg, use_ege, n_frames):
    """``(mel, egemaps or None, first_valid)`` raw from a store group, or None if it does not match."""
    from koemorph.data.extract import array_hashes
    from koemorph.data.store import open_arrays, read_group_attrs

    attrs = read_group_attrs(store, group)
    want = _wanted_hashes(cfg, array_hashes)
    if not attrs or attrs.get("audio_sha256") != audio_sha256 or attrs.get("num_frames") != n_frames:
        return None
    if any((attrs.get("hashes") or {}).get(k) != v for k, v in want.items() if k == "mel" or use_ege):
        return None
    arrays = open_arrays(store, group)
    if use_ege and "egemaps" not in arrays:
        return None
    ege = arrays["egemaps"][:] if use_ege else None
    first = int(arrays["egemaps"].attrs.get("first_valid_frame", 0)) if use_ege else n_frames
    return np.asarray(arrays["mel"][:], np.float32), ege, first


def resample_fps(values: np.ndarray, from_fps: int, to_fps: int, n_frames: int) -> np.ndarray:
    """``values`` ``[T, 52]`` at ``from_fps`` linearly interpolated at times ``k / to_fps``,
    ``k < n_frames``: ``[n_frames, 52]`` float32 (ends held)."""
    from koemorph.io.tracks import Track, resample_to_grid

    track = Track(
        "", grid.frame_times(len(values), from_fps), np.asarray(values, np.float32), float(from_fps)
    )
    return resample_to_grid(track, n_frames, to_fps)


def write_output(path: str, values: np.ndarray, fps: int, fmt: str) -> None:
    """Write ``[T, 52]`` Apple-order values atomically in ``fmt`` (see :data:`FORMATS`)."""
    format_named(fmt).write(path, values, fps)


def render_values(job: RenderJob) -> tuple[np.ndarray, dict]:
    """Blendshapes of one input at the job's fps, post-processed: ``([T, 52] float32, facts)``."""
    from koemorph.errors import AudioError
    from koemorph.io.audio import load_audio, sha256_file
    from koemorph.model.infer import predict_file

    samples = load_audio(job.input)
    sha = sha256_file(job.input)
    model, meta = get_model(job.model["path"], job.model["sha256"], job.threads)
    native = meta["fps"]
    feats, source = file_features(samples, sha, meta, job)
    values = predict_file(
        model,
        feats["mel"],
        feats["egemaps"],
        native,
        chunk=job.chunk,
        pad_mel=feats["mel_pad"],
        pad_egemaps=0.0,
    )
    n_out = grid.num_frames_for_samples(samples.size, job.fps)
    if job.fps != native:
        values = resample_fps(values, native, job.fps, n_out)
    values = postprocess(values, samples, job.fps, RenderConfig(**job.post))
    if values.shape != (n_out, 52):
        raise RuntimeError(f"rendered {values.shape}, expected ({n_out}, 52)")
    if not np.isfinite(values).all():
        raise AudioError(job.input, "the model produced NaN/Inf for this audio")
    return values, {
        "audio_sha256": sha,
        "frames": n_out,
        "duration": round(samples.size / grid.SAMPLE_RATE, 6),
        "features": source,
    }


def render_file(job: RenderJob) -> dict:
    """Render one input to its output file; return its ``ok`` manifest record.

    Bad input raises :class:`koemorph.errors.InputError` (``pipeline.jobs.run_jobs`` turns any exception
    into a record with :func:`failed`). A failed file leaves no output behind (writes are atomic; an
    older output of the same name is left as it was).
    """
    start, cpu = time.perf_counter(), time.process_time()
    values, facts = render_values(job)
    write_output(job.output, values, job.fps, job.format)
    return _record(
        job,
        "ok",
        **facts,
        seconds=round(time.perf_counter() - start, 3),
        cpu_seconds=round(time.process_time() - cpu, 3),
    )


def failed(job: RenderJob, error: str, traceback: str | None, seconds: float) -> dict:
    """The error record of a job whose worker raised (``error`` names the file and the problem)."""
    extra = {"traceback": traceback} if traceback else {}
    return _record(job, "error", error=error, seconds=round(seconds, 3), **extra)


def finish(out_dir: str | Path, records: list[dict]) -> dict:
    """Write ``OUT/render_manifest.jsonl`` (one line per input, sorted by input path). Driver only.

    Returns the manifest's path and the error messages (``pipeline.jobs.run_jobs`` adds the files and
    audio hours per status).
    """
    from koemorph.io.atomic import write_jsonl

    records = sorted(records, key=lambda r: r["input"])
    os.makedirs(out_dir, exist_ok=True)
    write_jsonl(
        Path(out_dir) / MANIFEST_NAME, [{k: v for k, v in r.items() if k != "traceback"} for r in records]
    )
    errors = [r["error"] for r in records if r["status"] == "error"]
    return {"manifest": str(Path(out_dir) / MANIFEST_NAME), "errors": errors}
