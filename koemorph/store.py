"""The feature store: one Zarr v3 store per dataset, one group per file.

Layout (``S`` = the store folder, e.g. ``cache/features.zarr``)::

    S/zarr.json              root group; attrs: schema version, fps, feature config (driver only)
    S/<id>/zarr.json         group attrs: id, audio_sha256, track_sha256, per-array config hashes,
                             schema_version, fps, num_frames, duration, per-file feature sums, complete
    S/<id>/mel               [T, n_mels] float32 log-mel (dB re full scale), chunks of 1024 frames
    S/<id>/egemaps           [T, 88] float32, causal sample-and-hold on the grid (optional); window j
                             (ending at (j+1) * window_step_s) is the row of the first frame at or after its end
    S/<id>/targets           [T, 52] float32 Apple-order blendshapes (absent for audio-only files)
    S/_staging/              groups being written; removed at the start of every run

A group is built in ``S/_staging/<id>.<uuid>`` and only renamed into ``S/<id>`` once every array
is written and ``complete`` is set, so a killed run never leaves a group that passes as done.
Beside the store the driver writes ``<stem>.results.jsonl``, ``<stem>.failures.jsonl`` and
``<stem>.stats.json`` (see :func:`sidecar`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 2  # 2: no egemaps_windows array (it repeated rows of egemaps)
TIME_CHUNK = 1024  # frames per chunk (~34 s at 30 fps): cheap random window reads
STAGING = "_staging"
ARRAYS = ("mel", "egemaps", "targets")


def _zarr():
    import zarr

    zarr.config.set({"async.concurrency": 4, "threading.max_workers": 2})
    return zarr


def _compressor():
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def sidecar(store: str | Path, kind: str) -> Path:
    """Path of a driver-written file beside the store: kind in results.jsonl / failures.jsonl / stats.json."""
    store = Path(store)
    name = store.name[: -len(".zarr")] if store.name.endswith(".zarr") else store.name
    return store.with_name(f"{name}.{kind}")


def init_store(store: str | Path, attrs: dict) -> None:
    """Create (or update the attrs of) the root group and clear leftover staging. Driver only."""
    zarr = _zarr()
    store = Path(store)
    root = zarr.open_group(str(store), mode="a")
    root.attrs.update(attrs)
    shutil.rmtree(store / STAGING, ignore_errors=True)


def group_path(store: str | Path, file_id: str) -> Path:
    return Path(store) / file_id


def read_group_attrs(store: str | Path, file_id: str) -> dict | None:
    """Attrs of a complete group, or None if it is absent or incomplete."""
    import json

    meta = group_path(store, file_id) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    return attrs if attrs.get("complete") is True else None


class GroupWriter:
    """Writes one file's group into staging, then publishes it atomically.

    ``keep`` names arrays to carry over unchanged from the existing complete group (used when only
    some feature parameters changed). Use as a context manager: on error the staging is removed.
    """

    def __init__(self, store: str | Path, file_id: str, keep: tuple[str, ...] = ()):
        self.store = Path(store)
        self.file_id = file_id
        self.final = group_path(store, file_id)
        self.staging = self.store / STAGING / f"{file_id}.{uuid.uuid4().hex[:8]}"
        self.staging.parent.mkdir(parents=True, exist_ok=True)
        zarr = _zarr()
        if keep:
            shutil.copytree(self.final, self.staging)
            for name in ARRAYS:
                if name not in keep:
                    shutil.rmtree(self.staging / name, ignore_errors=True)
            self.group = zarr.open_group(str(self.staging), mode="a")
            self.group.attrs["complete"] = False
        else:
            self.group = zarr.open_group(str(self.staging), mode="w")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        return False

    def write(self, name: str, data: np.ndarray, attrs: dict | None = None) -> None:
        """Write ``data`` ``[T, D]`` as array ``name``, chunked along time."""
        data = np.ascontiguousarray(data)
        chunks = (min(TIME_CHUNK, max(1, data.shape[0])),) + data.shape[1:]
        if data.size:  # create and fill in one call: fewer round trips to zarr's I/O thread
            self.group.create_array(name, data=data, chunks=chunks, compressors=_compressor(),
                                    attributes=attrs or {}, overwrite=True)  # fmt: skip
        else:
            self.group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks,
                                    compressors=_compressor(), attributes=attrs or {}, overwrite=True)  # fmt: skip

    def publish(self, attrs: dict) -> None:
        """Set the group attrs with ``complete=True`` last, then move the group into place."""
        self.group.attrs.update({**attrs, "complete": True})
        trash = None
        if self.final.exists():
            trash = self.store / STAGING / f"{self.file_id}.{uuid.uuid4().hex[:8]}.old"
            os.replace(self.final, trash)
        os.replace(self.staging, self.final)  # atomic on one filesystem
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def open_arrays(store: str | Path, file_id: str) -> dict:
    """Zarr arrays of a complete group, by name (lazy: slicing reads only the chunks needed)."""
    zarr = _zarr()
    group = zarr.open_group(str(group_path(store, file_id)), mode="r")
    if group.attrs.get("complete") is not True:
        raise ValueError(f"{group_path(store, file_id)}: group is not complete")
    return {name: arr for name, arr in group.arrays()}
