"""Held-out voices speaking ordinary English sentences: the folds of ``generalise.py`` on real text.

The demo corpus speaks sentences from a small random grammar ("June should drop Rose past, this
soft mop."), which no language model expects; real speech and TTS lines are ordinary sentences.
``python benchmarks/natural_sentences.py --runs runs/generalise`` takes the folds a
``generalise.py`` run left under ``--runs`` (``holdout-<engine>/run/best.pt``, its store and
manifest) and, for every fold:

1. makes a held-out set in the demo's format (``.wav``, ``.jsonl`` track, ``.phones.json``,
   ``.txt``; :func:`koemorph.demo.render.render_file`, the code of ``koemorph demo-data``, with
   its noise and room degradation): each test voice of the held-out engine (the voices of the
   fold's test split) says ``--files`` files of three consecutive sentences of
   ``natural_sentences.txt`` (60 sentences written for this benchmark), starting at a different
   sentence per voice;
2. renders and scores it as ``generalise.py`` does (:func:`generalise.render_methods`): the
   model from the audio alone, with the true words as transcript (``model+text``), and with the
   words PocketSphinx recognises, where confident, as transcript (``model+words``,
   ``render.recognise_words``),
   beside the ridge and mean-pose baselines fit on the fold's training files;
3. prints the same tables as ``generalise.py``, per recording condition too;
4. with ``--levels`` (dB, e.g. ``0,-10,-20,-30``), renders the set again from the audio alone at
   each other input level (the samples scaled, written as 16-bit WAV: a quieter microphone or
   recording chain) and prints the model's lip r, closure r, closure recall and false closures per
   level beside their difference from 0 dB, measured in the same run.
Everything goes under ``--out`` (default ``RUNS/natural``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from generalise import log, print_fold, print_overall, render_and_score, render_methods

SENTENCES = Path(__file__).with_name("natural_sentences.txt")


def make_set(out: Path, engine: str, seed: int, files: int) -> Path:
    """The held-out engine's test voices saying the sentences, in the demo's format, under
    ``out/<engine>``; files already there are kept (the same seed makes the same bytes)."""
    from koemorph.demo.corpus import FPS, FilePlan
    from koemorph.demo.render import render_file
    from koemorph.demo.voices import split_engine_voices

    sentences = SENTENCES.read_text().splitlines()
    folder = out / engine
    for v, voice in enumerate(split_engine_voices(engine, seed)["test"]):
        for f in range(files):
            first = (3 * f + 11 * v) % len(sentences)
            text = " ".join((sentences * 2)[first : first + 3])
            plan = FilePlan(f"{voice.slug}_s{f:03d}", engine, 100_000 + 1000 * v + f, voice, text)
            if not (folder / f"{plan.id}.txt").is_file():
                render_file(out, seed, plan, FPS)
    return folder


def scaled_set(truth: Path, out: Path, db: float) -> Path:
    """A copy of the set ``truth`` under ``out`` with every WAV's samples scaled by ``db`` decibels
    (clipped to full scale, 16-bit PCM); tracks, phone timings and transcripts copied as they are."""
    import shutil

    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(truth.iterdir()):
        if f.suffix == ".wav":
            x, rate = sf.read(f, dtype="float32")
            sf.write(out / f.name, np.clip(x * 10.0 ** (db / 20.0), -1.0, 1.0), rate, subtype="PCM_16")
        elif f.is_file():
            shutil.copyfile(f, out / f.name)
    return out


def level_scores(truth: Path, work: Path, checkpoint: str, cfg, levels: list[float], scores: dict) -> dict:
    """``{level dB: the model's scores}`` rendering ``truth``'s audio scaled to each of ``levels``
    (0 dB: the fold's own render, from ``scores``)."""
    out = {}
    for db in levels:
        if db == 0:
            out[db] = scores["methods"]["model"]
            continue
        copy = scaled_set(truth, work / f"audio{db:+g}dB", db)
        out[db] = render_and_score(copy, work / f"render{db:+g}dB", checkpoint, cfg, None)["methods"]["model"]
    return out


def print_levels(s: dict) -> None:
    keys = ("lip r", "closure r", "closure recall", "false closures")
    base = s["levels"].get(0.0)
    print(f"\n{'input level':14s}" + "".join(f"{k:>16s}" for k in keys) + "   (difference from 0 dB)")
    for db, row in s["levels"].items():
        diffs = [row[k] - base[k] for k in keys] if base else [np.nan] * len(keys)
        print(
            f"{db:+10g} dB  "
            + "".join(f"{row[k]:16.3f}" for k in keys)
            + "   "
            + " ".join(f"{d:+.3f}" for d in diffs)
        )


def run_fold(runs: Path, out: Path, engine: str, args) -> dict:
    """Render and score one fold's model on the natural-sentence set of its held-out engine."""
    from koemorph.config import load_config

    fold = runs / f"holdout-{engine}"
    checkpoint = fold / "run" / "best.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint}: no finished fold here (run generalise.py --out {runs} first)")
    store = (Path(args.stores) / f"holdout-{engine}" if args.stores else fold) / "features.zarr"
    sets = ["data.split_by=engine", f"data.holdout_engine={engine}", *args.set]
    cfg = load_config(args.params or None, overrides=sets)
    truth = make_set(out / "audio", engine, args.seed, args.files)
    scores = render_methods(truth, out / f"holdout-{engine}", str(checkpoint), cfg, store)
    scores["levels"] = level_scores(
        truth, out / f"holdout-{engine}", str(checkpoint), cfg, args.levels, scores
    )
    steps = json.loads((fold / "generalise.json").read_text())["steps"]
    return scores | {"engine": engine, "files": {"test": len(list(truth.glob("*.wav")))}, "steps": steps}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", required=True, help="a generalise.py --out folder with finished folds")
    ap.add_argument("--folds", default="espeak,flite,festival", help="held-out engines (comma-separated)")
    ap.add_argument("--files", type=int, default=20, help="files per test voice")
    ap.add_argument("--seed", type=int, default=0, help="the corpus seed of the generalise.py run")
    ap.add_argument("--params", default="", help="the recipe the folds were trained with")
    ap.add_argument("--stores", default="", help="generalise.py's --stores, if it had one")
    ap.add_argument("--out", default="", help="default: RUNS/natural")
    ap.add_argument(
        "--levels", default="0", help="input levels in dB to render the model at (e.g. 0,-20,-30)"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="a config override KEY=VALUE (repeatable), e.g. render.match_level=false",
    )
    args = ap.parse_args(argv)
    args.levels = [float(v) for v in args.levels.split(",")]
    runs = Path(args.runs)
    out = Path(args.out or runs / "natural")
    folds = []
    for engine in args.folds.split(","):
        log(f"[{engine}] natural sentences")
        folds.append(run_fold(runs, out, engine, args))
        print_fold(folds[-1])
        if len(args.levels) > 1:
            print_levels(folds[-1])
    print_overall(folds)
    (out / "natural.json").write_text(json.dumps(folds, indent=1, default=float))
    return folds


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
