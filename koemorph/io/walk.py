"""The one directory walker: every file under a folder, in a stable order."""

from __future__ import annotations

import os
from pathlib import Path


def files_under(root: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """Files under ``root``, recursively, sorted by relative posix path.

    Hidden files and folders (``.*``, e.g. macOS ``._x.wav`` or ``.git``) are skipped, and so is
    the folder ``exclude`` (compared after resolving; e.g. an output folder inside the input).
    Symlinked folders are not followed; symlinked files are listed.
    """
    root = Path(root)
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        keep = [d for d in dirs if not d.startswith(".")]
        dirs[:] = [d for d in keep if skip is None or (here / d).resolve() != skip]
        found.extend(here / name for name in files if not name.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
