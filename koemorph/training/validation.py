"""Validation during training: whole-file inference on the val split, per-file metrics, a plot.

Every val file is predicted whole with :func:`koemorph.model.infer.predict_file` (the same path
``render`` uses) and compared with its targets on the frame grid:

* ``mae``, ``rmse`` over all frames and the 52 channels;
* ``mouth_pearson``: mean Pearson r over the mouth channels whose target is not flat (std > 1e-3);
* ``pearson``: mean Pearson r over all such active channels.

A prediction that is constant on an active channel counts as r = 0. Aggregates weight files by
their frame count (``val/mae``, ``val/rmse``, ``val/loss``) or average the per-file means
(``val/mouth_pearson``, ``val/pearson``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from koemorph import blendshapes as bs
from koemorph.evaluation.metrics import channel_pearson


def file_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    """Metrics of one file's prediction ``[T, 52]`` against its targets ``[T, 52]``."""
    err = pred.astype(np.float64) - true
    r = channel_pearson(pred, true)  # NaN on flat targets, 0 on a flat prediction
    mouth = r[bs.MOUTH_INDICES]
    return {
        "frames": int(len(true)),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "mouth_pearson": float(np.nanmean(mouth)) if np.isfinite(mouth).any() else float("nan"),
        "pearson": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
    }


def validate(model, cache, ids: list[str], loss_cfg, device, scale=None) -> tuple[dict, list[dict], dict]:
    """Predict every file in ``ids``; returns ``(aggregates, per-file rows, predictions by id)``.

    ``val/loss`` is the configured training loss on whole files (``compute_losses`` with
    ``consecutive=True`` and the training's per-channel ``scale``; whole-file inference returns no
    raw stream, so ``raw`` = the output).
    """
    import torch

    from koemorph.model.infer import eval_mode, predict_file
    from koemorph.training.losses import compute_losses

    rows, preds, losses = [], {}, []
    with eval_mode(model):  # eval mode and no_grad; the previous mode restored after
        for fid in ids:
            data = cache.load(fid)
            pred = predict_file(
                model,
                data["mel"],
                data["egemaps"],
                cache.fps,
                chunk=256,
                pad_mel=cache.frame_pad,
                pad_egemaps=0.0,
            )
            pred = np.asarray(pred, np.float32)
            true = data["targets"]
            out = torch.from_numpy(pred)[None]
            total, _ = compute_losses(
                {"blendshapes": out, "raw": out},
                torch.from_numpy(true)[None],
                torch.ones(1, len(true), dtype=torch.bool),
                loss_cfg,
                consecutive=True,
                scale=None if scale is None else scale.cpu(),
            )
            losses.append(float(total))
            rows.append({"id": fid, **file_metrics(pred, true), "loss": losses[-1]})
            preds[fid] = pred
    frames = np.array([r["frames"] for r in rows], float)
    w = frames / max(frames.sum(), 1.0)

    def mean(key: str) -> float:
        vals = np.array([r[key] for r in rows], float)
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

    agg = {
        "val/mae": float((w * [r["mae"] for r in rows]).sum()),
        "val/rmse": float(np.sqrt((w * np.square([r["rmse"] for r in rows])).sum())),
        "val/loss": float((w * losses).sum()),
        "val/mouth_pearson": mean("mouth_pearson"),
        "val/pearson": mean("pearson"),
    }
    return agg, rows, preds


def plot_curves(path: str | Path, preds: dict, cache, ids: list[str], title: str = "") -> Path:
    """PNG of predicted vs true curves: one row per file in ``ids``, one column per
    ``blendshapes.KEY_NAMES``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from koemorph.io.atomic import atomic_path

    names = bs.KEY_NAMES
    fig, axes = plt.subplots(
        max(1, len(ids)),
        len(names),
        figsize=(3.2 * len(names), 2.0 * max(1, len(ids))),
        squeeze=False,
        sharey=True,
    )
    for row, fid in enumerate(ids):
        true, pred = cache.load(fid)["targets"], preds[fid]
        t = np.arange(len(true)) / cache.fps
        for col, name in enumerate(names):
            ax, c = axes[row, col], bs.INDEX[name]
            ax.plot(t, true[:, c], color="0.3", lw=1.0, label="true")
            ax.plot(t, pred[:, c], color="tab:orange", lw=1.0, label="predicted")
            ax.set_ylim(-0.05, 1.05)
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(fid[-24:], fontsize=7)
            if row == len(ids) - 1:
                ax.set_xlabel("s", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
