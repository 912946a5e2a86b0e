"""Incremental features for streaming: the same rows as the whole-file extractors, as audio arrives.

:class:`MelStream` computes log-mel row ``k`` (the ``n_fft`` samples centred on
``round(k * 16000 / fps)``, see :mod:`koemorph.features.mel`) as soon as the samples up to
``centre + n_fft // 2`` have arrived, with the same arithmetic as :func:`~koemorph.features.mel.log_mel`
(:func:`~koemorph.features.mel.mel_power_at`, :func:`~koemorph.features.mel.power_to_db`).
:meth:`MelStream.finish` computes the last rows, zero padded past the end as ``log_mel`` pads them.
It holds only the audio the next rows need: at most ``n_fft`` samples plus one pushed chunk.

All audio is ``[N]`` float32 mono at 16 kHz; rows are on the grid of ``cfg.fps`` (row ``k`` at
``k / fps`` s from the stream start).
"""

from __future__ import annotations

import numpy as np

from koemorph import grid
from koemorph.config import FeaturesConfig
from koemorph.features.mel import mel_power_at, power_to_db


def frame_center(k: int, fps: int) -> int:
    """Sample index of frame ``k``'s centre, as :func:`koemorph.grid.frame_centers` computes it."""
    return (2 * int(k) * grid.SAMPLE_RATE + fps) // (2 * fps)


class MelStream:
    """Log-mel rows ``[k, n_mels]`` dB of a stream, equal to ``log_mel`` of the whole stream."""

    def __init__(self, cfg: FeaturesConfig):
        self.cfg = cfg
        self.fps = grid.check_fps(cfg.fps)
        self.half = int(cfg.n_fft) // 2
        self.reset()

    def reset(self) -> None:
        """Start a new stream: sample 0 and frame 0 are the next ones pushed and returned."""
        self.samples_seen = 0  # samples pushed since the stream start
        self.next_frame = 0  # index of the next row to compute
        self._start = 0  # stream index of self._buf[0]
        self._buf = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append ``[n]`` float32 samples; returns the rows that became complete: ``[k, n_mels]``."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x.copy()
        self.samples_seen += x.size
        stop = self.next_frame
        while frame_center(stop, self.fps) + self.half <= self.samples_seen:
            stop += 1
        return self._rows(stop)

    def finish(self) -> np.ndarray:
        """The remaining rows up to ``num_frames_for_samples(samples_seen)``, zero padded past the end."""
        return self._rows(max(self.next_frame, grid.num_frames_for_samples(self.samples_seen, self.fps)))

    def _rows(self, stop: int) -> np.ndarray:
        k0 = self.next_frame
        if stop <= k0:
            return np.zeros((0, int(self.cfg.n_mels)), dtype=np.float32)
        k = np.arange(k0, stop, dtype=np.int64)
        centers = (2 * k * grid.SAMPLE_RATE + self.fps) // (2 * self.fps) - self._start
        # the buffer starts at or before the first centre - half, or at stream sample 0 (zeros before)
        power = mel_power_at(self._buf, centers, self.cfg)
        self.next_frame = stop
        keep = min(
            max(0, frame_center(stop, self.fps) - self.half), self.samples_seen
        )  # next row starts here
        if keep > self._start:
            self._buf = self._buf[keep - self._start :].copy()
            self._start = keep
        return power_to_db(power, float(self.cfg.db_floor))
