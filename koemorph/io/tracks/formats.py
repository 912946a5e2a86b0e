"""The one registry of blendshape track formats: name, suffix, reader, writer.

Everything that picks files by suffix (manifest pairing, evaluate pairing, render's output
formats, :func:`koemorph.io.tracks.read_track`) asks this module. :data:`FORMATS` is in
preference order: when one stem has several tracks, the earliest format wins.
:data:`NOT_TRACKS` matches the project's own files that share a track suffix (phone timings,
manifests, results, metrics) and are never tracks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from koemorph.io.tracks.beat_json import read_beat_json, write_beat_json
from koemorph.io.tracks.jsonl import read_jsonl_track, write_jsonl_track
from koemorph.io.tracks.livelink_csv import read_livelink_csv, write_livelink_csv
from koemorph.io.tracks.track import Track


@dataclass(frozen=True)
class TrackFormat:
    """``read(path, *, swap_mouth_lr, fps) -> Track`` (the two options apply to Live Link CSV only);
    ``write(path, values [T, 52] Apple order, fps)``, atomic."""

    name: str  # as in ``koemorph render --format``
    suffix: str  # lower case, with the dot
    read: Callable[..., Track]
    write: Callable[..., None]


def _plain(reader):
    return lambda path, *, swap_mouth_lr=False, fps=None: reader(path)


FORMATS = (
    TrackFormat("jsonl", ".jsonl", _plain(read_jsonl_track), write_jsonl_track),
    TrackFormat("livelink-csv", ".csv", read_livelink_csv, write_livelink_csv),
    TrackFormat("beat-json", ".json", _plain(read_beat_json), write_beat_json),
)
TRACK_SUFFIXES = tuple(f.suffix for f in FORMATS)
NOT_TRACKS = re.compile(
    r"(\.phones\.json|^corpus\.json|^take\.json|frame_log.*|^render_manifest\.jsonl|^metrics\.json"
    r"|^evaluation\.json|\.(problems|results|failures)\.jsonl|\.stats\.json)$",
    re.I,
)


def format_named(name: str) -> TrackFormat:
    """The format called ``name``; ValueError listing the names otherwise."""
    for f in FORMATS:
        if f.name == name:
            return f
    raise ValueError(f"unknown format {name!r}: choose one of {sorted(f.name for f in FORMATS)}")


def format_of(path: str | Path) -> TrackFormat | None:
    """The format of ``path`` by suffix, or None (not a track suffix, or a :data:`NOT_TRACKS` name)."""
    path = Path(path)
    if NOT_TRACKS.search(path.name):
        return None
    return next((f for f in FORMATS if f.suffix == path.suffix.lower()), None)


def is_track_file(path: str | Path) -> bool:
    return format_of(path) is not None


def preferred(paths) -> list[Path]:
    """Track files of one stem, best first (the order of :data:`FORMATS`)."""
    return sorted(paths, key=lambda p: TRACK_SUFFIXES.index(Path(p).suffix.lower()))
