"""The :class:`Track` record, its validation, and the helpers every track format shares.

A track is a blendshape sequence read from a file: ``times`` ``[N]`` float64 seconds relative to
the audio start, ``values`` ``[N, 52]`` float32 in Apple order (``blendshapes.ARKIT_NAMES``).
Readers raise :class:`koemorph.errors.TrackError` naming the file and, where the format has
lines, the 1-based line number. Writers are atomic and never emit ``-0.0``, ``NaN`` or ``Infinity``.

The formats live in their own modules (:mod:`~koemorph.io.tracks.jsonl`,
:mod:`~koemorph.io.tracks.livelink_csv`, :mod:`~koemorph.io.tracks.beat_json`) and are registered once in
:mod:`koemorph.io.tracks.formats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from koemorph.blendshapes import ARKIT_NAMES, NUM_BLENDSHAPES
from koemorph.errors import TrackError
from koemorph.grid import SUPPORTED_FPS, check_fps

VALUE_TOLERANCE = 1e-3  # weights in [-tol, 1 + tol] are clipped to [0, 1]; beyond that is an error
FPS_SNAP_TOLERANCE = 0.05  # relative: an estimate within 5 % of 30 or 60 snaps to it
DECIMALS = 6  # digits written for times and weights


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
