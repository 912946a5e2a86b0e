"""Training diagnostics: per-group gradient norms, stream balance, broken-gradient check and its
warnings, and the per-step metric and throughput meter.

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


class StepMeter:
    """Means of step metrics since the last :meth:`summary`, plus throughput.

    ``perf/windows_per_s`` counts blocks (one window of context each), ``perf/frames_per_s`` real
    target frames, ``perf/data_wait_share`` the share of step time spent waiting for the batch (the
    loader and, when on, the augmentation).
    """

    def __init__(self):
        self._reset()
        self.total_windows = self.total_frames = 0
        self.total_time = self.total_wait = 0.0
        self.windows_per_s = 0.0

    def _reset(self):
        self.sums, self.n, self.windows, self.frames, self.time, self.wait = {}, 0, 0, 0, 0.0, 0.0

    def add(self, metrics: dict, wait_s: float, step_s: float, windows: int, frames: int) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1
        self.windows, self.frames = self.windows + windows, self.frames + frames
        self.time, self.wait = self.time + step_s, self.wait + wait_s
        self.total_windows, self.total_frames = self.total_windows + windows, self.total_frames + frames
        self.total_time, self.total_wait = self.total_time + step_s, self.total_wait + wait_s
        self.windows_per_s = self.windows / max(self.time, 1e-9)

    def summary(self) -> dict:
        out = {k: v / max(1, self.n) for k, v in self.sums.items()}
        out.update(
            {
                "perf/windows_per_s": self.windows / max(self.time, 1e-9),
                "perf/frames_per_s": self.frames / max(self.time, 1e-9),
                "perf/data_wait_share": self.wait / max(self.time, 1e-9),
            }
        )
        self._reset()
        return out

    def totals(self) -> dict:
        t = max(self.total_time, 1e-9)
        return {
            "windows_per_s": round(self.total_windows / t, 2),
            "frames_per_s": round(self.total_frames / t, 1),
            "data_wait_share": round(self.total_wait / t, 4),
        }


class GradientWarnings:
    """Runs ``check_gradients`` over the first steps and warns once, clearly, about what persists.

    Exploding/NaN gradients are reported at once. "No/zero gradient" findings are only reported
    if they hold on every checked step, checking until both a dense and a sparse batch have been
    seen (or ``limit`` steps): the smoothing coefficient legitimately gets no gradient from sparse
    batches, but must get one from dense ones.
    """

    URGENT = ("explod", "non-finite")

    def __init__(self, console, limit: int = 50):
        self.console, self.limit = console, limit
        self.pending, self.kinds, self.checked, self.done, self.seen = None, set(), 0, False, set()

    def _emit(self, messages, note: str = "") -> None:
        from rich.markup import escape

        for message in sorted(messages):
            if message not in self.seen:
                self.seen.add(message)
                text = escape(f"{message}{note}")  # parameter names and numbers, never markup
                self.console.print(f"[yellow]gradient warning:[/] {text}", highlight=False)

    def __call__(self, model, dense: bool) -> None:
        if self.done:
            return
        found = set(check_gradients(model))
        urgent = {m for m in found if any(k in m.lower() for k in self.URGENT)}
        self._emit(urgent)
        self.pending = found - urgent if self.pending is None else self.pending & (found - urgent)
        self.kinds.add(bool(dense))
        self.checked += 1
        if (len(self.kinds) == 2 and self.checked >= 3) or self.checked >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.done:
            self.done = True
            kinds = {True: "dense", False: "sparse"}
            note = (
                f" (over {self.checked} {kinds[next(iter(self.kinds))]} batches only)"
                if len(self.kinds) == 1
                else ""
            )
            self._emit(self.pending or (), note)
