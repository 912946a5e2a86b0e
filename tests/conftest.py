"""Shared fixtures: tests make their own audio."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import soundfile as sf


def pytest_configure(config):
    """Ctrl-C tests send real SIGINTs to the processes they start, as a terminal would. A shell
    starts background jobs (``make test &``, ``nohup``) with SIGINT ignored, and an ignored signal
    stays ignored through exec: those processes would never see the tests' Ctrl-C. A handled signal
    is reset to the default at exec, so with this every process the tests start gets Python's usual
    KeyboardInterrupt."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def tone(
    seconds: float, sr: int = 16_000, freq: float = 220.0, amp: float = 0.3, seed: int = 0
) -> np.ndarray:
    """A voiced-ish test signal: a sine with a little noise, ``[round(seconds*sr)]`` float32."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture
def make_wav(tmp_path):
    """``make_wav(name, seconds, sr=16000, channels=1, subtype="PCM_16") -> Path``."""

    def _make(name: str, seconds: float = 1.0, sr: int = 16_000, channels: int = 1, subtype: str = "PCM_16"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        mono = tone(seconds, sr)
        data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
        sf.write(path, data, sr, subtype=subtype)
        return path

    return _make


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Every test runs in its own empty folder: commands there find no ``params.yaml``, no
    ``cache/`` and no ``mlflow.db`` of the developer's checkout (paths.* defaults are relative)."""
    monkeypatch.chdir(tmp_path)
