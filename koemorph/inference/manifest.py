"""The render manifest ``OUT/render_manifest.jsonl``: one :class:`RenderRecord` per output file.

The file is a log that is compacted at the end of every run:

- while a run goes, the driver appends each finished file's record (:class:`Journal`, one line,
  flushed and fsynced), so a run killed at any point (``kill -9``, Ctrl-C) has recorded every
  output it completed and the next run skips them;
- :func:`finish` rewrites it atomically with one line per output (sorted by output path): the
  previous runs' records, with those of this run's outputs replaced and those of inputs that left
  this run's input folder dropped. Records of another input folder rendered into the same output
  folder are kept.

Reading (:func:`read_records`) folds the lines in order: a later record of an output replaces the
earlier ones (error records of two inputs that would write one output are kept side by side), and a
line cut short by a kill is ignored.

Only the driver writes the manifest, holding :func:`render_lock` on the output folder, which also
removes the ``.*.partial`` files that killed atomic writes leave behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = "render_manifest.jsonl"
QUIET_PEAK_DBFS = -20.0  # inputs peaking below this, left at their level, are counted as quiet
LOCK_NAME = ".render.lock"
# The settings that make an output what it is: a previous record with the same values and an
# existing output file is skipped.
SKIP_KEYS = (
    "audio_sha256",
    "model_sha256",
    "runtime",
    "fps",
    "format",
    "postprocess",
    "output",
    "transcript",
    "recognise_words",
    "transcript_sha256",
    "features_hash",
)
# Deterministic kill point for tests: "N:PATH" makes the driver, right after the N-th record of a run
# is journalled, create PATH and wait there until it is killed or interrupted.
PAUSE_ENV = "KOEMORPH_TEST_PAUSE_AFTER_RECORDS"
_PARTIAL = re.compile(r"^\..+\.[0-9a-f]{8}\.partial$")  # koemorph.io.atomic.atomic_path's temporaries


@dataclass
class RenderRecord:
    """What happened to one input. ``status``: ``ok`` (rendered now), ``skipped`` (output already
    up to date) or ``error`` (``error`` names the file and the problem; no output was written).

    Paths are posix and relative: ``input`` to ``input_dir`` (absolute), ``output`` to OUT.
    ``frames`` at ``fps`` (the output's), ``duration`` in s of audio, ``seconds`` / ``cpu_seconds``
    the wall and CPU time spent on the file; ``features`` is ``computed`` or ``store:<group>``.
    ``transcript`` is the ``<stem>.txt`` whose words relabelled the recognised phones (phone models,
    ``render.transcripts``), with the words it had to leave out in ``unknown_words``. Without one,
    ``recognise_words`` says the file's words were recognised (``render.recognise_words``):
    ``recognised_words`` holds them, ``recognised_log_posterior`` their confidence, and
    ``recognised_words_used`` whether they were confident enough to serve as its transcript.
    ``features_hash`` stands for the extractors' and the word search's settings and versions, and
    the level matching's (a manifest written before it existed renders every file again).
    ``peak_dbfs`` is the input's peak, ``gain_db`` the gain that brought its speech level to the
    training files' (``render.match_level``, :mod:`koemorph.features.level`; 0: within them).
    """

    input: str
    output: str
    status: str
    audio_sha256: str | None = None
    model_id: str | None = None
    model_sha256: str | None = None
    model_source: str | None = None
    runtime: str = "torch"  # torch | onnx
    fps: int | None = None
    native_fps: int | None = None
    format: str | None = None
    postprocess: dict = field(default_factory=dict)
    frames: int | None = None
    duration: float | None = None
    features: str | None = None
    error: str | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None
    input_dir: str | None = None
    transcript: str | None = None  # the transcript used (relative to input_dir), if any
    transcript_sha256: str | None = None
    unknown_words: list | None = None  # transcript words the dictionary does not know (left out)
    recognise_words: bool = False  # no transcript, render.recognise_words: words were recognised
    recognised_words: str | None = None  # those words
    recognised_log_posterior: float | None = None  # their confidence (log posterior per word)
    recognised_words_used: bool | None = None  # confident enough to serve as the transcript
    features_hash: str | None = None  # what made its features (inference.features.render_hashes)
    peak_dbfs: float | None = None  # the input's largest |sample|, dB re full scale (None: silent)
    gain_db: float | None = None  # the gain that brought it to the training files' levels (0: none)
    traceback: str | None = None  # unexpected exceptions only; not written to the manifest

    def to_json(self) -> dict:
        """The manifest line (everything but ``traceback``)."""
        out = dataclasses.asdict(self)
        out.pop("traceback")
        return out

    @classmethod
    def from_json(cls, data: dict) -> RenderRecord:
        """A record from a manifest line; unknown keys are ignored, missing ones take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def settings(self) -> tuple:
        """The :data:`SKIP_KEYS` values."""
        return tuple(getattr(self, k) for k in SKIP_KEYS)


def _fold(groups: dict[str, dict[str, RenderRecord]], record: RenderRecord) -> None:
    """Add ``record`` to ``{output: {input: record}}``: it replaces the output's earlier records,
    except that error records of different inputs for one output stay side by side."""
    group = groups.setdefault(record.output, {})
    if record.status != "error" or any(r.status != "error" for r in group.values()):
        group.clear()
    group[record.input] = record


def read_records(out_dir: str | Path) -> list[RenderRecord]:
    """The manifest's current records (see the module doc); empty if it is absent or unreadable."""
    groups: dict[str, dict[str, RenderRecord]] = {}
    try:
        with open(Path(out_dir) / MANIFEST_NAME, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    for line in lines:
        try:
            data = json.loads(line)
            record = RenderRecord.from_json(data) if isinstance(data, dict) else None
        except (ValueError, TypeError):  # a line cut short by a kill, or not a record
            continue
        if record is not None and isinstance(record.input, str) and isinstance(record.output, str):
            _fold(groups, record)
    return [r for group in groups.values() for r in group.values()]


def read_manifest(out_dir: str | Path) -> dict[str, RenderRecord]:
    """The previous runs' records by output path (relative to OUT, posix); errors are left out."""
    return {r.output: r for r in read_records(out_dir) if r.status != "error"}


@contextlib.contextmanager
def render_lock(out_dir: str | Path):
    """Hold an exclusive lock on ``OUT/.render.lock`` (released by the OS if the process dies), then
    delete the ``.*.partial`` temporaries that killed runs left in OUT. Raises ``ValueError`` if
    another render holds the lock."""
    import fcntl

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_NAME, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{out_dir}: another `koemorph render` is writing into this folder") from None
        try:
            remove_partials(out_dir)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_partials(out_dir: str | Path) -> list[Path]:
    """Delete the atomic-write temporaries (``.<name>.<8 hex>.partial``) under ``out_dir``; returns them.
    Symbolic links are not followed."""
    removed = []
    for dirpath, _dirs, files in os.walk(out_dir):
        for name in files:
            path = Path(dirpath) / name
            if _PARTIAL.match(name) and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class Journal:
    """Appends the records of a running render to the manifest, one flushed and fsynced line each."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / MANIFEST_NAME
        self.count = 0
        self.file = open(self.path, "a+b")  # noqa: SIM115 (open for the whole run; see close)
        self.file.seek(0, os.SEEK_END)
        if self.file.tell() > 0:  # a line cut short by a kill must not swallow the next record
            self.file.seek(-1, os.SEEK_END)
            if self.file.read(1) != b"\n":
                self.file.write(b"\n")

    def append(self, record: RenderRecord) -> None:
        self.file.write((json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.count += 1
        _pause_hook(self.count)

    def close(self) -> None:
        self.file.close()


def _pause_hook(count: int) -> None:
    """The :data:`PAUSE_ENV` kill point (tests only)."""
    spec = os.environ.get(PAUSE_ENV, "")
    if not spec or int(spec.split(":", 1)[0]) != count:
        return
    Path(spec.split(":", 1)[1]).touch()
    while True:  # until SIGKILL, or SIGINT (KeyboardInterrupt)
        time.sleep(1.0)


def merge(
    previous: list[RenderRecord], records: list[RenderRecord], input_dir: str, planned: set[str]
) -> list[RenderRecord]:
    """The manifest after a run: ``previous`` without the records of ``input_dir`` whose input was
    not ``planned`` this run (gone from the folder), then this run's ``records`` folded in; sorted."""
    groups: dict[str, dict[str, RenderRecord]] = {}
    for r in previous:
        if r.input_dir in (None, input_dir) and r.input not in planned:
            continue
        _fold(groups, r)
    for r in records:
        _fold(groups, r)
    return sorted((r for g in groups.values() for r in g.values()), key=lambda r: (r.output, r.input))


def finish(out_dir: str | Path, records: list[RenderRecord], input_dir=None, planned=None) -> dict:
    """Write ``OUT/render_manifest.jsonl`` (one line per output, see the module doc). Driver only.

    ``records``: this run's; ``input_dir`` (absolute) and ``planned`` (its inputs this run, relative)
    say which older records are stale. Returns the manifest's path, this run's error messages and,
    when transcripts (or recognised words) were used, how many files had one and how many of their
    words were left out, how many files were scaled to the training files' levels, and how many
    files left at their level peak below :data:`QUIET_PEAK_DBFS` (the model reads the mel's level:
    a quiet recording closes fewer lips) (``pipeline.jobs.run_jobs`` adds the files and audio hours
    per status).
    """
    from koemorph.io.atomic import write_jsonl

    records = sorted(records, key=lambda r: r.input)
    planned = {r.input for r in records} if planned is None else set(planned)
    input_dir = input_dir if input_dir is not None else (records[0].input_dir if records else None)
    os.makedirs(out_dir, exist_ok=True)
    rows = merge(read_records(out_dir), records, input_dir, planned)
    write_jsonl(Path(out_dir) / MANIFEST_NAME, [r.to_json() for r in rows])
    errors = [r.error for r in records if r.status == "error"]
    summary = {"manifest": str(Path(out_dir) / MANIFEST_NAME), "errors": errors}
    done = [r for r in records if r.status != "error"]
    told, heard = sum(bool(r.transcript) for r in done), sum(bool(r.recognised_words_used) for r in done)
    if told:
        summary["files with a transcript"] = told
    if heard:
        summary["files with recognised words"] = heard
    if told or heard:
        summary["unknown words left out"] = sum(len(r.unknown_words or ()) for r in done)
    scaled = sum(bool(r.gain_db) for r in done)
    if scaled:
        summary["files scaled to the training levels"] = scaled
    quiet = sum(r.peak_dbfs is not None and r.peak_dbfs < QUIET_PEAK_DBFS and not r.gain_db for r in done)
    if quiet:
        summary[f"quiet files (peak below {QUIET_PEAK_DBFS:g} dBFS: normalise them)"] = quiet
    return summary
