"""Blendshape tracks: read any supported format, check against the audio, resample onto the grid.

Formats (by suffix, registered in :mod:`koemorph.io.tracks.formats`): project JSONL (``.jsonl``),
Live Link Face CSV (``.csv``), BEAT-style JSON (``.json``). Every reader returns a :class:`Track`
with real timestamps; :func:`resample_to_grid` interpolates on those timestamps (never on frame
indices), so a 60 fps track, a track starting at 0.0333 s or one with jitter all land at the right
grid times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from koemorph.errors import TrackError
from koemorph.grid import frame_times, num_frames
from koemorph.io.tracks.beat_json import read_beat_json, write_beat_json
from koemorph.io.tracks.formats import (
    FORMATS,
    NOT_TRACKS,
    TRACK_SUFFIXES,
    TrackFormat,
    format_named,
    format_of,
    is_track_file,
    preferred,
)
from koemorph.io.tracks.jsonl import read_jsonl_track, write_jsonl_track
from koemorph.io.tracks.livelink_csv import read_livelink_csv, write_livelink_csv
from koemorph.io.tracks.track import VALUE_TOLERANCE, Track, clean_floats, estimate_source_fps

__all__ = [
    "FORMATS",
    "NOT_TRACKS",
    "TRACK_SUFFIXES",
    "VALUE_TOLERANCE",
    "Track",
    "TrackFormat",
    "check_duration",
    "clean_floats",
    "estimate_source_fps",
    "format_named",
    "format_of",
    "is_track_file",
    "load_track_for_audio",
    "preferred",
    "read_beat_json",
    "read_jsonl_track",
    "read_livelink_csv",
    "read_track",
    "resample_to_grid",
    "track_span",
    "write_beat_json",
    "write_jsonl_track",
    "write_livelink_csv",
]


def read_track(path: str | Path, *, swap_mouth_lr: bool = False, fps: int | None = None) -> Track:
    """Read a track, choosing the reader by suffix (:mod:`koemorph.io.tracks.formats`). ``swap_mouth_lr``
    and ``fps`` (the timecode rate, inferred when None) apply to Live Link CSV only. Raises TrackError."""
    suffix = Path(path).suffix.lower()
    fmt = next((f for f in FORMATS if f.suffix == suffix), None)
    if fmt is None:
        raise TrackError(path, f"unknown track format {suffix!r} (expected one of {TRACK_SUFFIXES})")
    return fmt.read(path, swap_mouth_lr=swap_mouth_lr, fps=fps)


def resample_to_grid(track: Track, n_frames: int, fps: int) -> np.ndarray:
    """Track values at grid times ``k / fps``, ``k < n_frames``: ``[n_frames, 52]`` float32 in [0, 1].

    Linear interpolation between the track's real timestamps; before the first and after the
    last timestamp the first/last frame is held. Works in both directions between 30 and 60 fps;
    going 60 -> 30 it samples the interpolant at the grid times without a low-pass filter,
    which is fine for facial motion (far below the 15 Hz Nyquist limit of the 30 fps grid).
    """
    grid = frame_times(n_frames, fps)
    times, values = track.times, track.values.astype(np.float64)
    if len(times) == 1:
        return np.repeat(np.clip(values, 0, 1), len(grid), axis=0).astype(np.float32)
    right = np.clip(np.searchsorted(times, grid, side="right"), 1, len(times) - 1)
    left = right - 1
    weight = np.clip((grid - times[left]) / (times[right] - times[left]), 0.0, 1.0)[:, None]
    out = values[left] * (1.0 - weight) + values[right] * weight
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def track_span(track: Track) -> float:
    """Seconds covered by the track: last timestamp plus one frame period (of ``source_fps``)."""
    period = 1.0 / track.source_fps if track.source_fps else 0.0
    return float(track.times[-1]) + period


def check_duration(track: Track, audio_duration_s: float, tolerance_s: float) -> None:
    """TrackError if the track's span (:func:`track_span`) differs from the audio duration by
    more than ``tolerance_s`` seconds."""
    diff = track_span(track) - float(audio_duration_s)
    if abs(diff) > tolerance_s:
        side = "shorter" if diff < 0 else "longer"
        raise TrackError(
            track.path,
            f"track is {abs(diff):.2f} s {side} than the audio ({audio_duration_s:.2f} s); "
            f"tolerance {tolerance_s:g} s",
        )


def load_track_for_audio(
    path: str | Path, audio_duration_s: float, fps: int, *, tolerance_s: float, swap_mouth_lr: bool = False
) -> np.ndarray:
    """Read ``path``, check it against the audio duration, and resample it onto the audio's grid:
    ``[grid.num_frames(audio_duration_s, fps), 52]`` float32. Raises TrackError."""
    track = read_track(path, swap_mouth_lr=swap_mouth_lr)
    check_duration(track, audio_duration_s, tolerance_s)
    return resample_to_grid(track, num_frames(audio_duration_s, fps), fps)
