"""The time grid: the one place that knows sample rate, frame rate and frame counts.

Every array koemorph produces per file (log-mel, eGeMAPS, targets, renders) has one row per
grid frame. Frame ``k`` of a file sits at exactly ``k / fps`` seconds, i.e. at the fractional
sample position ``k * SAMPLE_RATE / fps``; analysis frames are centred on the nearest sample,
``round(k * SAMPLE_RATE / fps)``, so no frame is ever more than half a sample off its time and
nothing drifts over long files (the original's integer hop of 533 drifts 37.5 ms per minute).

All arithmetic here is integer arithmetic on sample counts, so a 10-minute file has exactly
18000 frames at 30 fps and 36000 at 60 fps.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000  # Hz, every waveform is resampled to this
SUPPORTED_FPS = (30, 60)
DEFAULT_FPS = 30


def check_fps(fps: int) -> int:
    """Return ``fps`` as an int, or raise ValueError if it is not a supported frame rate."""
    if int(fps) != fps or int(fps) not in SUPPORTED_FPS:
        raise ValueError(f"unsupported frame rate {fps!r}: choose one of {SUPPORTED_FPS}")
    return int(fps)


def nominal_hop(fps: int = DEFAULT_FPS) -> int:
    """Nominal hop in samples (533 at 30 fps, 267 at 60 fps).

    Informational only: frames are placed at exact positions (see :func:`frame_centers`),
    so consecutive hops are 533 or 534 samples at 30 fps.
    """
    return round(SAMPLE_RATE / check_fps(fps))


def num_frames_for_samples(n_samples: int, fps: int = DEFAULT_FPS) -> int:
    """Number of grid frames for ``n_samples`` at SAMPLE_RATE: frames k with k/fps < duration.

    ``ceil(n_samples * fps / SAMPLE_RATE)``, computed exactly with integers.
    """
    fps = check_fps(fps)
    if n_samples < 0:
        raise ValueError(f"negative sample count {n_samples}")
    return -(-int(n_samples) * fps // SAMPLE_RATE)


def num_samples(duration_s: float) -> int:
    """Duration in seconds rounded to a whole number of samples at SAMPLE_RATE."""
    return int(round(float(duration_s) * SAMPLE_RATE))


def num_frames(duration_s: float, fps: int = DEFAULT_FPS) -> int:
    """Number of grid frames for a file of ``duration_s`` seconds (600 s at 30 fps -> 18000)."""
    return num_frames_for_samples(num_samples(duration_s), fps)


def frame_times(n_frames: int, fps: int = DEFAULT_FPS) -> np.ndarray:
    """Times in seconds of frames ``0..n_frames-1``: ``[n_frames]`` float64, exactly k / fps."""
    fps = check_fps(fps)
    return np.arange(int(n_frames), dtype=np.float64) / fps


def frame_centers(n_frames: int, fps: int = DEFAULT_FPS) -> np.ndarray:
    """Sample index of each frame's centre: ``[n_frames]`` int64, ``round(k * SAMPLE_RATE / fps)``.

    Half-way cases round up; the error to the exact time is at most half a sample.
    """
    fps = check_fps(fps)
    k = np.arange(int(n_frames), dtype=np.int64)
    return (2 * k * SAMPLE_RATE + fps) // (2 * fps)


def frame_of_time(t_s: float | np.ndarray, fps: int = DEFAULT_FPS) -> np.ndarray:
    """Index of the grid frame nearest to time(s) ``t_s`` (seconds)."""
    return np.rint(np.asarray(t_s, dtype=np.float64) * check_fps(fps)).astype(np.int64)
