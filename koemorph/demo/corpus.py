"""``koemorph demo-data``: a seeded, byte-reproducible paired corpus of speech and ARKit tracks.

Layout under ``out_dir``::

    corpus.json                     summary: seed, minutes, engines, version, files/voices/seconds per
                                    split, each voice's settings and each file's engine and voice
    <split>/<voice>_<nnnn>.wav      16 kHz mono PCM16 speech (espeak-ng, flite or festival; some
                                    with noise/room)
    <split>/<voice>_<nnnn>.jsonl    one line per 30 fps grid frame: {"timestamp", "blendshapes"[52]}
    <split>/<voice>_<nnnn>.phones.json   phone timings (seconds on the final audio) and visemes
    <split>/<voice>_<nnnn>.txt      the words it says (its transcript, UTF-8, one line)

Splits are by voice (val/test voices never appear in train); every engine gets an equal share
of the minutes and has voices in every split. The whole plan (voices, texts, per-file seeds) is
made up front from the seed; the files are then synthesised in shards, each in a fresh spawned
process making the same engine calls in the same order, so the bytes do not depend on
``workers`` or on what ran before.
"""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from koemorph.data.manifest import SPLITS
from koemorph.demo.engines import check_engines, parse_engines
from koemorph.demo.voices import Voice, split_engine_voices
from koemorph.io.atomic import atomic_write_text

GENERATOR_VERSION = "1"
FPS = 30
SPLIT_SHARE = {"train": 0.7, "val": 0.15, "test": 0.15}
FILE_SECONDS = (4.0, 12.5)  # planned speech per file, before padding
SHARD_FILES = 8  # files per shard (one fresh process each)
SUFFIXES = (".wav", ".jsonl", ".phones.json", ".txt")
MADE = SUFFIXES[:3]  # synthesised together; a missing ".txt" (corpora made before them) is written alone


@dataclass(frozen=True)
class FilePlan:
    """One file to make: everything the worker needs, decided in the parent from the seed."""

    id: str
    split: str
    index: int  # global file number: the per-file RNG stream
    voice: Voice
    text: str


def plan_corpus(
    minutes: float, seed: int, engines=("espeak",)
) -> tuple[dict[str, list[Voice]], list[FilePlan]]:
    """Voices per split and the ordered list of files (at least one per split and engine).

    Engines are planned one after the other, each with ``minutes / len(engines)``; with
    ``engines=("espeak",)`` the plan is the espeak-only corpus of earlier versions.
    """
    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes!r}")
    from koemorph.demo.text import utterance

    voices: dict[str, list[Voice]] = {split: [] for split in SPLITS}
    text_rng = random.Random(f"koemorph-demo-text-{seed}")
    plans: list[FilePlan] = []
    for engine, split in ((e, s) for e in engines for s in SPLITS):
        split_pool = split_engine_voices(engine, seed)[split]
        voices[split] += split_pool
        budget, planned, count = SPLIT_SHARE[split] * minutes * 60.0 / len(engines), 0.0, {}
        while planned < budget or planned == 0.0:
            voice = split_pool[sum(count.values()) % len(split_pool)]
            seconds = text_rng.uniform(*FILE_SECONDS)
            n_words = max(4, round(seconds * voice.rate / 60.0 * 0.8))
            number = count.get(voice.slug, 0)
            count[voice.slug] = number + 1
            plans.append(
                FilePlan(f"{voice.slug}_{number:04d}", split, len(plans), voice, utterance(text_rng, n_words))
            )
            planned += seconds
    return voices, plans


def shard_plans(plans: list[FilePlan]) -> list[list[FilePlan]]:
    """Group files by voice (keeping plan order), then cut into chunks of SHARD_FILES."""
    by_voice: dict[str, list[FilePlan]] = {}
    for p in plans:
        by_voice.setdefault(p.voice.slug, []).append(p)
    return [
        files[i : i + SHARD_FILES] for files in by_voice.values() for i in range(0, len(files), SHARD_FILES)
    ]


def _shard_worker(out_dir: str, seed: int, shard: list[FilePlan]) -> list[dict]:
    """Run in a fresh process: synthesise and write every file of one shard, in order."""
    from koemorph.demo.render import render_file

    return [render_file(Path(out_dir), seed, plan, FPS) for plan in shard]


def _matching_summary(path: Path, seed: int, minutes: float, engines: tuple[str, ...]) -> dict | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (meta.get("seed"), meta.get("minutes"), meta.get("version"), meta.get("engines", ["espeak"])) != (
        seed,
        float(minutes),
        GENERATOR_VERSION,
        list(engines),
    ):
        return None
    for split, ids in meta.get("files", {}).items():
        for file_id in ids:
            if not all((path.parent / split / f"{file_id}{s}").is_file() for s in MADE):
                return None
    return meta


def _summary(meta: dict, out_dir: Path, seconds: float, reused: bool) -> dict:
    out = {
        "out_dir": str(out_dir),
        "seed": meta["seed"],
        "engines": ",".join(meta.get("engines", ["espeak"])),
        "files": sum(len(v) for v in meta["files"].values()),
    }
    for split in SPLITS:
        out[f"{split} files"] = len(meta["files"][split])
        out[f"{split} voices"] = " ".join(meta["splits"][split]["voices"])
    out["audio minutes"] = round(meta["total_seconds"] / 60.0, 3)
    out["seconds taken"] = round(seconds, 2)
    out["reused"] = reused
    return out


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete generated-looking files in the split folders that the new plan does not make."""
    for split in SPLITS:
        folder = out_dir / split
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if f.is_file() and f.name.endswith(SUFFIXES) and f"{split}/{f.name}" not in keep:
                f.unlink()


def _corpus_meta(seed: int, minutes: float, engines, voices, plans, results) -> dict:
    """The ``corpus.json`` document (see the module docstring)."""
    by_id = {r["id"]: r for r in results}
    return {
        "generator": "koemorph.demo",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "minutes": float(minutes),
        "engines": list(engines),
        "fps": FPS,
        "sample_rate": 16000,
        "total_seconds": round(sum(r["seconds"] for r in results), 3),
        "splits": {
            split: {
                "files": sum(p.split == split for p in plans),
                "voices": [v.slug for v in voices[split] if any(p.voice.slug == v.slug for p in plans)],
                "seconds": round(sum(by_id[p.id]["seconds"] for p in plans if p.split == split), 3),
            }
            for split in SPLITS
        },
        "voices": {
            v.slug: v.to_dict() for split in SPLITS for v in voices[split] if any(p.voice == v for p in plans)
        },
        "files": {split: [p.id for p in plans if p.split == split] for split in SPLITS},
        "origin": {p.id: {"engine": p.voice.engine, "voice": p.voice.slug} for p in plans},
        "unknown_phones": sorted({u for r in results for u in r["unknown_phones"]}),
    }


def generate_corpus(out_dir, *, minutes: float, seed: int, workers: int = 2, engines=("espeak",)) -> dict:
    """Generate (or reuse) the demo corpus in ``out_dir``; returns a summary dict for the CLI.

    ``minutes`` is the planned speech time (actual audio is reported, it differs by a few %),
    shared equally by ``engines`` (names from :data:`koemorph.demo.engines.ENGINES`, or a
    comma-separated string). Same ``seed``, ``minutes`` and ``engines`` -> the same bytes in
    every file, for any ``workers`` >= 1. An engine that is not installed raises
    :class:`koemorph.demo.engines.EngineMissing` naming what to install, before anything is written.
    If ``out_dir/corpus.json`` already matches seed, minutes, engines and generator version and
    all its files exist, nothing is redone.
    """
    t0 = time.perf_counter()
    engines = parse_engines(engines)
    check_engines(engines)
    out_dir = Path(out_dir)
    marker = out_dir / "corpus.json"
    meta = _matching_summary(marker, int(seed), minutes, engines)
    if meta is not None:
        for plan in plan_corpus(float(minutes), int(seed), engines)[1]:
            transcript = out_dir / plan.split / f"{plan.id}.txt"
            if not transcript.is_file():
                atomic_write_text(transcript, plan.text + "\n")
        return _summary(meta, out_dir, time.perf_counter() - t0, reused=True)
    if marker.exists():
        marker.unlink()

    voices, plans = plan_corpus(float(minutes), int(seed), engines)
    for split in SPLITS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, int(workers)), mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_shard_worker, str(out_dir), int(seed), shard) for shard in shard_plans(plans)]
        for fut in futures:
            results.extend(fut.result())
    _remove_stale(out_dir, {f"{p.split}/{p.id}{s}" for p in plans for s in SUFFIXES})
    meta = _corpus_meta(seed, minutes, engines, voices, plans, results)
    atomic_write_text(marker, json.dumps(meta, indent=1) + "\n")
    return _summary(meta, out_dir, time.perf_counter() - t0, reused=False)
