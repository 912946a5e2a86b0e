"""Outputs of ``koemorph evaluate``: metrics.json, per-file and per-channel CSVs, plots, the console
table and MLflow logging. Reads an :class:`koemorph.evaluation.evaluate.Evaluation`; computes no new metrics
beyond per-channel micro values (pooled frames) for the channel table.

Files written in ``OUT``:

- ``metrics.json``: ``{"model": {...}, "ridge": {...}, "mean_pose": {...}, "files", "failed_files",
  "frames", "trimmed_frames", "skipped_flat_channels", ...}``, numbers only (a DVC metrics file);
  per method plain keys are macro means over files, ``micro/*`` keys pooled over frames / counts;
- ``evaluation.json``: folders, settings, notes (e.g. baselines skipped), trimmed files (which file
  was longer than the frames scored, by how much), failures, definitions;
- ``per_file.csv``: one row per file (failed files too, with the problem);
- ``per_channel.csv``: per channel, pooled-frame Pearson r / CCC / MAE for each method;
- ``per_channel_r.png``, ``curves_best.png``, ``curves_worst.png`` (best / worst file by model mouth r);
- ``preview_best.html``, ``preview_worst.html``: those two files as faces (truth, model) with their
  audio (:mod:`koemorph.preview`), when ``context`` names the ``truth_dir``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from koemorph import blendshapes as bs
from koemorph.evaluation.evaluate import Evaluation
from koemorph.evaluation.metrics import EvaluateConfig, channel_ccc, channel_mae, channel_pearson

TABLE_ROWS = (
    ("mouth Pearson r", "mouth/pearson"),
    ("closure Pearson r", "closure/pearson"),
    ("mouth MAE", "mouth/mae"),
    ("lip max error", "lip_max_error"),
    ("sync lag (ms)", "sync_lag_ms"),
    ("closure recall", "closure/recall"),
    ("false closures (open vowels)", "closure/false_closure_rate"),
)
LABELS = {"model": "model", "ridge": "ridge", "mean_pose": "mean pose"}


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def per_channel_table(ev: Evaluation, cfg: EvaluateConfig):
    """pandas DataFrame, one row per channel: name, group, truth std and flat flag (pooled frames), and
    per method ``r_<m>``, ``ccc_<m>``, ``mae_<m>`` over the pooled frames of the files it was scored on."""
    import pandas as pd

    truth = np.concatenate(ev.truths)
    groups = {n: "mouth" for n in bs.MOUTH_NAMES} | {n: "expression" for n in bs.EXPRESSION_NAMES}
    table = {
        "channel": list(bs.ARKIT_NAMES),
        "group": [groups[n] for n in bs.ARKIT_NAMES],
        "truth_std": truth.std(0),
        "flat": truth.std(0) < cfg.flat_std,
    }
    for m in ev.methods():
        p = np.concatenate(ev.preds[m])
        y = np.concatenate([ev.truths[i] for i in ev.truth_index[m]])
        table[f"r_{m}"] = channel_pearson(p, y, cfg.flat_std)
        table[f"ccc_{m}"] = channel_ccc(p, y, cfg.flat_std)
        table[f"mae_{m}"] = channel_mae(p, y)
    return pd.DataFrame(table)


def plot_channel_r(channels, path: Path, methods: list[str]) -> None:
    """Grouped bars: per-channel pooled Pearson r, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(18, 5))
    x, width = np.arange(len(channels)), 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            np.nan_to_num(channels[f"r_{m}"].to_numpy()),
            width,
            label=LABELS[m],
        )
    ax.set_xticks(x, channels["channel"], rotation=90, fontsize=7)
    ax.set_ylabel("Pearson r (pooled frames)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylim(-0.5, 1.0)
    ax.set_title("Per-channel Pearson r (flat truth channels left empty)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_curves(ev: Evaluation, file_index: int, path: Path, title: str) -> None:
    """Truth vs model (and ridge, where scored) for the KEY_NAMES channels of one file, over seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = ev.truths[file_index]
    t = np.arange(len(truth)) / ev.fps
    fig, axes = plt.subplots(len(bs.KEY_NAMES), 1, figsize=(12, 1.6 * len(bs.KEY_NAMES)), sharex=True)
    for ax, name in zip(axes, bs.KEY_NAMES):
        c = bs.INDEX[name]
        ax.plot(t, truth[:, c], color="k", lw=1.2, label="truth")
        for m, color in (("model", "tab:blue"), ("ridge", "tab:orange")):
            if file_index in ev.truth_index[m]:
                pred = ev.preds[m][ev.truth_index[m].index(file_index)]
                ax.plot(t, pred[:, c], color=color, lw=0.9, label=LABELS[m])
        ax.set_ylabel(name, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(loc="upper right", fontsize=7, ncol=3)
    axes[0].set_title(title)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_outputs(
    ev: Evaluation, out_dir: str | Path, cfg: EvaluateConfig, context: dict | None = None
) -> dict:
    """Write every file listed in the module doc into ``out_dir``; returns the metrics.json dict.
    Plots and the channel table need at least one scored file."""
    import pandas as pd

    from koemorph.io.atomic import atomic_path, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = (
        _clean(ev.summary(cfg)) if ev.truths else {"files": 0, "failed_files": len(ev.rows), "fps": ev.fps}
    )
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    info = {
        **(context or {}),
        "fps": ev.fps,
        "config": dataclasses.asdict(cfg),
        "notes": ev.notes,
        "trimmed": ev.trimmed,
        "failures": ev.failures,
        "methods": ev.methods(),
        "aggregation": "plain keys: macro mean over files (NaN skipped); micro/*: pooled frames "
        "(per-channel r/CCC/MAE, then group mean) or pooled counts (closure)",
    }
    atomic_write_text(out / "evaluation.json", json.dumps(_clean(info), indent=1, default=str) + "\n")
    with atomic_path(out / "per_file.csv") as tmp:
        pd.DataFrame(ev.rows).to_csv(tmp, index=False, float_format="%.6g")
    if not ev.truths:
        return metrics
    channels = per_channel_table(ev, cfg)
    with atomic_path(out / "per_channel.csv") as tmp:
        channels.to_csv(tmp, index=False, float_format="%.6g")
    plot_channel_r(channels, out / "per_channel_r.png", ev.methods())
    mouth_r = np.array([row.get("mouth/pearson", np.nan) for row in ev.per_file["model"]], dtype=float)
    order = np.argsort(np.where(np.isfinite(mouth_r), mouth_r, -np.inf))
    best, worst = int(order[-1]), int(order[0])
    for name, i in (("best", best), ("worst", worst)):
        title = f"{name} file by model mouth r: {ev.keys[i]} (r = {mouth_r[i]:.3f})"
        plot_curves(ev, i, out / f"curves_{name}.png", title)
        if context and context.get("truth_dir"):  # the same file as a face with its sound
            from koemorph.preview.build import evaluation_preview

            pred = ev.preds["model"][ev.truth_index["model"].index(i)]
            page = out / f"preview_{name}.html"
            evaluation_preview(ev.keys[i], ev.truths[i], pred, ev.fps, context["truth_dir"], page)
    return metrics


def print_table(metrics: dict, notes: list[str], console=None) -> None:
    """Rich table: key metrics (macro over files) × model / ridge / mean pose."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    methods = [m for m in ("model", "ridge", "mean_pose") if m in metrics]
    table = Table(
        title=f"evaluate: {metrics.get('files', 0)} files, {metrics.get('frames', 0)} frames "
        f"(macro mean over files)"
    )
    table.add_column("metric")
    for m in methods:
        table.add_column(LABELS[m], justify="right")
    for label, key in TABLE_ROWS:
        cells = []
        for m in methods:
            v = metrics[m].get(key)
            cells.append("–" if v is None else (f"{v:+.0f}" if key == "sync_lag_ms" else f"{v:.3f}"))
        table.add_row(label, *cells)
    console.print(table)
    for note in notes:
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


def _existing_run(uri: str, run_id: str):
    """A :class:`koemorph.training.tracking.Tracker` on the existing run ``run_id`` that, unlike
    resuming a training, leaves the run's status as it is. Fails clearly on an unknown run."""
    from mlflow.tracking import MlflowClient

    from koemorph.training.tracking import Tracker

    tracker = Tracker.__new__(Tracker)
    tracker.uri, tracker.client = uri, MlflowClient(tracking_uri=uri)
    tracker.run_id = tracker.client.get_run(run_id).info.run_id
    return tracker


def log_to_mlflow(run_id: str, metrics: dict, out_dir: str | Path, tracking_uri: str | None = None) -> str:
    """Log every numeric aggregate as ``eval/<method>/<metric>`` (run-level counts as ``eval/<name>``)
    and the files of ``out_dir`` as artifacts under ``eval/`` of the existing run. Returns the URI used.
    The run's status is not changed."""
    from koemorph.training.tracking import resolve_uri

    uri = resolve_uri(tracking_uri)
    tracker = _existing_run(uri, run_id)
    flat = {}
    for key, value in metrics.items():
        for name, v in value.items() if isinstance(value, dict) else [("", value)]:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                flat[f"eval/{key}/{name}" if name else f"eval/{key}"] = v
    tracker.log_metrics(flat, step=0)  # finite values only, in batches
    for path in sorted(Path(out_dir).iterdir()):
        if path.is_file() and path.suffix in (".json", ".csv", ".png"):
            tracker.log_artifact(path, "eval")
    return uri
