"""What the pipeline made, in a few lines (``koemorph summary``, printed at the end of ``make demo``).

Reads only the stages' outputs at the places ``paths`` names: the manifest (files, hours, splits),
the run's ``summary.json`` (training time, steps, MLflow run), the report's ``metrics.json`` (model
vs baselines on the mouth and closure channels) and the render manifest. A stage that has not run
yet is reported as missing, never an error.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from koemorph.config import Config
from koemorph.io.atomic import read_jsonl

MISSING = "not run yet"


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _r(metrics: dict, method: str, key: str) -> str:
    value = (metrics.get(method) or {}).get(key)
    return "-" if value is None else f"{value:.3f}"


def _sqlite_file(uri: str) -> str:
    return uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else uri


def _renders(renders: Path) -> str:
    """The render folder and its files per status (from its render manifest)."""
    from koemorph.inference.manifest import MANIFEST_NAME, read_records

    if not (renders / MANIFEST_NAME).is_file():
        return f"{renders}: {MISSING}"
    status = Counter(r.status for r in read_records(renders))
    return f"{renders}/ ({', '.join(f'{n} {s}' for s, n in sorted(status.items()))})"


def pipeline_summary(cfg: Config) -> list[tuple[str, str]]:
    """``(label, text)`` rows describing the data, the training run, the scores and where things are."""
    paths = cfg.paths
    rows: list[tuple[str, str]] = []
    try:
        records = read_jsonl(Path(paths.manifest))
    except OSError:
        records = []
    if records:
        hours = sum(float(r.get("duration") or 0.0) for r in records) / 3600.0
        splits = Counter(r.get("split", "?") for r in records)
        split_text = ", ".join(f"{n} {s}" for s, n in sorted(splits.items()))
        rows.append(
            ("data", f"{len(records)} files, {hours:.2f} h of audio ({split_text}) from {paths.data_dir}")
        )
    else:
        rows.append(("data", f"{paths.manifest}: {MISSING}"))
    rows.append(("feature cache", paths.store if Path(paths.store).exists() else f"{paths.store}: {MISSING}"))

    run = _json(Path(paths.run_dir) / "summary.json")
    if run:
        minutes = float(run.get("seconds") or 0.0) / 60.0
        rows.append(
            (
                "training",
                f"{minutes:.1f} min, {run.get('steps')} steps, stopped by {run.get('stop_reason')}; "
                f"best {run.get('monitor')} {run.get('best') or float('nan'):.3f}",
            )
        )
        rows.append(("checkpoint", str(Path(paths.run_dir) / "best.pt")))
    else:
        rows.append(("training", f"{paths.run_dir}: {MISSING}"))

    rows.append(("renders", _renders(Path(paths.render_dir))))
    report = Path(paths.report_dir)
    metrics = _json(report / "metrics.json")
    if metrics:
        for label, key in (("mouth Pearson r", "mouth/pearson"), ("closure Pearson r", "closure/pearson")):
            rows.append(
                (
                    label,
                    f"model {_r(metrics, 'model', key)}   ridge {_r(metrics, 'ridge', key)}   "
                    f"mean pose {_r(metrics, 'mean_pose', key)}   ({metrics.get('files')} test files)",
                )
            )
        rows.append(("report", f"{report}/metrics.json, per_file.csv, per_channel.csv, *.png"))
    else:
        rows.append(("report", f"{report}: {MISSING}"))
    if run and run.get("tracking_uri"):
        uri = str(run["tracking_uri"])
        rows.append(("MLflow", f"run {run.get('run_id')} in {_sqlite_file(uri)}"))
        rows.append(("MLflow UI", f'pip install -e ".[ui]" && mlflow ui --backend-store-uri {uri}'))
    rows.append(("DVC", "dvc metrics show; dvc plots show  (training curves, per-channel r)"))
    return rows


__all__ = ["pipeline_summary"]
