"""Leave-one-engine-out: how the model does on speech engines and voices it never heard.

``python benchmarks/generalise.py --minutes 30 --engines espeak,flite,festival --train-minutes 20``
generates (or reuses) a demo corpus with those engines (``koemorph demo-data --engines``), then,
for every engine in turn as the held-out fold:

1. manifest with ``data.split_by=engine``, ``data.holdout_engine=<engine>``
   (:func:`koemorph.data.manifest.build_manifest`): the engine's files are the test split, the
   other engines' voices train and val;
2. extract (:func:`pipeline.extract.extract`) and train for ``--train-minutes`` wall-clock minutes
   (:func:`koemorph.training.loop.train`, the code of ``koemorph train``; checkpoint ``best.pt``;
   with ``features.phones_text`` the training files' transcripts, the corpus's ``NAME.txt``, are
   read too);
3. render the held-out files (:func:`pipeline.render.render`, the code of ``koemorph render``)
   and score them (:func:`koemorph.evaluation.evaluate.evaluate`, the code of ``koemorph
   evaluate``, with the ridge and mean-pose baselines fit on the fold's train split);
4. for a phone model, render them again with each file's words as its transcript (``NAME.txt``
   from the corpus's ``.phones.json``, ``render.transcripts``): the method ``model+text``; and
   again with the words PocketSphinx recognises as the transcript where it is confident of them
   (``render.recognise_words``, no ``NAME.txt`` read): ``model+words``.

Printed per fold and method (model, model+text, model+words, ridge, mean pose): lip r and closure r
(Pearson r per channel over every held-out frame pooled, mean over the 18 ``LIP_NAMES`` / the 4
``CLOSURE_NAMES`` of :mod:`koemorph.blendshapes`), Pearson r of the mouth and expression groups (mean
over files of the mean over non-flat channels), bilabial closure recall and the false-closure rate on
open vowels (segments from each file's ``.phones.json``, pooled counts;
:func:`koemorph.evaluation.metrics.closure_scores`), and the jawOpen sync lag (ms, mean over
files); the same per recording condition (``clean``, ``noise``, ``room``, ``room+noise``: how the
demo corpus degraded each file, from its ``.phones.json``); then Pearson r per mouth/key channel over
the pooled frames. ``--set KEY=VALUE``
overrides the config of every fold (e.g. ``model.kind=simplified``).
Everything goes under ``--out``: per fold the manifest, store, run, renders and ``generalise.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from koemorph import blendshapes as bs

METHODS = ("model", "model+text", "model+words", "ridge", "mean_pose")
CONDITIONS = ("clean", "noise", "room", "room+noise")  # how the demo corpus degraded a file
ROWS = list(bs.MOUTH_NAMES) + [n for n in bs.KEY_NAMES if n not in bs.MOUTH_NAMES]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_corpus(args) -> Path:
    from koemorph.demo.corpus import generate_corpus

    corpus = Path(args.corpus or Path(args.out) / "corpus")
    t0 = time.perf_counter()
    summary = generate_corpus(
        corpus, minutes=args.minutes, seed=args.seed, workers=args.workers, engines=args.engines
    )
    took = time.perf_counter() - t0
    log(f"corpus {corpus}: {summary['files']} files, {summary['audio minutes']} min, engines")
    log(f"  {summary['engines']} ({took:.0f} s, reused {summary['reused']})")
    return corpus


def held_out_truth(manifest: Path, fold: Path) -> Path:
    """Copy the test split's audio, track and phones into ``fold/truth`` (what render and evaluate
    read), and write each file's words (``text`` of its ``.phones.json``) as its transcript ``.txt``."""
    from koemorph.data.manifest import load_manifest

    truth = fold / "truth"
    if truth.exists():
        shutil.rmtree(truth)
    truth.mkdir(parents=True)
    for e in load_manifest(manifest, split="test"):
        audio = Path(e.audio_path)
        phones = audio.with_name(audio.stem + ".phones.json")
        for src in (audio, Path(e.track_path), phones):
            shutil.copyfile(src, truth / src.name)
        (truth / f"{audio.stem}.txt").write_text(json.loads(phones.read_text())["text"] + "\n")
    return truth


def train_fold(cfg, store: Path, fold: Path, engine: str, args) -> dict:
    """``koemorph train`` on the fold's store; with ``--reuse``, a finished run's checkpoint instead."""
    from koemorph.training.checkpoint import load_checkpoint
    from koemorph.training.loop import train

    best = fold / "run" / "best.pt"
    if args.reuse and best.is_file():
        log(f"[{engine}] train: reusing {best}")
        return {"steps": int(load_checkpoint(best)["step"]), "best_checkpoint": best, "last": best}
    t0 = time.perf_counter()
    res = train(
        cfg,
        store,
        out_dir=fold / "run",
        tracking_uri=f"sqlite:///{(fold / 'mlflow.db').resolve()}",
        max_minutes=args.train_minutes,
        progress=False,
    )
    log(f"[{engine}] train: {res['steps']} steps in {time.perf_counter() - t0:.0f} s, best {res['best']}")
    return res


def run_fold(corpus: Path, engine: str, args) -> dict:
    """Manifest, extract, train, render, evaluate with ``engine`` held out; returns the fold's scores."""
    from koemorph.config import load_config
    from koemorph.data.manifest import build_manifest
    from pipeline.extract import extract

    fold = Path(args.out) / f"holdout-{engine}"
    fold.mkdir(parents=True, exist_ok=True)
    sets = ["data.split_by=engine", f"data.holdout_engine={engine}", *args.set]
    cfg = load_config(args.params or None, overrides=sets)
    stores = Path(args.stores) / f"holdout-{engine}" if args.stores else fold
    stores.mkdir(parents=True, exist_ok=True)
    manifest, store = fold / "manifest.jsonl", stores / "features.zarr"
    result = build_manifest(corpus, manifest, cfg.data)
    counts = {s: sum(e.split == s for e in result.entries) for s in ("train", "val", "test")}
    log(f"[{engine}] manifest: {counts} files, {len(result.problems)} problem(s)")
    ex = extract(manifest, store, cfg, workers=args.workers)
    log(f"[{engine}] extract: {ex.get('error files', 0)} error file(s)")
    res = train_fold(cfg, store, fold, engine, args)
    truth = held_out_truth(manifest, fold)
    checkpoint = str(res["best_checkpoint"] or res["last"])
    scores = render_methods(truth, fold, checkpoint, cfg, store)
    scores |= {"engine": engine, "files": counts, "steps": res["steps"]}
    (fold / "generalise.json").write_text(json.dumps(scores, indent=1, default=float))
    return scores


def render_methods(truth: Path, work: Path, checkpoint: str, cfg, store: Path) -> dict:
    """:func:`render_and_score` into ``work/render``, and for a phone model again with the
    transcripts (``work/render-text``: method ``model+text``) and with recognised words
    (``work/render-recognised``: ``model+words``), merged into one set of scores."""
    scores = render_and_score(truth, work / "render", checkpoint, cfg, store)
    if cfg.features.phones:
        for method, words in (("model+text", "text"), ("model+words", "recognised")):
            also = render_and_score(truth, work / f"render-{words}", checkpoint, cfg, store, words)
            for part in ("methods", "channels"):
                scores[part][method] = also[part]["model"]
            for c, by_method in also["conditions"].items():
                scores["conditions"][c][method] = by_method["model"]
    return scores


def render_and_score(truth: Path, out: Path, checkpoint: str, cfg, store: Path, words: str = "") -> dict:
    """Render ``truth``'s audio into ``out`` and score it (:func:`fold_scores`, plus the evaluation's
    ``notes``). ``words``: ``""`` renders from the audio alone, ``"text"`` reads the transcripts beside
    it, ``"recognised"`` recognises each file's words (``render.recognise_words``)."""
    import dataclasses

    from koemorph.evaluation.evaluate import evaluate
    from pipeline.render import render

    post = dataclasses.replace(cfg.render, transcripts=words == "text", recognise_words=words == "recognised")
    rendered = render(truth, out, checkpoint, fmt="jsonl", post=post, store=store, workers=0)
    if rendered["errors"]:
        log(f"{out}: render errors: {rendered['errors'][:5]}")
    ev = evaluate(
        out,
        truth,
        fps=cfg.features.fps,
        store=store,
        cfg=cfg.evaluate,
        ridge_cache=out.parent / "ridge.npz",
        log=log,
    )
    return fold_scores(ev, cfg.evaluate, truth) | {"notes": ev.notes}


def pooled_r(preds: list, truths: list, names, flat_std: float) -> float:
    """Pearson r per channel of ``names`` over every held-out frame pooled, mean over the non-flat ones."""
    from koemorph.evaluation.metrics import channel_pearson

    r = channel_pearson(np.concatenate(preds), np.concatenate(truths), flat_std)[bs.indices(names)]
    return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


def method_scores(ev, m: str, ecfg, keys: set[str] | None = None) -> dict:
    """Method ``m``'s pooled lip and closure r, per-file group r, closure recall / false closures
    (pooled counts) and sync lag, over the files with these ``keys`` (all by default)."""
    from koemorph.evaluation.metrics import aggregate, micro_scores

    picked = [(j, t) for j, t in enumerate(ev.truth_index[m]) if keys is None or ev.keys[t] in keys]
    if not picked:
        return {"files": 0}
    rows = [ev.per_file[m][j] for j, _ in picked]
    preds, truths = [ev.preds[m][j] for j, _ in picked], [ev.truths[t] for _, t in picked]
    agg = {**aggregate(rows), **micro_scores(preds, truths, ecfg.flat_std, rows)}
    return {
        "files": len(truths),
        "lip r": pooled_r(preds, truths, bs.LIP_NAMES, ecfg.flat_std),
        "closure r": pooled_r(preds, truths, bs.CLOSURE_NAMES, ecfg.flat_std),
        "mouth r": agg.get("mouth/pearson"),
        "expression r": agg.get("expression/pearson"),
        "closure recall": agg.get("micro/closure/recall"),
        "false closures": agg.get("micro/closure/false_closure_rate"),
        "sync lag ms": agg.get("sync_lag_ms"),
    }


def recording_condition(truth: Path, key: str) -> str:
    """How the demo corpus degraded a held-out file (its ``.phones.json``'s ``degradation``):
    ``clean``, ``noise``, ``room`` (reverb) or ``room+noise``."""
    degradation = json.loads((truth / f"{key}.phones.json").read_text()).get("degradation", {})
    parts = [name for name, k in (("room", "rt60_s"), ("noise", "snr_db")) if k in degradation]
    return "+".join(parts) or "clean"


def fold_scores(ev, ecfg, truth: Path) -> dict:
    """Per method: :func:`method_scores` over every held-out file, the same per recording condition
    (:func:`recording_condition`), and pooled r per channel."""
    from koemorph.evaluation.metrics import channel_pearson

    out: dict = {"methods": {}, "conditions": {}, "channels": {}}
    conditions = {c: set() for c in CONDITIONS}
    for key in ev.keys:
        conditions[recording_condition(truth, key)].add(key)
    for m in ev.methods():
        out["methods"][m] = method_scores(ev, m, ecfg)
        for c in CONDITIONS:
            out["conditions"].setdefault(c, {})[m] = method_scores(ev, m, ecfg, conditions[c])
        truths = [ev.truths[i] for i in ev.truth_index[m]]
        r = channel_pearson(np.concatenate(ev.preds[m]), np.concatenate(truths), ecfg.flat_std)
        out["channels"][m] = {n: float(r[bs.INDEX[n]]) for n in ROWS}
    return out


def _cell(v) -> str:
    return f"{v:12.3f}" if isinstance(v, (int, float)) and np.isfinite(v) else f"{'-':>12s}"


def print_fold(s: dict) -> None:
    methods = [m for m in METHODS if m in s["methods"]]
    files = s["methods"][methods[0]]["files"] if methods else 0
    print(f"\n== held out: {s['engine']} ({files} test files; split {s['files']}; {s['steps']} steps)")
    for note in s["notes"]:
        print(f"   {note}")
    print(f"{'group':22s}" + "".join(f"{m:>12s}" for m in methods))
    for key in (
        "lip r",
        "closure r",
        "mouth r",
        "expression r",
        "closure recall",
        "false closures",
        "sync lag ms",
    ):
        print(f"{key:22s}" + "".join(_cell(s["methods"][m][key]) for m in methods))
    print_conditions(s, methods)
    print(f"{'channel (pooled r)':22s}" + "".join(f"{m:>12s}" for m in methods))
    for n in ROWS:
        print(f"{n:22s}" + "".join(_cell(s["channels"][m][n]) for m in methods))


def print_conditions(s: dict, methods: list[str]) -> None:
    keys = ("lip r", "closure r", "closure recall", "false closures")
    print(f"{'recording condition':22s}{'files':>6s}" + "".join(f"{k:>16s}" for k in keys))
    for c, by_method in s.get("conditions", {}).items():
        for m in (m for m in methods if m != "mean_pose" and by_method.get(m, {}).get("files")):
            row = by_method[m]
            print(f"{c + ' ' + m:22s}{row['files']:6d}" + "".join(f"{_cell(row[k]):>16s}" for k in keys))


def print_overall(folds: list[dict]) -> None:
    print("\n== all folds: mean over held-out engines")
    keys = ("lip r", "closure r", "mouth r", "closure recall", "false closures", "sync lag ms")
    print(f"{'fold':14s}{'method':>12s}" + "".join(f"{k:>16s}" for k in keys))
    for s in folds:
        for m in (m for m in METHODS if m in s["methods"]):
            print(f"{s['engine']:14s}{m:>12s}" + "".join(f"{_cell(s['methods'][m][k]):>16s}" for k in keys))
    for m in METHODS:
        rows = [s["methods"][m] for s in folds if m in s["methods"]]
        if rows:
            values = np.array([[np.nan if r[k] is None else r[k] for r in rows] for k in keys], float)
            means = [float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else np.nan for v in values]
            print(f"{'mean':14s}{m:>12s}" + "".join(f"{_cell(v):>16s}" for v in means))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", help="an existing demo corpus (default: generate OUT/corpus)")
    ap.add_argument("--minutes", type=float, default=30.0, help="corpus minutes, shared by the engines")
    ap.add_argument("--engines", default="espeak,flite,festival")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-minutes", type=float, default=20.0, help="wall-clock training per fold")
    ap.add_argument("--folds", default="", help="only these held-out engines (comma-separated)")
    ap.add_argument("--params", default="", help="a recipe (params YAML) for every fold; --set goes on top")
    ap.add_argument("--set", action="append", default=[], help="config override for every fold")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="render a fold's finished run (run/best.pt) again")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/generalise")
    ap.add_argument(
        "--stores",
        default="",
        help="keep the folds' feature stores here (shared by runs with one feature config)",
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    corpus = make_corpus(args)
    engines = json.loads((corpus / "corpus.json").read_text())["engines"]
    chosen = [e for e in engines if not args.folds or e in args.folds.split(",")]
    folds = []
    for engine in chosen:
        folds.append(run_fold(corpus, engine, args))
        print_fold(folds[-1])
    print_overall(folds)
    (Path(args.out) / "generalise.json").write_text(json.dumps(folds, indent=1, default=float))
    return folds


if __name__ == "__main__":
    main()
