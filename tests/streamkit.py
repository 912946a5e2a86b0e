"""Helpers for the streaming tests: a small checkpoint and a speech-like test signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from koemorph.config import load_config
from koemorph.model import build_model
from tests.checkpointkit import SMALL, save_untrained, widen


def babble(seconds: float, sr: int = 16_000, seed: int = 0) -> np.ndarray:
    """Syllable-like test audio: a gliding harmonic tone gated at ~4 Hz plus noise, ``[n]`` float32."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(h * phase) / h for h in range(1, 6))
    gate = np.clip(np.sin(2 * np.pi * 3.7 * t) * 1.5, 0, 1) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t) ** 2)
    return (0.2 * voice * gate + 0.01 * rng.standard_normal(n)).astype(np.float32)


def make_checkpoint(path: Path, egemaps: bool, seed: int = 0, level: dict | None = None) -> Path:
    """A small untrained dual-stream checkpoint, outputs widened so that they move with the audio;
    ``level``: its training levels (``stats["level"]``), none by default."""
    from koemorph.features.mel import log_mel

    cfg = load_config(None, [*SMALL, f"features.egemaps={str(egemaps).lower()}"])
    audio = babble(6.0, seed=seed + 1)
    mel = log_mel(audio, cfg.features)
    stats = {"mel": {"mean": mel.mean(0).tolist(), "std": (mel.std(0) + 1e-3).tolist()}}
    if egemaps:
        from koemorph.features.egemaps import egemaps as egemaps_of

        _, native, _ = egemaps_of(audio, cfg.features)
        stats["egemaps"] = {"mean": native.mean(0).tolist(), "std": (native.std(0) + 1e-3).tolist()}
    if level is not None:
        stats["level"] = level
    torch.manual_seed(seed)
    return save_untrained(path, widen(build_model(cfg.model, cfg.features)), cfg, stats)
