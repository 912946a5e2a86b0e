"""The :class:`Track` record, its validation, and the project JSONL and BEAT JSON formats.

A track is a blendshape sequence read from a file: ``times`` ``[N]`` float64 seconds relative to
the audio start, ``values`` ``[N, 52]`` float32 in Apple order (``blendshapes.ARKIT_NAMES``).
Readers raise :class:`koemorph.errors.TrackError` naming the file and, where the format has
lines, the 1-based line number. Writers are atomic and never emit ``-0.0``, ``NaN`` or ``Infinity``.

The Live Link Face CSV format lives in :mod:`koemorph.io.tracks.livelink_csv`; :mod:`koemorph.io.tracks`
dispatches over all three.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from koemorph.blendshapes import ALPHABETICAL_NAMES, ARKIT_NAMES, INDEX, NUM_BLENDSHAPES, canonical_name
from koemorph.errors import TrackError
from koemorph.grid import SUPPORTED_FPS, check_fps
from koemorph.io.atomic import atomic_path, atomic_write_text

VALUE_TOLERANCE = 1e-3  # weights in [-tol, 1 + tol] are clipped to [0, 1]; beyond that is an error
FPS_SNAP_TOLERANCE = 0.05  # relative: an estimate within 5 % of 30 or 60 snaps to it
DECIMALS = 6  # digits written for times and weights
WRITE_BLOCK = 4096  # frames formatted at a time by the JSONL writer


@dataclass
class Track:
    """A blendshape track as read from ``path``.

    ``times``: ``[N]`` float64 seconds relative to the audio start, strictly increasing.
    ``values``: ``[N, 52]`` float32 in [0, 1], Apple order; absent channels hold 0.0.
    ``source_fps``: frame rate estimated from ``times`` (median step, snapped to 30/60), None if N < 2.
    ``extras``: other per-frame arrays kept apart and never clamped (``"rotations"`` ``[N, 9]``).
    ``present``: ``[52]`` bool, which channels the file actually had.
    """

    path: str
    times: np.ndarray
    values: np.ndarray
    source_fps: float | None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    present: np.ndarray = field(default_factory=lambda: np.ones(NUM_BLENDSHAPES, dtype=bool))

    @property
    def n_frames(self) -> int:
        return int(self.times.shape[0])


def estimate_source_fps(times: np.ndarray) -> float | None:
    """Frame rate from timestamps (seconds): ``1 / median(diff)``, snapped to 30 or 60 when within
    :data:`FPS_SNAP_TOLERANCE` of it, else the raw estimate; None for fewer than two frames."""
    if len(times) < 2:
        return None
    raw = 1.0 / float(np.median(np.diff(times)))
    for fps in SUPPORTED_FPS:
        if abs(raw - fps) <= FPS_SNAP_TOLERANCE * fps:
            return float(fps)
    return raw


def make_track(path, times, values, present=None, extras=None, lines=None) -> Track:
    """Validate parsed arrays and build a :class:`Track`.

    ``times`` ``[N]`` seconds, ``values`` ``[N, 52]`` Apple order. ``lines`` ``[N]`` gives the
    1-based file line of each frame for error messages; without it errors name the frame index.
    Raises TrackError for an empty track, NaN/Inf, weights outside [0, 1] beyond
    :data:`VALUE_TOLERANCE`, or timestamps that do not strictly increase.
    """
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if times.shape[0] == 0:
        raise TrackError(path, "track has no frames")

    def fail(i: int, problem: str):
        if lines is None:
            raise TrackError(path, f"frame {i}: {problem}")
        raise TrackError(path, problem, line=int(lines[i]))

    bad_time = ~np.isfinite(times)
    if bad_time.any():
        i = int(np.argmax(bad_time))
        fail(i, f"timestamp is {times[i]}")
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        fail(i, f"{ARKIT_NAMES[j]} is {values[i, j]}")
    out = (values < -VALUE_TOLERANCE) | (values > 1.0 + VALUE_TOLERANCE)
    if out.any():
        i, j = np.argwhere(out)[0]
        fail(i, f"{ARKIT_NAMES[j]} = {values[i, j]:g} is outside [0, 1]")
    steps = np.diff(times)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        fail(i, f"timestamp {times[i]:g} does not increase (previous {times[i - 1]:g})")
    return Track(
        path=str(path),
        times=times,
        values=np.clip(values, 0.0, 1.0).astype(np.float32),
        source_fps=estimate_source_fps(times),
        extras=dict(extras or {}),
        present=np.ones(NUM_BLENDSHAPES, dtype=bool) if present is None else np.asarray(present, dtype=bool),
    )


def clean_floats(values, decimals: int = DECIMALS) -> list:
    """Round to ``decimals`` and return (nested) Python floats ready for JSON/CSV text.

    ``-0.0`` becomes ``0.0``; NaN or Inf raises ValueError (an output must never contain them).
    """
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"refusing to write {int((~np.isfinite(arr)).sum())} NaN/Inf value(s)")
    return (np.round(arr, decimals) + 0.0).tolist()  # + 0.0 turns -0.0 into 0.0


def check_weights(values, fps) -> tuple[np.ndarray, int]:
    """Writer guard: ``values`` must be ``[T, 52]``, finite, in [0, 1] (within tolerance); fps 30/60."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != NUM_BLENDSHAPES:
        raise ValueError(f"expected values of shape [T, {NUM_BLENDSHAPES}], got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("refusing to write NaN/Inf blendshape values")
    if (values < -VALUE_TOLERANCE).any() or (values > 1.0 + VALUE_TOLERANCE).any():
        raise ValueError("blendshape values outside [0, 1]")
    return np.clip(values, 0.0, 1.0), check_fps(fps)


# --- project JSONL: {"timestamp": s, "blendshapes": [52]} per line ---------------------------


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


# --- BEAT-style JSON: {"names": [...], "frames": [{"time": s, "weights": [...]}]} -------------


def read_beat_json(path: str | Path) -> Track:
    """Read a BEAT-style facial JSON track, mapping ``names`` to channels by name (any order).

    Any non-empty subset of the 52 ARKit names is accepted (BEAT often has 51, without
    tongueOut): absent channels are 0.0 with ``present`` False. Unknown or repeated names are
    a TrackError; frame errors name the frame index (JSON has no useful line per frame).
    """
    doc = _load_json(path)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("names", "frames")):
        raise TrackError(path, 'expected an object with "names" and "frames" lists')
    cols = _name_columns(path, doc["names"])
    frames = doc["frames"]
    if not frames:
        raise TrackError(path, "track has no frames")
    times = np.empty(len(frames))
    values = np.zeros((len(frames), NUM_BLENDSHAPES))
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "time" not in frame or "weights" not in frame:
            raise TrackError(path, f'frame {i}: expected an object with "time" and "weights"')
        weights = frame["weights"]
        if not isinstance(weights, list) or len(weights) != len(cols):
            width = len(weights) if isinstance(weights, list) else type(weights).__name__
            raise TrackError(path, f"frame {i}: expected {len(cols)} weights (one per name), got {width}")
        if not _is_number(frame["time"]) or not all(_is_number(w) for w in weights):
            raise TrackError(path, f"frame {i}: time and weights must be numbers")
        times[i] = frame["time"]
        values[i, cols] = weights
    present = np.zeros(NUM_BLENDSHAPES, dtype=bool)
    present[cols] = True
    return make_track(path, times, values, present=present)


def write_beat_json(path: str | Path, values, fps: int) -> None:
    """Write ``values`` ``[T, 52]`` (Apple order) as BEAT-style JSON with names in alphabetical
    order, frame k at ``k / fps`` s, plus ``metadata`` (fps, frame_count, order). One frame per line."""
    values, fps = check_weights(values, fps)
    order = [INDEX[n] for n in ALPHABETICAL_NAMES]
    times = clean_floats(np.arange(len(values)) / fps)
    rows = clean_floats(values[:, order])
    meta = {"fps": fps, "frame_count": len(values), "order": "alphabetical"}
    frames = ",\n".join(json.dumps({"time": t, "weights": r}, allow_nan=False) for t, r in zip(times, rows))
    text = (
        f'{{"names": {json.dumps(list(ALPHABETICAL_NAMES))},\n"metadata": {json.dumps(meta)},\n'
        f'"frames": [\n{frames}\n]}}\n'
    )
    atomic_write_text(path, text)


# --- helpers ---------------------------------------------------------------------------------


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _text_lines(path):
    """Yield ``(1-based line number, text)``; TrackError if missing or not UTF-8."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            yield from enumerate(f, start=1)
    except FileNotFoundError:
        raise TrackError(path, "file not found") from None
    except UnicodeDecodeError as exc:
        raise TrackError(path, f"not UTF-8 text ({exc.reason})") from None


def _load_json(path):
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TrackError(path, "file not found") from None
    except UnicodeDecodeError as exc:
        raise TrackError(path, f"not UTF-8 text ({exc.reason})") from None
    if not text.strip():
        raise TrackError(path, "track file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrackError(path, f"bad JSON ({exc.msg})", line=exc.lineno) from None


def _name_columns(path, names) -> list[int]:
    """Apple-order index of each name in ``names``; TrackError on unknown, repeated or no names."""
    if not names:
        raise TrackError(path, "no blendshape names")
    cols = [INDEX.get(canonical_name(n)) if isinstance(n, str) else None for n in names]
    unknown = [n for n, c in zip(names, cols) if c is None]
    if unknown:
        raise TrackError(path, f"unknown blendshape name(s) {unknown}")
    if len(set(cols)) != len(cols):
        repeated = sorted({ARKIT_NAMES[c] for c in cols if cols.count(c) > 1})
        raise TrackError(path, f"repeated blendshape name(s) {repeated}")
    return cols
