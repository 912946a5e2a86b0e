"""Import Epic Live Link Face takes as koemorph training pairs (``<take>.wav`` + ``<take>.jsonl``).

A take is a folder holding one animation CSV (names containing ``frame_log`` are the app's
per-frame log, not animation, and are ignored) and one ``.mov`` whose audio track is the speech.
``take.json`` and thumbnails may be there too; they are not needed and not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from koemorph.errors import AudioError, InputError, TrackError
from koemorph.grid import SAMPLE_RATE, SUPPORTED_FPS, num_frames_for_samples
from koemorph.io.audio import write_wav
from koemorph.io.tracks import check_duration, read_livelink_csv, resample_to_grid, write_jsonl_track

DEFAULT_TOLERANCE_S = 0.5  # |CSV span - audio duration| allowed (= DataConfig.max_duration_mismatch_s)


def _is_junk(path: Path) -> bool:
    return "Zone.Identifier" in path.name or path.name.startswith(".")


def _take_csvs(folder: Path) -> list[Path]:
    found = folder.glob("*.csv")
    return sorted(p for p in found if p.is_file() and "frame_log" not in p.name and not _is_junk(p))


def _take_movs(folder: Path) -> list[Path]:
    found = folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() == ".mov" and not _is_junk(p))


def find_takes(takes_dir: str | Path) -> list[Path]:
    """Folders under ``takes_dir`` (itself included; recursive, hidden folders skipped) holding a take
    CSV or a .mov, sorted."""
    from koemorph.io.walk import files_under

    folders = {p.parent for p in files_under(takes_dir) if p.suffix.lower() in (".csv", ".mov")}
    return sorted(f for f in folders if _take_csvs(f) or _take_movs(f))


def decode_mov_audio(path: str | Path) -> np.ndarray:
    """The first audio stream of a .mov (or any container FFmpeg reads) as mono float32 at
    ``grid.SAMPLE_RATE``: ``[N]`` samples. Channels are averaged (as in ``audio.load_audio``),
    then soxr resamples. AudioError if the file cannot be decoded or has no audio."""
    import av
    import soxr

    chunks, rate = [], None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(path, "no audio stream in the video file")
            stream = container.streams.audio[0]
            to_float = av.AudioResampler(format="fltp")  # planar float, native layout and rate
            for frame in container.decode(stream):
                rate = frame.sample_rate
                for converted in to_float.resample(frame):
                    chunks.append(converted.to_ndarray().mean(axis=0))
    except AudioError:
        raise
    except Exception as exc:  # PyAV raises many FFmpegError subclasses; all mean "cannot decode"
        raise AudioError(path, f"cannot decode audio ({type(exc).__name__}: {exc})") from None
    if not chunks or rate is None:
        raise AudioError(path, "audio stream has no samples")
    mono = np.concatenate(chunks).astype(np.float32)
    if not np.isfinite(mono).all():
        raise AudioError(path, "audio contains NaN/Inf samples")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def import_take(
    take_dir: str | Path,
    out_dir: str | Path,
    *,
    swap_mouth_lr: bool = False,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> dict:
    """Convert one take folder to ``out_dir/<folder name>.wav`` (16 kHz mono PCM16) and ``.jsonl``.

    The JSONL is the CSV track resampled by :func:`~koemorph.io.tracks.resample_to_grid` onto the
    grid at the take's own rate (30 or 60 fps, from its timestamps), from t = 0 (the CSV's first
    row, which is taken as the start of the .mov's audio) for as many frames as the audio has.
    That way the pair is already on koemorph's grid, a 60 fps take keeps its detail, and the
    JSONL's timestamps are exact ``k / fps`` instead of the app's jittered ones.

    Returns a record ``{"take", "status": "ok", "wav", "jsonl", "frames", "fps", "error": None}``;
    raises InputError (TrackError / AudioError) for a bad take. Writes are atomic, and the WAV is
    removed again if the JSONL cannot be written, so nothing partial is left.
    """
    take_dir, out_dir = Path(take_dir), Path(out_dir)
    csvs, movs = _take_csvs(take_dir), _take_movs(take_dir)
    if len(csvs) != 1:
        raise TrackError(take_dir, f"expected one animation CSV in the take folder, found {len(csvs)}")
    if len(movs) != 1:
        raise AudioError(take_dir, f"expected one .mov in the take folder, found {len(movs)}")
    track = read_livelink_csv(csvs[0], swap_mouth_lr=swap_mouth_lr)
    if track.source_fps not in SUPPORTED_FPS:
        raise TrackError(csvs[0], f"row rate {track.source_fps} fps is neither 30 nor 60")
    fps = int(track.source_fps)
    samples = decode_mov_audio(movs[0])
    check_duration(track, len(samples) / SAMPLE_RATE, tolerance_s)
    values = resample_to_grid(track, num_frames_for_samples(len(samples), fps), fps)

    wav, jsonl = out_dir / f"{take_dir.name}.wav", out_dir / f"{take_dir.name}.jsonl"
    write_wav(wav, samples)
    try:
        write_jsonl_track(jsonl, values, fps)
    except BaseException:
        wav.unlink(missing_ok=True)
        raise
    return {
        "take": take_dir.name,
        "status": "ok",
        "wav": str(wav),
        "jsonl": str(jsonl),
        "frames": int(len(values)),
        "fps": fps,
        "error": None,
    }


def import_takes(
    takes_dir: str | Path,
    out_dir: str | Path,
    *,
    swap_mouth_lr: bool = False,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> list[dict]:
    """Import every take found under ``takes_dir`` (see :func:`find_takes`, :func:`import_take`).

    One record per take, in path order. A bad take (missing .mov, no audio stream, bad CSV,
    duration mismatch, a folder name already used by another take) becomes
    ``{"take", "status": "error", "wav": None, "jsonl": None, "frames": 0, "fps": None, "error": message}``
    and the other takes go on.
    """
    records, seen = [], set()
    for folder in find_takes(takes_dir):
        try:
            if folder.name in seen:
                raise TrackError(folder, "another take folder has the same name; rename one")
            seen.add(folder.name)
            records.append(import_take(folder, out_dir, swap_mouth_lr=swap_mouth_lr, tolerance_s=tolerance_s))
        except InputError as exc:
            records.append(
                {
                    "take": folder.name,
                    "status": "error",
                    "wav": None,
                    "jsonl": None,
                    "frames": 0,
                    "fps": None,
                    "error": str(exc),
                }
            )
    return records
