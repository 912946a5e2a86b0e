"""One optimiser step, the per-step metric meter, gradient warnings and the per-epoch CSV.

Kept apart from :mod:`koemorph.training.loop` so the loop there reads top to bottom.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from koemorph import blendshapes as bs

CSV_FIELDS = ("epoch", "step", "train_loss", "val_loss", "val_mae", "val_mouth_pearson", "lr", "seconds")


def train_step(model, batch: dict, optimizer, cfg, device, check=None, scale=None) -> dict:
    """Forward, loss, backward, clip, update on one collated batch; returns slash-named scalars.

    ``batch``: see :func:`koemorph.training.batches.collate`. Metrics: ``train/loss`` and the unweighted loss
    terms (``train/mse`` ...), ``grad_norm`` and ``grad/<group>`` (before clipping), and, when the
    model reports them, ``stream/mel_weight_mouth|expression`` and ``smoothing/alpha``.
    ``check`` (optional) is called with the model after backward (gradient warnings); ``scale``
    (optional ``[52]``) is the per-channel error scale of :func:`koemorph.training.losses.channel_scale`.
    """
    from koemorph.training.diagnostics import grad_norms
    from koemorph.training.losses import compute_losses

    mel = batch["mel"].to(device, non_blocking=True)
    egemaps = batch["egemaps"].to(device, non_blocking=True) if batch["egemaps"] is not None else None
    positions = batch["positions"].to(device, non_blocking=True)
    targets = batch["targets"].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    out = model(mel, egemaps, positions, smooth=batch["smooth"], state=None)
    total, terms = compute_losses(out, targets, mask, cfg.loss, consecutive=batch["smooth"], scale=scale)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    metrics = {
        "train/loss": float(total.detach()),
        **{f"train/{k}": float(torch.as_tensor(v).detach()) for k, v in terms.items() if k != "total"},
    }
    metrics.update({k: float(v) for k, v in grad_norms(model).items()})
    if check is not None:
        check(model, dense=batch["smooth"])
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    optimizer.step()
    weights = out.get("stream_weights")
    if weights is not None:  # [52, 2]: column 0 = mel stream, 1 = emotion stream
        w = weights.detach().float().cpu()
        metrics["stream/mel_weight_mouth"] = float(w[bs.MOUTH_INDICES, 0].mean())
        metrics["stream/mel_weight_expression"] = float(w[bs.EXPRESSION_INDICES, 0].mean())
    if out.get("alpha") is not None:
        metrics["smoothing/alpha"] = float(torch.as_tensor(out["alpha"]).detach().float().mean())
    return metrics


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
        for message in sorted(messages):
            if message not in self.seen:
                self.seen.add(message)
                self.console.print(f"[yellow]gradient warning:[/] {message}{note}", highlight=False)

    def __call__(self, model, dense: bool) -> None:
        if self.done:
            return
        from koemorph.training.diagnostics import check_gradients

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


def write_epoch_rows(path: str | Path, rows: list[dict]) -> None:
    """Write the per-epoch rows as ``metrics.csv`` (columns :data:`CSV_FIELDS`; empty = not measured)."""
    from koemorph.io.atomic import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})
    atomic_write_text(path, buf.getvalue())


def read_epoch_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]
