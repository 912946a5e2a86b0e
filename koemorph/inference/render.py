"""``koemorph render``: whole folders of speech to blendshape files, one output per input.

The Dask driver (``pipeline/render.py``) only orchestrates:
:func:`koemorph.inference.models.resolve_model` turns ``--model`` into a local checkpoint, :func:`plan`
walks the input tree and decides what needs rendering, :func:`render_file` runs in a worker and
returns a :class:`koemorph.inference.manifest.RenderRecord` (``pipeline.jobs.run_jobs`` turns an
exception into an error record with :func:`failed`), and the driver journals the records and writes
``OUT/render_manifest.jsonl`` (:mod:`koemorph.inference.manifest`).

Per file (all on the time grid: frame ``k`` at ``k / fps`` s, 16 kHz audio):

1. decode the audio (:func:`koemorph.io.audio.load_audio`): ``[N]`` samples;
2. features with the training extractors and the checkpoint's ``features`` config: log-mel
   ``[T, n_mels]`` and eGeMAPS ``[T, 88]`` at the model's native fps, ``T = num_frames_for_samples(N)``,
   or the same arrays read from a feature store (``--store``) whose group has the same audio
   sha256 and feature hashes (:mod:`koemorph.inference.features`); for a phone model with a
   transcript beside the input (``<stem>.txt``, ``render.transcripts``), the recognised phones
   renamed with its words (:mod:`koemorph.features.transcript`); normalised with the checkpoint's
   stats by :func:`koemorph.features.normalise.normalise_features` (the code training uses);
3. :func:`koemorph.model.infer.predict_file`: ``[T, 52]`` for every frame from t = 0 (frames before
   a full context see the same padding as in training);
4. another output fps than the model's (30 <-> 60): linear interpolation at the output grid times
   ``k / fps`` (``num_frames_for_samples(N, fps)`` frames; the last frame is held past the end);
5. optional post-processing (:mod:`koemorph.inference.postprocess`), then an atomic write to the
   output's own path inside OUT: a symbolic link anywhere on that path is an error for the file,
   never written through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koemorph import grid
from koemorph.inference.features import file_features, render_hashes, store_index
from koemorph.inference.manifest import MANIFEST_NAME, RenderRecord, read_manifest
from koemorph.inference.models import ModelRef, get_model
from koemorph.inference.postprocess import RenderConfig, postprocess
from koemorph.io.tracks.formats import FORMATS as _TRACK_FORMATS
from koemorph.io.tracks.formats import format_named

__all__ = [
    "MANIFEST_NAME",
    "RenderJob",
    "file_features",
    "plan",
    "render_file",
    "render_values",
    "words_source",
]

OUTPUT_SUFFIXES = {f.name: f.suffix for f in _TRACK_FORMATS}  # output format name -> suffix
# Output frames per inference block (the result does not depend on it). At 512 a block's
# [512, 52, 256] float32 tensors (27 MB) stay under the workers' 32 MB mmap threshold
# (pipeline.dask_utils.WORKER_MALLOC_ENV), so they reuse heap memory instead of being faulted in
# afresh; and a block's context (C - 1 + L mel frames before and after) is shared by twice the
# outputs of a 256-frame block.
CHUNK = 512


@dataclass
class RenderJob:
    """Everything one worker task needs (plain, picklable values). Paths are absolute."""

    input: str
    rel: str  # input path relative to INPUT_DIR (posix)
    output: str  # OUT_DIR (resolved) / output_rel: links inside OUT are not resolved
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
    input_dir: str | None = None  # INPUT_DIR, resolved
    out_dir: str | None = None  # OUT_DIR, resolved
    transcript: str | None = None  # <stem>.txt beside the input, when used
    transcript_sha256: str | None = None  # the driver's hash of it (None: unreadable or no transcript)
    recognise_words: bool = False  # no transcript: recognise the words and use them as one
    features_hash: str | None = None  # what makes its features (inference.features.render_hashes)
    match_level: bool = True  # scale an input outside the training files' levels to them


def find_inputs(input_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Audio files under ``input_dir`` (``AUDIO_EXTENSIONS``), recursively, sorted by relative path.

    Hidden files and folders (``.*``, e.g. macOS ``._x.wav``) and anything under ``exclude`` are skipped
    (:func:`koemorph.io.walk.files_under`).
    """
    from koemorph.io.audio import is_audio_file
    from koemorph.io.walk import files_under

    return [p for p in files_under(input_dir, exclude=exclude) if is_audio_file(p) and p.is_file()]


def link_in_output_path(out_dir: str | Path, output_rel: str) -> str | None:
    """The problem if a symbolic link lies on the output's path inside ``out_dir`` (the file itself
    or a folder between; ``out_dir`` itself may be a link), else None. Outputs are never written
    through links: the link's target stays untouched."""
    import os

    path = Path(out_dir)
    for part in Path(output_rel).parts:
        path = path / part
        if path.is_symlink():
            return (
                f"{path}: is a symbolic link (to {os.readlink(path)}); outputs are not written through links"
            )
    return None


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

    Returns ``(jobs, records)``: records are ``skipped`` (input audio sha256, transcript, model
    sha256, fps, format, post-processing and what makes the features (:func:`render_hashes`)
    unchanged since the previous manifest, and the output exists) or ``error`` (two inputs that
    would write the same output, e.g. ``x.wav`` and ``x.flac``; a symbolic link on the output's path).
    """
    if fmt not in OUTPUT_SUFFIXES:
        raise ValueError(f"unknown format {fmt!r}: choose one of {sorted(OUTPUT_SUFFIXES)}")
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    post, phones = post or RenderConfig(), bool(model.features.get("phones"))
    settings = {
        "format": fmt,
        "fps": grid.check_fps(fps or model.fps),
        "model": dataclasses.asdict(model),
        "post": post.to_dict(),
        "store": str(store) if store else None,
        "threads": threads,
        "chunk": chunk,
        "input_dir": str(input_dir.resolve()),
        "out_dir": str(out_dir.resolve()),
        "transcripts": post.transcripts and phones,
        "recognise_words": post.recognise_words and phones,
        "match_level": post.match_level,
        "features_hashes": render_hashes(model.features, post.match_level),
    }
    previous = read_manifest(out_dir)
    index = store_index(store, model.features) if store else {}
    inputs = find_inputs(input_dir, exclude=out_dir)
    targets: dict[str, list[str]] = {}
    for path in inputs:
        rel = path.relative_to(input_dir)
        targets.setdefault(rel.with_suffix(OUTPUT_SUFFIXES[fmt]).as_posix(), []).append(rel.as_posix())
    jobs, records = [], []
    for path in inputs:
        job = _job(path, input_dir, settings, index)
        link = link_in_output_path(out_dir, job.output_rel)
        problem = _collision(path, job, targets) or (link and f"{path}: {link}")
        if problem:
            records.append(_record(job, "error", error=problem))
            continue
        prev = previous.get(job.output_rel)
        if _up_to_date(prev, job):
            skipped = {"status": "skipped", "seconds": 0.0, "input": job.rel, "input_dir": job.input_dir}
            records.append(dataclasses.replace(prev, **skipped))
        else:
            jobs.append(job)
    return jobs, records


def _job(path: Path, input_dir: Path, settings: dict, index: dict) -> RenderJob:
    """The job of one input (the driver hashes it and reads its duration from the header)."""
    from koemorph.io.audio import audio_info, sha256_file

    rel = path.relative_to(input_dir).as_posix()
    out_rel = Path(rel).with_suffix(OUTPUT_SUFFIXES[settings["format"]]).as_posix()
    try:
        sha = sha256_file(path)
    except OSError:
        sha = None
    transcript, recognise = words_source(path, settings["transcripts"], settings["recognise_words"])
    transcript_sha = None  # unreadable: the worker's read names the problem
    if transcript is not None:
        with contextlib.suppress(OSError):
            transcript_sha = sha256_file(transcript)
    try:
        duration = audio_info(path).duration
    except Exception:
        duration = 0.0
    source = "transcript" if transcript else "recognised" if recognise else "audio"
    return RenderJob(
        str(path.resolve()),
        rel,
        str(Path(settings["out_dir"]) / out_rel),
        out_rel,
        settings["format"],
        settings["fps"],
        settings["model"],
        settings["post"],
        sha,
        duration,
        settings["store"],
        index.get(sha),
        settings["threads"],
        settings["chunk"],
        settings["input_dir"],
        settings["out_dir"],
        str(transcript.resolve()) if transcript else None,
        transcript_sha,
        recognise,
        settings["features_hashes"][source],
        settings["match_level"],
    )


def words_source(audio: Path, transcripts: bool, recognise_words: bool) -> tuple[Path | None, bool]:
    """Where a phone model reads an input's words: ``(transcript, recognise)``. ``transcript`` is the
    input's ``<stem>.txt`` when ``transcripts`` is set and the file exists, else None; ``recognise``
    is whether to recognise the words instead (``recognise_words`` set and no transcript)."""
    transcript = Path(audio).with_suffix(".txt")
    told = transcript if transcripts and transcript.is_file() else None
    return told, bool(recognise_words and told is None)


def _collision(path: Path, job: RenderJob, targets: dict[str, list[str]]) -> str | None:
    if len(targets[job.output_rel]) < 2:
        return None
    others = [o for o in targets[job.output_rel] if o != job.rel]
    return f"{path}: output {job.output_rel} would also be written by {', '.join(others)}; rename one of them"


def _up_to_date(prev: RenderRecord | None, job: RenderJob) -> bool:
    """A previous ok/skipped record with this job's settings, and its output still in place."""
    return (
        prev is not None
        and prev.status in ("ok", "skipped")
        and job.audio_sha256 is not None
        and Path(job.output).is_file()
        and prev.settings() == _record(job, "skipped").settings()
    )


def _record(job: RenderJob, status: str, **extra) -> RenderRecord:
    fields = {
        "input": job.rel,
        "output": job.output_rel,
        "status": status,
        "audio_sha256": job.audio_sha256,
        "model_id": job.model["id"],
        "model_sha256": job.model["sha256"],
        "model_source": job.model["source"],
        "runtime": job.model["runtime"],
        "fps": job.fps,
        "native_fps": job.model["fps"],
        "format": job.format,
        "postprocess": job.post,
        "input_dir": job.input_dir,
        "transcript": Path(job.rel).with_suffix(".txt").as_posix() if job.transcript else None,
        "transcript_sha256": job.transcript_sha256,
        "recognise_words": job.recognise_words,
        "features_hash": job.features_hash,
    }
    fields.update(extra)
    return RenderRecord(**fields)


def resample_fps(values: np.ndarray, from_fps: int, to_fps: int, n_frames: int) -> np.ndarray:
    """``values`` ``[T, 52]`` at ``from_fps`` linearly interpolated at times ``k / to_fps``,
    ``k < n_frames``: ``[n_frames, 52]`` float32 (ends held)."""
    from koemorph.io.tracks import Track, resample_to_grid

    track = Track(
        "", grid.frame_times(len(values), from_fps), np.asarray(values, np.float32), float(from_fps)
    )
    return resample_to_grid(track, n_frames, to_fps)


def write_output(path: str, values: np.ndarray, fps: int, fmt: str) -> None:
    """Write ``[T, 52]`` Apple-order values atomically in ``fmt`` (see :data:`OUTPUT_SUFFIXES`)."""
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
    predict = predict_file
    if job.model["runtime"] == "onnx":
        from koemorph.inference.export import predict_file_onnx, session_for

        model, predict = session_for(model, meta, job.threads), predict_file_onnx
    values = predict(
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
        "peak_dbfs": peak_dbfs(samples),
        "gain_db": feats["gain_db"],
        "features": source,
        "unknown_words": feats["unknown_words"],
        **_heard(feats["recognised"]),
    }


def peak_dbfs(samples: np.ndarray) -> float | None:
    """The largest ``|sample|`` of ``samples`` (``[N]`` in [-1, 1]) in dB re full scale, to 0.1 dB;
    None when every sample is 0."""
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    return round(20.0 * np.log10(peak), 1) if peak > 0 else None


def _heard(recognised) -> dict:
    """The record's fields of a file's recognised words (:class:`koemorph.features.words.Recognised`)."""
    if recognised is None:
        return {}
    return {
        "recognised_words": recognised.words,
        "recognised_log_posterior": recognised.log_posterior,
        "recognised_words_used": recognised.confident,
    }


def render_file(job: RenderJob) -> RenderRecord:
    """Render one input to its output file; return its ``ok`` record.

    Bad input raises :class:`koemorph.errors.InputError` (``pipeline.jobs.run_jobs`` turns any exception
    into a record with :func:`failed`). A failed file leaves no output behind (writes are atomic; an
    older output of the same name is left as it was).
    """
    from koemorph.errors import InputError

    start, cpu = time.perf_counter(), time.process_time()
    link = link_in_output_path(job.out_dir, job.output_rel) if job.out_dir else None
    if link:
        raise InputError(job.input, link)
    values, facts = render_values(job)
    write_output(job.output, values, job.fps, job.format)
    return _record(
        job,
        "ok",
        **facts,
        seconds=round(time.perf_counter() - start, 3),
        cpu_seconds=round(time.process_time() - cpu, 3),
    )


def failed(job: RenderJob, error: str, traceback: str | None, seconds: float) -> RenderRecord:
    """The error record of a job whose worker raised (``error`` names the file and the problem)."""
    return _record(job, "error", error=error, seconds=round(seconds, 3), traceback=traceback)
