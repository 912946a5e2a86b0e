"""Checkpoints with random weights for the export and preview tests: a small real model, its feature
stats taken from given audio, saved with :func:`koemorph.training.checkpoint.save_checkpoint`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from koemorph.config import load_config
from koemorph.features.mel import log_mel
from koemorph.model import build_model
from koemorph.training.checkpoint import save_untrained

SMALL = [
    "features.egemaps=true",  # the mel + eGeMAPS model (tests of the phone input add features.phones=true)
    "features.phones=false",
    "model.d_model=32",
    "model.num_heads=4",
    "model.mel_bands=4",
    "model.decoder_hidden=32",
    "model.context_s=1.0",
    "model.emotion_context_s=2.0",
]


def _stats(samples: np.ndarray, cfg) -> dict:
    mel = log_mel(samples, cfg.features)
    stats = {"mel": {"mean": mel.mean(0).tolist(), "std": (mel.std(0) + 1.0).tolist()}}
    if cfg.features.egemaps:
        from koemorph.features.egemaps import egemaps

        ege = egemaps(samples, cfg.features)[1]
        stats["egemaps"] = {"mean": ege.mean(0).tolist(), "std": (ege.std(0) + 1e-3).tolist()}
    return stats


def widen(model: torch.nn.Module, hidden_bias: bool = False) -> torch.nn.Module:
    """Scale every weight of an untrained ``model`` by 3 and zero the decoder's output bias (and, with
    ``hidden_bias``, its hidden-layer bias), so that its nearly flat sigmoid outputs move with the audio."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(3.0)
            if name.startswith("decoder") and name.endswith("bias") and (hidden_bias or p.numel() in (1, 52)):
                p.zero_()
    return model


def random_checkpoint(path: Path, overrides: list[str], samples: np.ndarray) -> Path:
    """A checkpoint with random weights, widened so that its outputs move (an untrained decoder is flat)."""
    cfg = load_config(None, SMALL + overrides)
    torch.manual_seed(0)
    model = widen(build_model(cfg.model, cfg.features), hidden_bias=True)
    return save_untrained(path, model, cfg, _stats(samples, cfg))
