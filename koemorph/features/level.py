"""A recording's speech level, and the gain that brings a recording to the levels a model trained on.

The model reads the log-mel's absolute level (dB re full scale), so a recording far quieter (or
louder) than its training files is outside what it learned. Training records the range of its train
files' speech levels in the checkpoint's stats (``stats["level"]``, :func:`level_range`); render
scales an input whose level lies outside that range to the training files' median level
(:func:`matching_gain_db`), and leaves the others as they are.

A file's speech level is the :data:`LEVEL_QUANTILE` quantile of its frames' energies: the energy of
grid frame ``k`` is the summed mel power of the frame's log-mel row, in dB
(``10 * log10(sum_b 10 ** (mel[k, b] / 10))``). Loud speech frames set it, whatever share of the file
is silence; one click does not. A file whose loud frames stand less than :data:`MIN_SPEECH_RANGE_DB`
above its quiet ones (the :data:`QUIET_QUANTILE` quantile) is steady noise or silence, not speech: it
has no speech level, and render leaves it as it is rather than raise its noise to the level of speech.

A stream cannot be scaled before it is heard. :class:`RecentLevel` measures the speech level of its
last :data:`RECENT_S` seconds (of the input as it arrives, before any scaling); once it has heard
:data:`MIN_RECENT_S` seconds, ``koemorph stream`` scales what follows by the gain render would give a
file at that level, and changes that gain only when the scaled input leaves the training levels
(:meth:`RecentLevel.next_gain_db`). Its progress line says how far the input lies from them.
"""

from __future__ import annotations

import collections

import numpy as np

LEVEL_QUANTILE = 0.95  # of a file's frame energies: its loud speech frames
QUIET_QUANTILE = 0.1  # of a file's frame energies: its pauses and quietest consonants
MIN_SPEECH_RANGE_DB = 10.0  # loud minus quiet frames below this: steady noise or silence
RANGE_QUANTILES = (0.01, 0.5, 0.99)  # of the train files' levels: low, median, high (one outlier aside)
MAX_GAIN_DB = 40.0  # the largest correction; quieter than this is mostly noise
RECENT_S = 10.0  # a stream's level is that of its last seconds
MIN_RECENT_S = 1.0  # a stream is scaled only once it has been heard this long


def hash_constants() -> dict:
    """What fixes :func:`matching_gain_db` besides the audio and the model: for render's records."""
    return {
        "quantiles": [LEVEL_QUANTILE, QUIET_QUANTILE],
        "min_speech_range_db": MIN_SPEECH_RANGE_DB,
        "range": list(RANGE_QUANTILES),
        "max_gain_db": MAX_GAIN_DB,
    }


def gain_factor(gain_db: float) -> np.float32:
    """The factor on float samples of a gain in dB."""
    return np.float32(10.0 ** (gain_db / 20.0))


def frame_energy_db(mel: np.ndarray) -> np.ndarray:
    """Energy of each frame of a log-mel ``[T, n_mels]`` (dB re full scale): ``[T]`` float64 dB."""
    mel = np.asarray(mel, np.float64)
    assert mel.ndim == 2, mel.shape
    top = mel.max(axis=1, keepdims=True)
    return top[:, 0] + 10.0 * np.log10(np.sum(10.0 ** ((mel - top) / 10.0), axis=1))


def speech_level_db(mel: np.ndarray) -> float | None:
    """A file's speech level from its log-mel ``[T, n_mels]``: dB, or None for a file without frames
    or without speech (see the module docstring)."""
    return _level_of(frame_energy_db(mel)) if len(mel) else None


def _level_of(energies: np.ndarray) -> float | None:
    """Speech level (dB) of frame energies ``[T]`` (``T > 0``), None without speech."""
    loud, quiet = np.quantile(energies, [LEVEL_QUANTILE, QUIET_QUANTILE])
    return float(loud) if loud - quiet >= MIN_SPEECH_RANGE_DB else None


def level_range(levels: list) -> dict | None:
    """``{"low", "median", "high", "files"}`` (dB) of the train files' speech levels (None entries left
    out): the :data:`RANGE_QUANTILES`. None without any level."""
    values = np.asarray([v for v in levels if v is not None], np.float64)
    if values.size == 0:
        return None
    low, median, high = np.quantile(values, RANGE_QUANTILES)
    return {
        "low": round(float(low), 2),
        "median": round(float(median), 2),
        "high": round(float(high), 2),
        "files": int(values.size),
    }


def matching_gain_db(level: float | None, trained: dict | None) -> float:
    """Gain in dB for a file of speech level ``level`` (:func:`speech_level_db`): 0 when it lies within
    ``trained`` (:func:`level_range`: low to high) or either is None, else the step to the trained
    median, at most :data:`MAX_GAIN_DB` either way."""
    if level is None or trained is None:
        return 0.0
    if trained["low"] <= level <= trained["high"]:
        return 0.0
    return float(np.clip(trained["median"] - level, -MAX_GAIN_DB, MAX_GAIN_DB))


class RecentLevel:
    """The speech level of a stream's last :data:`RECENT_S` seconds at ``fps`` (one energy per frame
    kept: bounded whatever the stream's length), against the model's training levels ``trained``
    (:func:`level_range`, None: unknown)."""

    def __init__(self, fps: int, trained: dict | None):
        self.trained = trained
        self.min_frames = round(MIN_RECENT_S * fps)
        self.energies: collections.deque = collections.deque(maxlen=round(RECENT_S * fps))

    def push(self, mel: np.ndarray, gain_db: float = 0.0) -> None:
        """Add log-mel rows ``[n, n_mels]`` (dB, not normalised) of input scaled by ``gain_db``: the
        energies kept are the input's as it arrived (``gain_db`` below the rows')."""
        if len(mel):
            self.energies.extend((frame_energy_db(mel) - gain_db).tolist())

    def level_db(self) -> float | None:
        """Speech level (dB) of the last :data:`RECENT_S` seconds; None without speech or levels."""
        if self.trained is None or not self.energies:
            return None
        return _level_of(np.fromiter(self.energies, np.float64))

    def next_gain_db(self, current: float) -> float:
        """The gain (dB) for the input from now on, given the one applied so far: ``current`` while
        fewer than :data:`MIN_RECENT_S` seconds were heard, without a speech level, or while the
        scaled level (:meth:`level_db` + ``current``) lies within the training levels; otherwise
        render's gain for a file at the recent level (:func:`matching_gain_db`, 0 when that level
        lies within them), rounded to 0.01 dB. So the gain never flips at a range edge: it moves only
        when the scaled input has left the training levels, and then to what render would apply."""
        if len(self.energies) < self.min_frames:
            return current
        level = self.level_db()
        if level is None or matching_gain_db(level + current, self.trained) == 0.0:
            return current
        return round(matching_gain_db(level, self.trained), 2)

    def advice(self, gain_db: float = 0.0) -> str | None:
        """``"input level -18 dB from training, scaled +18 dB: raise the input gain"`` (or lower it)
        when the recent speech level lies outside the training levels (render would scale such a
        file, :func:`matching_gain_db`; ``gain_db`` is the scaling a stream applies now);
        ``"input level +2 dB from training"`` inside them; None when :meth:`level_db` is."""
        level = self.level_db()
        if level is None:
            return None
        gain = matching_gain_db(level, self.trained)
        text = f"input level {level - self.trained['median']:+.0f} dB from training"
        text += f", scaled {gain_db:+.0f} dB" if gain_db else ""
        return text + (": raise the input gain" if gain > 0 else ": lower the input gain" if gain < 0 else "")
