"""A test hook: hold a process at a named point until a test releases it.

Kill and concurrency tests need to stop a real run at an exact point, not after some time. With
``KOEMORPH_HOLD=<point>[,<point>...]@<folder>`` in the environment (inherited by Dask workers), a
process reaching a listed point writes ``<folder>/<point>.<pid>.<n>.reached`` (``n`` counts the
times this process got there; the file holds ``info``) and then waits until ``<folder>/<point>.go``
exists. Without the variable (normal use) :func:`hold` returns at once.

Points: ``extract.published`` (a worker, after publishing a group; info: its id).
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

ENV = "KOEMORPH_HOLD"
_count = itertools.count(1)


def hold(point: str, info: str = "") -> None:
    """Block at ``point`` while ``$KOEMORPH_HOLD`` lists it and its ``.go`` file is absent."""
    spec = os.environ.get(ENV)
    if not spec or "@" not in spec:
        return
    points, folder = spec.rsplit("@", 1)
    if point not in points.split(","):
        return
    folder = Path(folder)
    (folder / f"{point}.{os.getpid()}.{next(_count)}.reached").write_text(info)
    while not (folder / f"{point}.go").exists():
        time.sleep(0.02)
