"""Epic Live Link Face CSV: reading into a :class:`~koemorph.io.tracks.track.Track` and writing.

Header (63 columns): ``Timecode,BlendShapeCount`` (also spelled ``BlendshapeCount``), the 52
blendshapes in PascalCase in the app's order (``JawRight,JawLeft`` and ``MouthRight,MouthLeft``
differ from Apple order), then 9 head/eye rotations. Columns are mapped by name, case-insensitively.

Timecode ``HH:MM:SS:FF.fff``: ``FF`` is the frame number at the take's rate (30 or 60) and ``.fff``
the sub-frame fraction, so seconds = ``h*3600 + m*60 + s + (FF + frac) / fps``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from koemorph.blendshapes import ARKIT_NAMES, INDEX, canonical_name
from koemorph.errors import TrackError
from koemorph.grid import SUPPORTED_FPS
from koemorph.io.atomic import atomic_write_text
from koemorph.io.tracks.track import Track, check_weights, clean_floats, make_track


def _app_order() -> tuple[str, ...]:
    names = list(ARKIT_NAMES)
    for a, b in (("jawLeft", "jawRight"), ("mouthLeft", "mouthRight")):
        i, j = INDEX[a], INDEX[b]
        names[i], names[j] = names[j], names[i]
    return tuple(n[0].upper() + n[1:] for n in names)


BLENDSHAPE_COLUMNS = _app_order()  # PascalCase, in the order the app writes them
ROTATION_COLUMNS = (
    "HeadYaw",
    "HeadPitch",
    "HeadRoll",
    "LeftEyeYaw",
    "LeftEyePitch",
    "LeftEyeRoll",
    "RightEyeYaw",
    "RightEyePitch",
    "RightEyeRoll",
)
HEADER = ("Timecode", "BlendShapeCount", *BLENDSHAPE_COLUMNS, *ROTATION_COLUMNS)
BLENDSHAPE_COUNT = len(BLENDSHAPE_COLUMNS) + len(ROTATION_COLUMNS)  # 61

_TIMECODE = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})[:;](\d+)(\.\d+)?$")
_MOUTH_LR = [INDEX["mouthLeft"], INDEX["mouthRight"]]


def parse_timecode(text: str) -> tuple[int, int, int, int, float]:
    """``"19:55:16:26.689"`` -> ``(19, 55, 16, 26, 0.689)``: hours, minutes, seconds, frame, fraction.

    ValueError if the text is not a timecode.
    """
    match = _TIMECODE.match(text.strip())
    if not match:
        raise ValueError(f"bad timecode {text!r} (expected HH:MM:SS:FF.fff)")
    h, m, s, ff, frac = match.groups()
    return int(h), int(m), int(s), int(ff), float(frac) if frac else 0.0


def infer_timecode_fps(whole_seconds: np.ndarray, frame_numbers: np.ndarray) -> int | None:
    """The take's timecode rate from its rows, or None if the rows cannot tell.

    ``whole_seconds`` ``[N]``: ``h*3600 + m*60 + s`` per row; ``frame_numbers`` ``[N]``: ``FF``.
    Rule: any ``FF >= 30`` means 60 fps (a 30 fps timecode never shows one). Otherwise, if the
    rows cross a whole second, it is 30 fps (at 60 fps, FF would have passed 30..59 before the
    wrap). A take shorter than one second with FF < 30 throughout is ambiguous.
    """
    if frame_numbers.max() >= 30:
        return 60
    if np.unique(whole_seconds).size > 1:
        return 30
    return None


def timecode_seconds(
    path, timecodes: list[str], lines: list[int], fps: int | None = None
) -> tuple[np.ndarray, int]:
    """Seconds of each timecode relative to the first, and the rate used (given or inferred).

    Returns ``([N] float64 seconds, fps)``; TrackError (with the line) on a bad timecode or a
    frame number the rate cannot have. A wrap past midnight is unrolled.
    """
    parts = np.empty((len(timecodes), 5))
    for i, text in enumerate(timecodes):
        try:
            parts[i] = parse_timecode(text)
        except ValueError as exc:
            raise TrackError(path, str(exc), line=lines[i]) from None
    whole = parts[:, 0] * 3600 + parts[:, 1] * 60 + parts[:, 2]
    if fps is None:
        fps = infer_timecode_fps(whole, parts[:, 3])
        if fps is None:
            problem = "cannot infer the timecode rate (take shorter than 1 s): pass fps=30 or 60"
            raise TrackError(path, problem)
    if fps not in SUPPORTED_FPS:
        raise TrackError(path, f"unsupported timecode rate {fps!r}: choose one of {SUPPORTED_FPS}")
    too_big = parts[:, 3] >= fps
    if too_big.any():
        i = int(np.argmax(too_big))
        raise TrackError(path, f"frame number {int(parts[i, 3])} is impossible at {fps} fps", line=lines[i])
    seconds = whole + (parts[:, 3] + parts[:, 4]) / fps
    seconds += 86400.0 * np.cumsum(np.diff(seconds, prepend=seconds[0]) < -43200.0)
    return seconds - seconds[0], fps


def read_livelink_csv(path: str | Path, *, swap_mouth_lr: bool = False, fps: int | None = None) -> Track:
    """Read a Live Link Face CSV. Times are relative to the first row (the take's start offset
    is removed); ``fps`` is the timecode rate, inferred per file when None
    (:func:`infer_timecode_fps`).

    All 52 blendshape columns are required: the app always writes them, so a partial header
    means a different or damaged file and is a TrackError listing what is missing. The 9
    rotation columns are optional as a group and go, unclamped, to ``extras["rotations"]``
    ``[N, 9]`` (values as the app writes them). ``swap_mouth_lr`` swaps mouthLeft/mouthRight
    to undo the app's known swap. Unknown columns are ignored.
    """
    reader, header = _open_csv(path)
    tc_col, bs_cols, rot_cols = _map_header(path, header)
    rows, lines = _data_rows(path, reader, len(header))
    timecodes = [row[tc_col] for row in rows]
    numbers = _to_floats(path, rows, lines, header, bs_cols + rot_cols)
    times, _ = timecode_seconds(path, timecodes, lines, fps)
    values = numbers[:, : len(bs_cols)]
    if swap_mouth_lr:
        values[:, _MOUTH_LR] = values[:, _MOUTH_LR[::-1]]
    extras = {}
    if rot_cols:
        rotations = numbers[:, len(bs_cols) :]
        bad = ~np.isfinite(rotations).all(axis=1)
        if bad.any():
            raise TrackError(path, "rotation value is NaN/Inf", line=lines[int(np.argmax(bad))])
        extras["rotations"] = rotations.astype(np.float32)
    return make_track(path, times, values, extras=extras, lines=lines)


def write_livelink_csv(path: str | Path, values, fps: int, rotations=None) -> None:
    """Write ``values`` ``[T, 52]`` (Apple order) as a Live Link Face CSV with the app's 63-column
    header; row k has timecode ``k / fps`` from ``00:00:00:00.000``. ``rotations`` ``[T, 9]``
    (zeros if None). Files under one second cannot have their rate inferred on reading: read
    them back with ``fps`` given."""
    values, fps = check_weights(values, fps)
    n = len(values)
    rotations = np.zeros((n, len(ROTATION_COLUMNS))) if rotations is None else np.asarray(rotations, float)
    if rotations.shape != (n, len(ROTATION_COLUMNS)):
        raise ValueError(f"expected rotations of shape [{n}, {len(ROTATION_COLUMNS)}], got {rotations.shape}")
    app_cols = [INDEX[canonical_name(name)] for name in BLENDSHAPE_COLUMNS]
    numbers = clean_floats(np.concatenate([values[:, app_cols], rotations], axis=1))
    out = [",".join(HEADER)]
    for k, row in enumerate(numbers):
        out.append(",".join([_timecode_text(k, fps), str(BLENDSHAPE_COUNT), *map(repr, row)]))
    atomic_write_text(path, "\n".join(out) + "\n")


def _timecode_text(k: int, fps: int) -> str:
    seconds, ff = divmod(k, fps)
    minutes, s = divmod(seconds, 60)
    h, m = divmod(minutes, 60)
    return f"{h:02d}:{m:02d}:{s:02d}:{ff:02d}.000"


def _open_csv(path):
    """A csv reader positioned after the header, and the header; TrackError if unreadable or empty."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise TrackError(path, "file not found") from None
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise TrackError(path, f"cannot decode text ({exc.reason})") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise TrackError(path, "track file is empty")
    return reader, header


def _data_rows(path, reader, width: int) -> tuple[list[list[str]], list[int]]:
    """The data rows and their 1-based line numbers; blank lines skipped."""
    rows, lines = [], []
    for row in reader:
        if not row:
            continue
        if len(row) != width:
            raise TrackError(path, f"expected {width} columns, got {len(row)}", line=reader.line_num)
        rows.append(row)
        lines.append(reader.line_num)
    if not rows:
        raise TrackError(path, "track has no frames")
    return rows, lines


def _map_header(path, header: list[str]) -> tuple[int, list[int], list[int]]:
    """Column of the timecode, of each blendshape (Apple order) and of each rotation (or [])."""
    position: dict[str, int] = {}
    for col, cell in enumerate(header):
        key = cell.strip().lower()
        if key in position:
            raise TrackError(path, f"column {cell.strip()!r} appears twice", line=1)
        position[key] = col
    if "timecode" not in position:
        raise TrackError(path, "no Timecode column", line=1)
    missing = [n for n in BLENDSHAPE_COLUMNS if n.lower() not in position]
    if missing:
        raise TrackError(path, f"missing blendshape column(s) {missing}", line=1)
    rot_missing = [n for n in ROTATION_COLUMNS if n.lower() not in position]
    if rot_missing and len(rot_missing) < len(ROTATION_COLUMNS):
        raise TrackError(path, f"missing rotation column(s) {rot_missing}", line=1)
    bs_cols = [position[n.lower()] for n in ARKIT_NAMES]
    rot_cols = [] if rot_missing else [position[n.lower()] for n in ROTATION_COLUMNS]
    return position["timecode"], bs_cols, rot_cols


def _to_floats(path, rows, lines, header, cols) -> np.ndarray:
    """``[N, len(cols)]`` float64 of the selected cells; TrackError (line, column) for a non-number."""
    cells = [[row[c] for c in cols] for row in rows]
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        pass
    for i, row in enumerate(cells):
        for c, cell in zip(cols, row):
            try:
                float(cell)
            except ValueError:
                problem = f"{header[c].strip()} is not a number: {cell!r}"
                raise TrackError(path, problem, line=lines[i]) from None
    raise TrackError(path, "a cell is not a number")
