"""The project JSONL track format: one ``{"timestamp": s, "blendshapes": [52 floats]}`` per line.

Timestamps are seconds relative to the audio start; weights are in Apple order
(``blendshapes.ARKIT_NAMES``). Errors name the file and the 1-based line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from koemorph.blendshapes import NUM_BLENDSHAPES
from koemorph.errors import TrackError
from koemorph.io.atomic import atomic_path
from koemorph.io.tracks.track import Track, _is_number, _text_lines, check_weights, clean_floats, make_track

WRITE_BLOCK = 4096  # frames formatted at a time by the writer


def read_jsonl_track(path: str | Path) -> Track:
    """Read a project JSONL track; one ``{"timestamp": s, "blendshapes": [52 floats]}`` per line.

    Timestamps are seconds relative to the audio start and are used as they are (the first may
    be 0.0333, not 0). Blank lines are skipped.
    """
    numbered = [(n, text) for n, text in _text_lines(path) if text.strip()]
    if not numbered:
        raise TrackError(path, "track file is empty")
    parsed = _parse_jsonl_fast(numbered)
    if parsed is not None:
        return make_track(path, parsed[0], parsed[1], lines=[n for n, _ in numbered])
    times, rows, lines = [], [], []  # slow path: find the first bad line and say what is wrong
    for line_no, text in numbered:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrackError(path, f"bad JSON ({exc.msg})", line=line_no) from None
        if not isinstance(record, dict):
            raise TrackError(path, "expected a JSON object", line=line_no)
        missing = [k for k in ("timestamp", "blendshapes") if k not in record]
        if missing:
            raise TrackError(path, f"missing key(s) {missing}", line=line_no)
        stamp, weights = record["timestamp"], record["blendshapes"]
        if not _is_number(stamp):
            raise TrackError(path, f"timestamp is not a number: {stamp!r}", line=line_no)
        if not isinstance(weights, list):
            raise TrackError(path, "blendshapes is not a list", line=line_no)
        if len(weights) != NUM_BLENDSHAPES:
            problem = f"expected {NUM_BLENDSHAPES} blendshape values, got {len(weights)}"
            raise TrackError(path, problem, line=line_no)
        if not all(_is_number(w) for w in weights):
            raise TrackError(path, "blendshapes contains a non-number", line=line_no)
        times.append(stamp)
        rows.append(weights)
        lines.append(line_no)
    return make_track(path, times, rows, lines=lines)


def _parse_jsonl_fast(numbered: list[tuple[int, str]]):
    """``(times [N], values [N, 52])`` parsed in one C-level pass, or None if anything looks off
    (the caller then re-reads line by line to name the bad line)."""
    text = ",".join(t for _, t in numbered)
    if "true" in text or "false" in text:  # booleans are numbers to numpy, not to us
        return None
    try:
        records = json.loads("[" + text + "]")
        times = np.array([r["timestamp"] for r in records])
        values = np.array([r["blendshapes"] for r in records])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    numeric = ("f", "i")
    if len(records) != len(numbered) or times.dtype.kind not in numeric or values.dtype.kind not in numeric:
        return None
    if values.shape != (len(records), NUM_BLENDSHAPES) or times.ndim != 1:
        return None
    return times, values


def write_jsonl_track(path: str | Path, values, fps: int) -> None:
    """Write ``values`` ``[T, 52]`` (Apple order) as project JSONL, frame k at ``k / fps`` s.

    Written atomically in blocks of :data:`WRITE_BLOCK` frames: the text of a long file never
    exists whole in memory (an hour as Python floats and one string took ~400 MB)."""
    values, fps = check_weights(values, fps)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for start in range(0, len(values), WRITE_BLOCK):
            stop = min(start + WRITE_BLOCK, len(values))
            times, rows = clean_floats(np.arange(start, stop) / fps), clean_floats(values[start:stop])
            f.write(
                "".join(
                    json.dumps({"timestamp": t, "blendshapes": r}, allow_nan=False) + "\n"
                    for t, r in zip(times, rows)
                )
            )
