"""Gradient diagnostics: per-group norms, stream balance, broken-gradient check.

Call after ``loss.backward()`` and before ``optimizer.step()`` / gradient clipping.

Groups come from the first component of each parameter name: ``mel_stream``, ``emotion_stream``,
``queries``, ``decoder``, ``stream_logits`` (reported as ``stream_weights``), ``smoothing``, plus
the fusion LayerNorm (``fuse_norm``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

RENAME = {"stream_logits": "stream_weights"}
EXPLODING = 1e3


def grad_norms(model: nn.Module) -> dict[str, float]:
    """``{"grad/<group>": L2 norm, ..., "grad_norm": total, "stream_balance": mel/emotion}``.

    Parameters without a gradient count as 0. ``stream_balance`` (mel-stream norm / emotion-stream
    norm; healthy training keeps it within about 0.5-2) is present only when the model has an
    emotion stream whose gradient is non-zero.
    """
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        group = RENAME.get(name.split(".")[0], name.split(".")[0])
        g = 0.0 if p.grad is None else float(p.grad.detach().float().square().sum())
        sq[group] = sq.get(group, 0.0) + g
    out = {f"grad/{k}": math.sqrt(v) for k, v in sorted(sq.items())}
    out["grad_norm"] = math.sqrt(sum(sq.values()))
    emo = out.get("grad/emotion_stream", 0.0)
    if "grad/mel_stream" in out and emo > 0:
        out["stream_balance"] = out["grad/mel_stream"] / emo
    return out


def check_gradients(model: nn.Module, limit: float = EXPLODING) -> list[str]:
    """One line per broken trainable parameter: no gradient, zero gradient, norm > ``limit`` or non-finite."""
    problems = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            problems.append(f"{name}: no gradient")
            continue
        norm = float(torch.linalg.vector_norm(p.grad.detach().float()))
        if not math.isfinite(norm):
            problems.append(f"{name}: non-finite gradient")
        elif norm == 0.0:
            problems.append(f"{name}: zero gradient")
        elif norm > limit:
            problems.append(f"{name}: exploding gradient (norm {norm:.3g})")
    return problems
