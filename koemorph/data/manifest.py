"""Dataset manifests: one JSON line per paired recording (audio + blendshape track).

``koemorph manifest DATA_DIR -o data_manifests/NAME.jsonl`` walks DATA_DIR, pairs audio with
tracks by relative path and stem, validates both, assigns splits and writes:

- ``NAME.jsonl``: one :class:`ManifestEntry` per usable pair (paths relative to the manifest's
  folder, so the manifest and the data can move together);
- ``NAME.problems.jsonl``: one record per unpaired or bad file, with the reason.

Splits (``data.split_by``): ``speaker`` takes folder names (``train/``, ``val/``, ``test/``)
where a path has one, else a seeded hash of the speaker (the stem's prefix), so one speaker never
spans two splits. ``engine`` (demo corpora) holds one synthesis engine out whole: its files are
the test split, the other engines' voices go to train or val by a seeded hash; folders are ignored.
A file's ``engine`` and ``voice`` come from the demo corpus's ``<stem>.phones.json`` next to the
audio, when there is one (None otherwise).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from koemorph.config import DataConfig
from koemorph.errors import InputError
from koemorph.io.audio import AUDIO_EXTENSIONS, audio_info, sha256_file

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "eval": "test",
}


@dataclass
class ManifestEntry:
    """One recording. Paths are relative to the manifest file's folder when stored."""

    id: str  # stable and path-safe: usable as a Zarr group and output file name
    audio_path: str
    track_path: str | None
    duration: float  # seconds
    sample_rate: int  # native rate of the audio file (it is resampled to 16 kHz on load)
    channels: int
    track_fps: float | None
    audio_sha256: str
    track_sha256: str | None
    split: str
    speaker: str
    engine: str | None = None  # synthesis engine of a generated (demo) file, None for recordings
    voice: str | None = None  # its demo voice
    transcript_path: str | None = None  # <stem>.txt beside the audio: the words it says
    transcript_sha256: str | None = None


@dataclass
class ManifestResult:
    entries: list[ManifestEntry] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # {"path", "problem"}
    manifest_path: Path | None = None


def make_id(rel_stem: str) -> str:
    """A stable, path-safe id from a relative path without suffix (``train/a b/x`` -> ``train__a-b__x``).

    Characters outside ``[A-Za-z0-9._-]`` become ``-``; when that changes the text, a short hash
    of the original keeps ids of different files distinct (e.g. unicode names).
    """
    parts = [p for p in Path(rel_stem).as_posix().split("/") if p]
    safe = "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-.") or "x" for p in parts)
    if safe.startswith("_"):  # Zarr reserves names starting with "__"
        safe = "x" + safe
    if safe != "__".join(parts):
        safe += "-" + hashlib.sha1(rel_stem.encode("utf-8")).hexdigest()[:6]
    if len(safe) > 200:  # a group name, staging suffixes included, must fit a file name
        safe = safe[:191] + "-" + hashlib.sha1(rel_stem.encode("utf-8")).hexdigest()[:8]
    return safe


def split_from_path(rel_path: Path) -> str | None:
    """``train``/``val``/``test`` if a folder in the path names a split, else None."""
    for part in rel_path.parent.parts:
        split = _SPLIT_ALIASES.get(part.lower())
        if split:
            return split
    return None


def hash_split(speaker: str, seed: int, ratios: tuple[float, float, float]) -> str:
    """Deterministic split of a speaker: a seeded hash mapped onto cumulative ``ratios``."""
    total = sum(ratios)
    if total <= 0 or any(r < 0 for r in ratios):
        raise ValueError(f"split ratios must be non-negative and not all zero: {ratios}")
    u = int.from_bytes(hashlib.sha256(f"{seed}:{speaker}".encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, ratio in zip(SPLITS, ratios):
        edge += ratio / total
        if u < edge:
            return name
    return SPLITS[-1]


def speaker_of(stem: str, pattern: str) -> str:
    """The speaker prefix of a file stem (regex group 1), or the whole stem if it does not match."""
    match = re.match(pattern, stem)
    return match.group(1) if match and match.group(1) else stem


def find_pairs(data_dir: Path) -> tuple[list[tuple[Path, Path | None]], list[dict]]:
    """Pair audio and track files under ``data_dir`` by relative path without suffix.

    Returns ``(pairs, problems)``; ``pairs`` holds ``(audio, track or None)``, sorted. Files are
    walked by :func:`koemorph.io.walk.files_under`; tracks are the registered formats
    (:mod:`koemorph.io.tracks.formats`), the best one used when a stem has several.
    """
    from koemorph.io.tracks import format_of, preferred
    from koemorph.io.walk import files_under

    audio: dict[str, Path] = {}
    tracks: dict[str, list[Path]] = {}
    problems: list[dict] = []
    for path in files_under(data_dir):
        key = path.relative_to(data_dir).with_suffix("").as_posix()
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            if key in audio:
                problems.append(
                    {"path": str(path), "problem": f"second audio file for {key!r} (using {audio[key].name})"}
                )
                continue
            audio[key] = path
        elif format_of(path) is not None:
            tracks.setdefault(key, []).append(path)
    pairs = []
    for key, audio_path in sorted(audio.items()):
        candidates = preferred(tracks.pop(key, []))
        for extra in candidates[1:]:
            problems.append(
                {"path": str(extra), "problem": f"ignored: {candidates[0].name} is used for this audio"}
            )
        pairs.append((audio_path, candidates[0] if candidates else None))
    for _key, paths in sorted(tracks.items()):
        for path in paths:
            problems.append({"path": str(path), "problem": "no audio file with the same stem"})
    return pairs, problems


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _entry(
    audio_path: Path, track_path: Path | None, data_dir: Path, base: Path, cfg: DataConfig
) -> ManifestEntry:
    """The manifest entry of one pair (paths relative to ``base``, the manifest's folder); InputError
    for unreadable audio, a malformed track or one whose duration is off by more than
    ``cfg.max_duration_mismatch_s``."""
    from koemorph.io.tracks import check_duration, read_track

    info = audio_info(audio_path)
    track_fps = track_sha = None
    if track_path is not None:
        track = read_track(track_path, swap_mouth_lr=cfg.swap_mouth_lr)
        check_duration(track, info.duration, cfg.max_duration_mismatch_s)
        track_fps, track_sha = track.source_fps, sha256_file(track_path)
    rel = audio_path.relative_to(data_dir)
    speaker = speaker_of(audio_path.stem, cfg.speaker_pattern)
    engine, voice = demo_origin(audio_path)
    transcript = audio_path.with_suffix(".txt")
    transcript = transcript if transcript.is_file() else None
    return ManifestEntry(
        id=make_id(rel.with_suffix("").as_posix()),
        audio_path=_relative(audio_path, base),
        track_path=None if track_path is None else _relative(track_path, base),
        duration=round(info.duration, 6),
        sample_rate=info.sample_rate,
        channels=info.channels,
        track_fps=None if track_fps is None else round(float(track_fps), 3),
        audio_sha256=sha256_file(audio_path),
        track_sha256=track_sha,
        split=split_from_path(rel) or hash_split(speaker, cfg.split_seed, cfg.split_ratios),
        speaker=speaker,
        engine=engine,
        voice=voice,
        transcript_path=None if transcript is None else _relative(transcript, base),
        transcript_sha256=None if transcript is None else sha256_file(transcript),
    )


def build_manifest(
    data_dir: str | Path, out: str | Path, cfg: DataConfig, include_audio_only: bool = False
) -> ManifestResult:
    """Scan ``data_dir``, validate every pair, write ``out`` and ``out``'s problems file.

    A bad file (unreadable audio, malformed track, track duration off by more than
    ``cfg.max_duration_mismatch_s``) is listed as a problem and left out; the rest is written.
    Audio without a track is a problem unless ``include_audio_only`` (then ``track_path`` is null).
    """
    data_dir, out = Path(data_dir), Path(out)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: not a folder")
    pairs, problems = find_pairs(data_dir)
    result = ManifestResult(problems=problems, manifest_path=out)
    seen_ids: set[str] = set()
    for audio_path, track_path in _progress(pairs, "manifest"):
        if track_path is None and not include_audio_only:
            problems.append({"path": str(audio_path), "problem": "no blendshape track with the same stem"})
            continue
        try:
            entry = _entry(audio_path, track_path, data_dir, out.parent, cfg)
        except InputError as exc:
            problems.append({"path": exc.path, "problem": exc.problem, "line": exc.line})
            continue
        if entry.id in seen_ids:
            problems.append({"path": str(audio_path), "problem": f"duplicate id {entry.id!r}"})
            continue
        seen_ids.add(entry.id)
        result.entries.append(entry)
    if cfg.split_by == "engine":
        result.entries = engine_split(result.entries, cfg, problems, out.parent)
    from koemorph.io.atomic import write_jsonl

    write_jsonl(out, (dataclasses.asdict(e) for e in result.entries))
    write_jsonl(problems_path(out), problems)
    return result


def demo_origin(audio_path: Path) -> tuple[str | None, str | None]:
    """``(engine, voice)`` from the demo corpus's ``<stem>.phones.json`` beside ``audio_path``.

    Older espeak-only corpora name no engine but an ``espeak_voice``: their engine is ``espeak``.
    ``(None, None)`` without a readable phones file (recordings).
    """
    path = audio_path.with_name(audio_path.stem + ".phones.json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    engine = doc.get("engine") or ("espeak" if "espeak_voice" in doc else None)
    voice = doc.get("voice")
    return (str(engine) if engine else None), (str(voice) if voice else None)


def engine_split(
    entries: list[ManifestEntry], cfg: DataConfig, problems: list[dict], base: Path
) -> list[ManifestEntry]:
    """``data.split_by: engine``: the held-out engine's files -> test, other voices -> train or val.

    The held-out engine is ``data.holdout_engine``, or when empty one of the engines present
    chosen by ``data.split_seed``. The other engines' voices (speaker when no voice), ordered by
    a seeded hash, go to val for the val share of ``data.split_ratios`` (train + val), at least
    one voice when there are two or more; the rest to train. Files with no known engine are
    listed as problems (path: ``base`` / the entry's relative audio path) and left out.
    Raises ValueError naming the key for a holdout engine that no file has.
    """
    known = [e for e in entries if e.engine]
    for e in entries:
        if not e.engine:
            problems.append(
                {
                    "path": os.path.normpath(base / e.audio_path),
                    "problem": (
                        "data.split_by=engine: no engine known for this file (no demo .phones.json beside it)"
                    ),
                }
            )
    engines = sorted({e.engine for e in known})
    holdout = cfg.holdout_engine
    if not holdout and engines:
        holdout = engines[int(hashlib.sha256(f"{cfg.split_seed}".encode()).hexdigest(), 16) % len(engines)]
    if known and holdout not in engines:
        raise ValueError(f"data.holdout_engine: no file was made by {holdout!r} (engines here: {engines})")
    voices = sorted(
        {e.voice or e.speaker for e in known if e.engine != holdout},
        key=lambda v: hashlib.sha256(f"{cfg.split_seed}:{v}".encode()).digest(),
    )
    share = cfg.split_ratios[1] / max(cfg.split_ratios[0] + cfg.split_ratios[1], 1e-12)
    n_val = max(1, round(share * len(voices))) if len(voices) >= 2 else 0
    val = set(voices[:n_val])
    for e in known:
        e.split = "test" if e.engine == holdout else "val" if (e.voice or e.speaker) in val else "train"
    return known


def empty_manifest_message(data_dir: str | Path, result: ManifestResult) -> str:
    """Why a manifest came out empty, naming the folder (for the CLI's error)."""
    if not result.problems:
        return (
            f"{data_dir}: no audio files ({' '.join(AUDIO_EXTENSIONS)}) with blendshape tracks found; "
            "the manifest is empty"
        )
    return (
        f"{data_dir}: no usable audio + track pairs ({len(result.problems)} problem(s), see "
        f"{problems_path(result.manifest_path)}); the manifest is empty"
    )


def problems_path(manifest: str | Path) -> Path:
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + ".problems.jsonl")


def load_manifest(path: str | Path, split: str | None = None, bad: list | None = None) -> list[ManifestEntry]:
    """Read a manifest; paths come back absolute (resolved against the manifest's folder).

    An entry whose id is not a safe group name (:func:`koemorph.data.store.check_id`: no separators,
    no ``..``, no absolute path) raises InputError naming the line, or, when ``bad`` is a list, is
    left out and appended to it as ``(InputError, the line's object)``.
    """
    from koemorph.data.store import check_id

    path = Path(path)
    entries = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                entry = ManifestEntry(**raw)
                entry.audio_path = str((path.parent / entry.audio_path).resolve())
                for key in ("track_path", "transcript_path"):
                    if getattr(entry, key) is not None:
                        setattr(entry, key, str((path.parent / getattr(entry, key)).resolve()))
                check_id(entry.id)
            except (json.JSONDecodeError, TypeError) as exc:
                raise InputError(path, f"bad manifest line ({exc})", line=line_no) from None
            except ValueError as exc:
                if bad is None:
                    raise InputError(path, str(exc), line=line_no) from None
                bad.append((InputError(path, str(exc), line=line_no), raw))
                continue
            if split is None or entry.split == split:
                entries.append(entry)
    return entries


def _progress(items, label: str):
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=len(items))
        for item in items:
            yield item
            progress.advance(task)


def print_manifest_summary(result: ManifestResult, max_problems: int = 20) -> None:
    """Rich table: files and hours per split, then the problems with their reasons."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=escape(f"manifest {result.manifest_path}"))
    for col in ("split", "files", "hours", "speakers"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split in (*SPLITS, None):
        rows = [e for e in result.entries if split is None or e.split == split]
        table.add_row(
            split or "all",
            str(len(rows)),
            f"{sum(e.duration for e in rows) / 3600:.3f}",
            str(len({e.speaker for e in rows})),
        )
    console.print(table)
    if result.problems:
        where_all = escape(str(problems_path(result.manifest_path)))
        console.print(f"[yellow]{len(result.problems)} problem(s)[/] (all in {where_all}):")
        for p in result.problems[:max_problems]:
            where = p["path"] if p.get("line") is None else f"{p['path']}:{p['line']}"
            console.print(f"  {where}: {p['problem']}", highlight=False, markup=False, soft_wrap=True)
        if len(result.problems) > max_problems:
            console.print(f"  ... and {len(result.problems) - max_problems} more")
    else:
        console.print("no problems")
    for split in ("val", "test"):
        if result.entries and not any(e.split == split for e in result.entries):
            console.print(f"[yellow]warning:[/] no {split} files (too few speakers for the split ratios?)")
