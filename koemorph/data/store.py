"""The feature store: one Zarr v3 store per dataset, one group per file.

Layout (``S`` = the store folder, e.g. ``cache/features.zarr``)::

    S/zarr.json              root group; attrs: schema version, fps, feature config (driver only)
    S/<id>/zarr.json         group attrs: id, audio_sha256, track_sha256, per-array config hashes,
                             schema_version, fps, num_frames, duration, per-file feature sums, complete
    S/<id>/mel               [T, n_mels] float32 log-mel (dB re full scale), chunks of 1024 frames
    S/<id>/egemaps           [T, 88] float32, causal sample-and-hold on the grid (optional); window j
                             (ending at (j+1) * window_step_s) is the row of the first frame at or after
                             its end
    S/<id>/targets           [T, 52] float32 Apple-order blendshapes (absent for audio-only files)
    S/_staging/              groups being written; removed at the start of every run

A group is built in ``S/_staging/<id>.<uuid>`` and only renamed into ``S/<id>`` once every array
it lists is written and readable (:func:`check_group`) and ``complete`` is set, so a killed run
never leaves a group that passes as done. Ids are checked (:func:`check_id`) and every path written
is checked to lie under the store after resolving. One run at a time writes a store: the driver
holds :func:`store_lock` (``<stem>.lock`` beside the store) from start to finish.
Beside the store the driver writes ``<stem>.results.jsonl``, ``<stem>.failures.jsonl`` and
``<stem>.stats.json`` (see :func:`sidecar`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 2  # 2: no egemaps_windows array (it repeated rows of egemaps)
TIME_CHUNK = 1024  # frames per chunk (~34 s at 30 fps): cheap random window reads
STAGING = "_staging"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class StoreBusyError(RuntimeError):
    """Another process holds the store's lock."""


def check_id(file_id) -> str:
    """``file_id`` if it is a safe group name, else ValueError saying why.

    Safe: 1-200 characters from ``[A-Za-z0-9._-]``, starting with a letter or digit, so no path
    separators, no ``..``, no absolute paths and no Zarr-reserved or staging names.
    """
    if not isinstance(file_id, str) or not _ID.fullmatch(file_id):
        raise ValueError(
            f"id {file_id!r} is not a safe name (1-200 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit)"
        )
    return file_id


def _zarr():
    import zarr

    zarr.config.set({"async.concurrency": 4, "threading.max_workers": 2})
    return zarr


# Codec chain of every array: little-endian float32 bytes, then blosc (zstd level 3, byte shuffle).
_BLOSC = {"typesize": 4, "cname": "zstd", "clevel": 3, "shuffle": "shuffle", "blocksize": 0}
_CODECS = [
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "blosc", "configuration": _BLOSC},
]


def _json(doc: dict) -> bytes:
    """Compact JSON (json.dumps stays in its C encoder only without indent); NaN is refused."""
    return json.dumps(doc, allow_nan=False).encode()


def array_nodes(data: np.ndarray, attrs: dict | None = None) -> dict[str, bytes]:
    """The files of a Zarr v3 array holding ``data`` (``[T, D]``, stored as float32), by relative key.

    ``zarr.json`` plus one blosc-compressed chunk per :data:`TIME_CHUNK` rows (``c/<i>/0``; the last
    chunk padded with the fill value 0, as zarr stores edge chunks). Written directly rather than
    through zarr-python, whose event-loop round trips cost ~4 ms per array; the bytes are the ones
    zarr writes for the same array (tested), and zarr reads them.
    """
    from numcodecs import Blosc

    data = np.ascontiguousarray(data, dtype="<f4")
    if data.ndim != 2:
        raise ValueError(f"expected a [T, D] array, got shape {data.shape}")
    rows = min(TIME_CHUNK, max(1, data.shape[0]))
    meta = {
        "shape": list(data.shape),
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [rows, data.shape[1]]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": _CODECS,
        "attributes": attrs or {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }
    nodes = {"zarr.json": _json(meta)}
    blosc = Blosc(
        cname=_BLOSC["cname"], clevel=_BLOSC["clevel"], shuffle=Blosc.SHUFFLE, blocksize=_BLOSC["blocksize"]
    )  # typesize: float32's 4 bytes
    for i, start in enumerate(range(0, data.shape[0], rows)):
        chunk = data[start : start + rows]
        if len(chunk) < rows:
            chunk = np.concatenate([chunk, np.zeros((rows - len(chunk), data.shape[1]), chunk.dtype)])
        nodes[f"c/{i}/0"] = blosc.encode(chunk)
    return nodes


def sidecar(store: str | Path, kind: str) -> Path:
    """Path of a driver-written file beside the store: kind in results.jsonl / failures.jsonl / stats.json."""
    store = Path(store)
    name = store.name[: -len(".zarr")] if store.name.endswith(".zarr") else store.name
    return store.with_name(f"{name}.{kind}")


@contextlib.contextmanager
def store_lock(store: str | Path):
    """Hold the store's write lock (``<stem>.lock`` beside it, an OS file lock released when the
    process ends, even when killed). StoreBusyError naming the holder's PID if another process has it."""
    import fcntl

    path = sidecar(store, "lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StoreBusyError(
                f"{store}: store in use by PID {holder} (another `koemorph extract`); "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def init_store(store: str | Path, attrs: dict) -> None:
    """Create (or update the attrs of) the root group and clear leftover staging. Driver only,
    under :func:`store_lock`."""
    zarr = _zarr()
    store = Path(store)
    root = zarr.open_group(str(store), mode="a")
    root.attrs.update(attrs)
    shutil.rmtree(store / STAGING, ignore_errors=True)
    (store / STAGING).mkdir()


def _inside(store: Path, path: Path) -> Path:
    """``path`` if it resolves to a direct child of ``store`` (or of its staging), else ValueError."""
    parent = path.resolve().parent
    if parent not in (store.resolve(), (store / STAGING).resolve()):
        raise ValueError(f"{path}: outside the store {store}; refusing to write there")
    return path


def group_path(store: str | Path, file_id: str) -> Path:
    """``S/<id>``; ValueError for an unsafe id (:func:`check_id`) or a path outside the store."""
    return _inside(Path(store), Path(store) / check_id(file_id))


def read_group_attrs(store: str | Path, file_id: str) -> dict | None:
    """Attrs of a complete group, or None if it is absent or incomplete."""
    meta = group_path(store, file_id) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    return attrs if attrs.get("complete") is True else None


def check_group(group: str | Path, names=None) -> list[str]:
    """Problems that make the arrays of a group folder unreadable (empty list: all readable).

    Checks, without decoding, that each array in ``names`` (default: every array folder there) has
    valid metadata and every chunk file its shape implies. Cheap: one small read per array and one
    ``stat`` per chunk.
    """
    group = Path(group)
    if names is None:
        names = sorted(p.name for p in group.iterdir() if p.is_dir()) if group.is_dir() else []
    problems = []
    for name in names:
        try:
            meta = json.loads((group / name / "zarr.json").read_text())
            rows, cols = meta["shape"]
            step = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        except (OSError, ValueError, KeyError, TypeError):
            problems.append(f"array {name!r} is missing or has unreadable metadata")
            continue
        missing = [i for i in range(-(-rows // step)) if cols and not (group / name / f"c/{i}/0").is_file()]
        if missing:
            problems.append(f"array {name!r} lacks chunk(s) {missing[:5]}")
    return problems


def damaged(store: str | Path, file_id: str, arrays) -> str | None:
    """Why the listed ``arrays`` of group ``file_id`` cannot be read, or None if they can."""
    problems = check_group(group_path(store, file_id), list(arrays or ()))
    return "; ".join(problems) or None


class GroupWriter:
    """Writes one file's group into staging, then publishes it atomically.

    ``keep`` names arrays to carry over unchanged from the existing complete group (used when only
    some feature parameters changed). Use as a context manager: on error the staging is removed.
    """

    def __init__(self, store: str | Path, file_id: str, keep: tuple[str, ...] = ()):
        self.store = Path(store)
        self.file_id = file_id
        self.final = group_path(store, file_id)
        self.staging = _inside(self.store, self.store / STAGING / f"{file_id}.{uuid.uuid4().hex[:8]}")
        (self.store / STAGING).mkdir(parents=True, exist_ok=True)
        self.staging.mkdir()
        for name in keep:
            shutil.copytree(self.final / name, self.staging / name)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        return False

    def write(self, name: str, data: np.ndarray, attrs: dict | None = None) -> None:
        """Write ``data`` ``[T, D]`` (float32) as array ``name``, chunked along time (:func:`array_nodes`)."""
        if not self.staging.is_dir():  # never recreate it: another process removed it
            raise RuntimeError(f"{self.staging}: staging folder vanished while writing {self.file_id}")
        for key, blob in array_nodes(data, attrs).items():
            path = self.staging / name / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)

    def publish(self, attrs: dict) -> None:
        """Write the group metadata (``attrs`` with ``complete=True``), then move the group into place.

        ValueError (and nothing moves) unless every array in ``attrs["arrays"]`` (default: every array
        written) is in staging and readable: a group is never marked complete with an array missing.
        """
        problems = check_group(self.staging, attrs.get("arrays"))
        if problems:
            raise ValueError(f"{self.final}: not publishing an incomplete group: {'; '.join(problems)}")
        group = {
            "attributes": {**attrs, "complete": True},
            "zarr_format": 3,
            "consolidated_metadata": None,
            "node_type": "group",
        }
        (self.staging / "zarr.json").write_bytes(_json(group))
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


# -- the sidecars: results, failures, stats --------------------------------------------------------


@dataclass
class FileRecord:
    """What ``koemorph extract`` did with one manifest entry: one line of ``results.jsonl`` (``ok``,
    ``cached``) or ``failures.jsonl`` (``error``). Fields after ``track_sha256`` are None when they
    do not apply and are then left out of the line."""

    id: str
    split: str
    status: str  # ok (computed in this run) | cached (unchanged) | error
    duration: float  # seconds of audio (manifest)
    audio_sha256: str | None = None
    track_sha256: str | None = None
    num_frames: int | None = None  # rows of every array, on the grid at ``fps``
    fps: int | None = None
    arrays: list[str] | None = None  # stored arrays, sorted
    hashes: dict | None = None  # config hash per stored array
    sums: dict | None = None  # per-array {n, sum, sumsq} for the stats (not written to results)
    seconds: float | None = None  # wall seconds of the worker task
    cpu_seconds: float | None = None
    computed: list[str] | None = None  # arrays computed in this run (the rest were kept)
    error: str | None = None  # one line naming the file and the problem
    traceback: str | None = None  # for unexpected exceptions

    @classmethod
    def from_dict(cls, d: dict) -> FileRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self, leave_out: tuple[str, ...] = ()) -> dict:
        """The JSON line: the first six fields always, the others when set, minus ``leave_out``."""
        d = dataclasses.asdict(self)
        base = ("id", "split", "status", "duration", "audio_sha256", "track_sha256")
        return {k: v for k, v in d.items() if k not in leave_out and (k in base or v is not None)}


def read_results(store: str | Path) -> list[FileRecord]:
    """The store's results (one record per usable file). FileNotFoundError if extract never finished."""
    from koemorph.io.atomic import read_jsonl

    path = sidecar(store, "results.jsonl")
    if not path.is_file():
        raise FileNotFoundError(f"{store}: no {path.name} beside it; run `koemorph extract` first")
    return [FileRecord.from_dict(r) for r in read_jsonl(path)]


def read_stats(store: str | Path) -> dict:
    """The store's stats: train-split ``mel``/``egemaps`` mean and std, ``ids``, ``features`` config."""
    path = sidecar(store, "stats.json")
    if not path.is_file():
        raise FileNotFoundError(f"{store}: no {path.name} beside it; run `koemorph extract` first")
    return json.loads(path.read_text())


def write_sidecars(store: str | Path, records: list[FileRecord], stats: dict) -> None:
    """Write results (ok and cached, sorted by id, without sums and tracebacks), failures and stats,
    each atomically. Driver only."""
    from koemorph.io.atomic import atomic_write_text, write_jsonl

    records = sorted(records, key=lambda r: r.id)
    ok = [r.to_dict(leave_out=("sums", "traceback")) for r in records if r.status != "error"]
    write_jsonl(sidecar(store, "results.jsonl"), ok)
    write_jsonl(sidecar(store, "failures.jsonl"), [r.to_dict() for r in records if r.status == "error"])
    atomic_write_text(sidecar(store, "stats.json"), json.dumps(stats, indent=1) + "\n")
