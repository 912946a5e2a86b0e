"""The BEAT-style JSON track format: ``{"names": [...], "frames": [{"time": s, "weights": [...]}]}``.

Names map weights to the 52 ARKit channels in any order; errors name the file and the frame index.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from koemorph.blendshapes import ALPHABETICAL_NAMES, ARKIT_NAMES, INDEX, NUM_BLENDSHAPES, canonical_name
from koemorph.errors import TrackError
from koemorph.io.atomic import atomic_write_text
from koemorph.io.tracks.track import Track, _is_number, check_weights, clean_floats, make_track


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
