"""Helpers for the streaming tests: a small checkpoint and a speech-like test signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from koemorph.config import load_config, to_dict
from koemorph.model import build_model
from koemorph.training.checkpoint import save_checkpoint

SMALL = [
    "model.d_model=32",
    "model.num_heads=4",
    "model.mel_bands=4",
    "model.decoder_hidden=32",
    "model.context_s=1.0",
    "model.emotion_context_s=2.0",
]


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


def make_checkpoint(path: Path, egemaps: bool, seed: int = 0) -> Path:
    """A small untrained dual-stream checkpoint, outputs widened so that they move with the audio."""
    from koemorph.features.mel import log_mel

    cfg = load_config(None, [*SMALL, f"features.egemaps={str(egemaps).lower()}"])
    audio = babble(6.0, seed=seed + 1)
    mel = log_mel(audio, cfg.features)
    stats = {"mel": {"mean": mel.mean(0).tolist(), "std": (mel.std(0) + 1e-3).tolist()}}
    if egemaps:
        from koemorph.features.egemaps import egemaps as egemaps_of

        _, native, _ = egemaps_of(audio, cfg.features)
        stats["egemaps"] = {"mean": native.mean(0).tolist(), "std": (native.std(0) + 1e-3).tolist()}
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.features)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(3.0)
            if name.startswith("decoder") and name.endswith("bias") and p.numel() in (1, 52):
                p.zero_()
    return save_checkpoint(
        path,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        schedule={},
        epoch=0,
        batch=0,
        step=0,
        best=None,
        bad_validations=0,
        config=to_dict(cfg),
        stats=stats,
        fps=30,
        run_id=None,
    )
