"""A recording's speech level and the gain that matches it to a model's training levels."""

from __future__ import annotations

import numpy as np
import pytest

from koemorph.config import FeaturesConfig
from koemorph.features.level import (
    MAX_GAIN_DB,
    MIN_RECENT_S,
    RecentLevel,
    frame_energy_db,
    level_range,
    matching_gain_db,
    speech_level_db,
)
from koemorph.features.mel import log_mel


def test_frame_energy_sums_the_bands_power():
    mel = np.array([[-20.0] * 80, [-100.0] * 79 + [0.0]])
    assert frame_energy_db(mel) == pytest.approx([-20 + 10 * np.log10(80), 10 * np.log10(1 + 79e-10)])


def test_speech_level_follows_the_gain_and_ignores_silence():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    speechy = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    cfg = FeaturesConfig()
    level = speech_level_db(log_mel(speechy, cfg))
    assert speech_level_db(log_mel(speechy * 0.1, cfg)) == pytest.approx(level - 20, abs=0.01)
    padded = np.r_[np.zeros(16000 * 4, np.float32), speechy]  # two thirds silence
    assert speech_level_db(log_mel(padded, cfg)) == pytest.approx(level, abs=1.0)
    noise = rng.normal(0, 1e-4, speechy.size).astype(np.float32)  # steady: not raised to speech
    assert speech_level_db(log_mel(noise, cfg)) is None
    assert speech_level_db(log_mel(np.zeros(16000, np.float32), cfg)) is None
    assert speech_level_db(np.zeros((0, 80))) is None


def test_level_range_and_matching_gain():
    trained = level_range([10.0, 20.0, 30.0, None] + [20.0] * 17)
    assert trained["files"] == 20 and trained["median"] == 20.0
    assert 10.0 < trained["low"] < 20.0 < trained["high"] < 30.0
    assert level_range([None]) is None
    assert matching_gain_db(trained["low"], trained) == 0.0 == matching_gain_db(trained["high"], trained)
    assert matching_gain_db(trained["low"] - 0.1, trained) == pytest.approx(20.0 - trained["low"] + 0.1)
    assert matching_gain_db(35.0, trained) == pytest.approx(-15.0)
    assert matching_gain_db(-80.0, trained) == MAX_GAIN_DB
    assert matching_gain_db(None, trained) == 0.0 == matching_gain_db(-80.0, None)  # older checkpoints


def test_a_streams_gain_waits_to_be_heard_and_moves_only_when_the_scaled_input_leaves_the_range():
    trained = {"low": 14.0, "median": 20.0, "high": 28.0, "files": 9}

    def rows(level_db: float, seconds: float) -> np.ndarray:
        """Speech-like frame energies: the loud frames at ``level_db`` (one band), the rest 30 dB under."""
        n = round(seconds * 30)
        mel = np.full((n, 80), -200.0)
        mel[:, 0] = np.where(np.arange(n) % 4 == 0, level_db, level_db - 30.0)
        return mel

    recent = RecentLevel(30, trained)
    recent.push(rows(12.0, MIN_RECENT_S - 0.1))  # 2 dB under the low end, not heard long enough yet
    assert recent.next_gain_db(0.0) == 0.0
    recent.push(rows(12.0, 0.2))
    gain = recent.next_gain_db(0.0)
    assert gain == pytest.approx(8.0)  # to the median
    recent.push(rows(13.0 + gain, 5.0), gain)  # the speaker a little louder: 21 dB once scaled, in range
    assert recent.level_db() == pytest.approx(13.0) and recent.next_gain_db(gain) == gain  # no flip
    recent.push(rows(22.0 + gain, 10.0), gain)  # the user raised the input gain: 30 dB once scaled
    assert recent.level_db() == pytest.approx(22.0) and recent.next_gain_db(gain) == 0.0  # in range as it is
    recent.push(rows(45.0, 10.0))  # far too loud now
    assert recent.next_gain_db(0.0) == pytest.approx(-25.0)
    unknown = RecentLevel(30, None)  # a checkpoint without training levels
    unknown.push(rows(-20.0, 5.0))
    assert unknown.next_gain_db(0.0) == 0.0
