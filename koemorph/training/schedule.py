"""The learning-rate schedule, the monitored-metric comparison and the device choice of ``koemorph train``."""

from __future__ import annotations

import math

import torch

from koemorph.config import OptimConfig
from koemorph.config.rules import LOWER_IS_BETTER_METRICS


def lr_at(step: int, horizon: int, optim: OptimConfig, progress: float | None = None) -> float:
    """Linear warm-up over ``optim.warmup_steps`` steps (at most a tenth of ``horizon``), then cosine
    annealing from ``optim.lr`` to ``optim.min_lr``: at ``progress`` (0..1, e.g. the share of a time
    budget spent) when given, else at ``(step - warmup) / (horizon - warmup)``."""
    warm = min(int(optim.warmup_steps), horizon // 10)
    if step < warm:
        return optim.lr * (step + 1) / warm
    if progress is None:
        progress = (step - warm) / max(1, horizon - warm)
    progress = min(1.0, max(0.0, progress))
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1.0 + math.cos(math.pi * progress))


def better(value: float | None, best: float | None, monitor: str) -> bool:
    """Whether ``value`` of metric ``monitor`` beats ``best`` (lower is better for losses and errors,
    higher otherwise: :data:`koemorph.config.rules.LOWER_IS_BETTER_METRICS`); a missing or non-finite
    value never does."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if monitor in LOWER_IS_BETTER_METRICS else value > best


def pick_device(name: str) -> torch.device:
    """``train.device``: ``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
