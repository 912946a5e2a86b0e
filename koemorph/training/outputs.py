"""The files ``koemorph train`` leaves in its run folder besides the checkpoints.

``metrics.csv``: one row per epoch (columns :data:`CSV_FIELDS`; an empty cell = not measured that
epoch), rewritten whole at every epoch end. ``summary.json``: the dict :func:`koemorph.training.loop.train`
returns (paths as strings).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from koemorph.io.atomic import atomic_write_text

CSV_FIELDS = ("epoch", "step", "train_loss", "val_loss", "val_mae", "val_mouth_pearson", "lr", "seconds")


def write_epoch_rows(path: str | Path, rows: list[dict]) -> None:
    """Write the per-epoch rows as ``metrics.csv`` (columns :data:`CSV_FIELDS`; empty = not measured)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})
    atomic_write_text(path, buf.getvalue())


def read_epoch_rows(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.csv`` as dicts of strings (None for empty cells); [] without the file."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def write_summary(path: str | Path, summary: dict) -> None:
    """``summary.json``: the training summary, one key per line, paths as strings."""
    atomic_write_text(path, json.dumps(summary, indent=1, default=str) + "\n")
