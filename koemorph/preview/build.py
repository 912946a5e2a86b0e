"""``koemorph preview``: preview pages (and optionally MP4s) for one audio file or a folder of them.

One file: ``preview_file(AUDIO, [TRACK, ...], OUT.html, model=...)`` puts on the page the model's
render of AUDIO first (when ``model`` is given), then each TRACK (any format ``read_track`` reads),
all resampled onto the grid at ``fps`` (frame ``k`` at ``k / fps`` s, ``ceil(N * fps / 16000)``
frames for ``N`` samples at 16 kHz).

A folder: ``preview_folder(AUDIO_DIR, [TRACK_DIR, ...], OUT_DIR)`` walks AUDIO_DIR for audio
(as ``koemorph render`` does), pairs each file with the track of the same relative path and stem
in every TRACK_DIR (``.jsonl``, ``.csv`` or ``.json``), writes ``OUT_DIR/<rel>.html`` and an
``OUT_DIR/index.html`` listing them. A file that fails is listed with its problem and the others
go on.

``koemorph evaluate`` calls :func:`evaluation_preview` for its best and worst files (truth and
model, with the audio found beside the truth track).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from koemorph import grid
from koemorph.io.tracks.formats import TRACK_SUFFIXES
from koemorph.preview.page import PreviewTrack, index_html, write_page

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def read_grid_track(path: str | Path, n_frames: int, fps: int) -> np.ndarray:
    """A track file on the grid: ``[n_frames, 52]`` float32 (last frame held past its end)."""
    from koemorph.io.tracks import read_track, resample_to_grid

    return resample_to_grid(read_track(path), n_frames, fps)


def model_values(audio: Path, spec: str, cfg, fps: int, work_dir: Path, runtime: str = "torch") -> np.ndarray:
    """What ``koemorph render`` writes for ``audio`` with model ``spec`` (checkpoint or MLflow URI)
    and ``cfg.render`` post-processing, at ``fps``: ``[T, 52]`` float32 (with the transcript beside
    the audio, or its recognised words, as render reads them)."""
    from koemorph.inference.models import resolve_model
    from koemorph.inference.render import RenderJob, render_values, words_source

    ref = resolve_model(spec, work_dir, runtime=runtime)
    phones = bool(ref.features.get("phones"))
    transcript, recognise = words_source(
        Path(audio), cfg.render.transcripts and phones, cfg.render.recognise_words and phones
    )
    job = RenderJob(
        str(Path(audio).resolve()),
        Path(audio).name,
        "",
        "",
        "jsonl",
        fps,
        dataclasses.asdict(ref),
        cfg.render.to_dict(),
        None,
        0.0,
        transcript=str(transcript.resolve()) if transcript else None,
        recognise_words=recognise,
        match_level=cfg.render.match_level,
    )
    return render_values(job)[0]


def _tracks(audio: Path, samples, paths, labels, model, cfg, fps, work_dir, runtime) -> list[PreviewTrack]:
    n = grid.num_frames_for_samples(samples.size, fps)
    tracks = []
    if model:
        values = model_values(audio, model, cfg, fps, work_dir, runtime)
        tracks.append(PreviewTrack(f"model: {Path(model).name}", values))
    for path, label in zip(paths, labels):
        tracks.append(PreviewTrack(label, read_grid_track(path, n, fps)))
    if not tracks:
        raise ValueError(f"{audio}: nothing to show: give a track or --model")
    return tracks


def preview_file(
    audio: str | Path,
    tracks: list,
    out: str | Path,
    *,
    cfg,
    model: str | None = None,
    channels: list[str] | None = None,
    fps: int = 30,
    mp4: bool = False,
    labels: list[str] | None = None,
    runtime: str = "torch",
) -> dict:
    """Write the page ``out`` (and ``out`` with suffix ``.mp4`` when ``mp4``); returns
    ``{"page", "mp4", "tracks", "duration"}``. Raises on unreadable audio or tracks (naming the file)."""
    from koemorph.io.audio import load_audio

    audio, out, fps = Path(audio), Path(out), grid.check_fps(fps)
    samples = load_audio(audio)
    labels = labels or [str(t) for t in tracks]
    shown = _tracks(audio, samples, tracks, labels, model, cfg, fps, out.parent, runtime)
    sound = (samples, grid.SAMPLE_RATE)
    write_page(out, audio.name, shown, fps, sound, channels)
    video = None
    if mp4:
        from koemorph.preview.video import write_mp4

        video = write_mp4(out.with_suffix(".mp4"), shown, fps, sound, (channels or ["jawOpen"])[0])
    return {
        "page": str(out),
        "mp4": str(video) if video else None,
        "tracks": [t.label for t in shown],
        "duration": samples.size / grid.SAMPLE_RATE,
    }


def _match(track_dirs: list[Path], rel: Path) -> list[Path]:
    found = []
    for folder in track_dirs:
        stem = folder / rel.with_suffix("")
        hit = next((p for s in TRACK_SUFFIXES if (p := stem.with_name(stem.name + s)).is_file()), None)
        if hit is None:
            raise FileNotFoundError(f"{folder / rel}: no track with this stem in {folder}")
        found.append(hit)
    return found


def preview_folder(
    audio_dir: str | Path, track_dirs: list, out_dir: str | Path, *, cfg, mp4: bool = False, **kwargs
) -> dict:
    """A page per audio file under ``audio_dir`` plus ``out_dir/index.html``; ``kwargs`` as for
    :func:`preview_file`. Returns ``{"pages", "errors": [message, ...], "index"}``."""
    from koemorph.inference.render import find_inputs

    audio_dir, out_dir = Path(audio_dir), Path(out_dir)
    track_dirs = [Path(d) for d in track_dirs]
    for folder in track_dirs:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder (with an audio folder, give track folders)")
    entries, errors = [], []
    for audio in find_inputs(audio_dir, exclude=out_dir):
        rel = audio.relative_to(audio_dir)
        page = out_dir / rel.with_suffix(".html")
        try:
            labels = [str(d) for d in track_dirs]
            done = preview_file(
                audio, _match(track_dirs, rel), page, cfg=cfg, mp4=mp4, labels=labels, **kwargs
            )
        except Exception as exc:  # one bad file must not stop the others: listed, exit code later
            message = str(exc) if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: {exc}"
            errors.append(message if str(audio) in message else f"{audio}: {message}")
            entries.append({"name": rel.as_posix(), "error": errors[-1]})
            continue
        entries.append(
            {
                "href": rel.with_suffix(".html").as_posix(),
                "name": rel.as_posix(),
                "duration": done["duration"],
                "tracks": done["tracks"],
            }
        )
    from koemorph.io.atomic import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "index.html", index_html(f"koemorph previews: {audio_dir}", entries))
    return {"pages": len(entries) - len(errors), "errors": errors, "index": str(out_dir / "index.html")}


def evaluation_preview(key: str, truth: np.ndarray, pred: np.ndarray, fps: int, truth_dir, out) -> Path:
    """A page with the truth and the model of one evaluated file (``key``: its relative path without
    suffix), the audio ``truth_dir/key.{wav,flac,ogg}`` embedded when there is one."""
    from koemorph.io.audio import load_audio

    audio = next((p for s in AUDIO_SUFFIXES if (p := Path(truth_dir) / f"{key}{s}").is_file()), None)
    sound = None
    if audio is not None:
        try:
            sound = (load_audio(audio), grid.SAMPLE_RATE)
        except (OSError, ValueError):  # evaluate already reported it; the page shows the faces silent
            sound = None
    shown = [PreviewTrack("truth", truth), PreviewTrack("model", pred)]
    return write_page(out, key, shown, fps, sound)


__all__ = ["evaluation_preview", "model_values", "preview_file", "preview_folder", "read_grid_track"]
