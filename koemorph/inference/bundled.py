"""The model shipped in the package, and the model card every checkpoint can carry.

``koemorph render`` with no ``--model`` (or ``--model default``) renders with
:data:`DEFAULT_CHECKPOINT`, a checkpoint inside the package: trained by ``make default-model``
(``params/default-model.yaml``) on a generated multi-engine corpus, from the log-mel and the
recognised phones only (no eGeMAPS, whose licence forbids products built on models trained on it).
``koemorph stream`` with no ``--model`` uses ``default-live``: the same recipe trained on the phones
a stream decodes (``features.phones_decoding: live``, ``make default-live-model``), so that its
features are its training features and its frames are exactly what ``render --model default-live``
writes.

:func:`package` turns a training checkpoint into a release checkpoint: the weights, config and
feature statistics render needs (no optimiser, RNG or sampler state), plus a ``card``: a plain dict
naming the data (engines and every voice, from the corpus's ``corpus.json``), the training run, the
held-out-engine scores of the recipe (``benchmarks/generalise.py``'s JSON) and the licence.
:func:`describe` returns the card of any checkpoint (for one without a card, what its config and
statistics tell); ``koemorph model-info`` prints it.
"""

from __future__ import annotations

import json
from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
DEFAULT_NAME = "default"  # render's model: whole-file phones
LIVE_NAME = "default-live"  # the stream's model: the same recipe on the phones a stream decodes
DEFAULT_CHECKPOINT = BUNDLED_DIR / "default.pt"
BUNDLED = {DEFAULT_NAME: DEFAULT_CHECKPOINT, LIVE_NAME: BUNDLED_DIR / "default-live.pt"}
CARD_METHODS = ("model", "model+text", "ridge")  # the held-out scores a card shows, per fold
TRANSCRIPT_INPUT = "transcript (NAME.txt, optional)"  # a card's input of a model trained with phones_text
KEEP = ("format_version", "model", "model_kind", "step", "epoch", "config", "stats", "fps")
KEEP += ("blendshape_order", "order_name")
LICENCE = (
    "MIT (the weights, like the code). Trained only on speech synthesised by espeak-ng, Flite and "
    "Festival from generated sentences, with generated blendshape tracks: no recorded person. "
    "Inputs are the log-mel and PocketSphinx phone recognition (BSD); no openSMILE features."
)


def resolve(spec: str | None, default: str = DEFAULT_NAME) -> str:
    """``spec`` as a checkpoint path: a name in :data:`BUNDLED` is a bundled model, None or ``""``
    the bundled model named ``default``."""
    name = default if spec in (None, "") else spec
    return str(BUNDLED[name]) if name in BUNDLED else name


def _voices(corpus: dict, ids: list[str]) -> list[dict]:
    """Every voice behind the training files ``ids`` (store ids: ``split__stem``): ``{voice, engine,
    synth_voice, gender, files}``."""
    origin, voices = corpus["origin"], corpus["voices"]
    counts: dict[str, int] = {}
    for stem in (fid.split("__")[-1] for fid in ids):
        if stem in origin:
            counts[origin[stem]["voice"]] = counts.get(origin[stem]["voice"], 0) + 1
    return [
        {
            "voice": name,
            "engine": voices[name]["engine"],
            "synth_voice": voices[name]["synth_voice"],
            "gender": voices[name]["gender"],
            "files": n,
        }
        for name, n in sorted(counts.items())
    ]


def make_card(ckpt: dict, corpus_dir: str | Path, scores: list[dict] | None, name: str) -> dict:
    """The card of a checkpoint trained on the demo corpus in ``corpus_dir``; ``scores``: the folds
    of ``benchmarks/generalise.py`` (its ``generalise.json``) run with the same recipe, or None."""
    corpus = json.loads((Path(corpus_dir) / "corpus.json").read_text())
    ids = list(ckpt["stats"].get("ids", []))
    held_out = [
        {"held out": f["engine"], **{m: f["methods"][m] for m in CARD_METHODS if m in f["methods"]}}
        for f in scores or []
    ]
    return {
        **_summary(ckpt, name),
        "data": {
            "generator": f"koemorph demo-data --engines {','.join(corpus['engines'])} "
            f"--minutes {corpus['minutes']} --seed {corpus['seed']}",
            "engines": corpus["engines"],
            "voices": _voices(corpus, ids),
        },
        "held_out_engines": held_out,
        "licence": LICENCE,
    }


def package(src: str | Path, dst: str | Path, card: dict) -> Path:
    """Write the release form of checkpoint ``src`` (what rendering reads, plus ``card``) to ``dst``."""
    import torch

    from koemorph.io.atomic import atomic_path
    from koemorph.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(src)
    out = {k: ckpt[k] for k in KEEP if k in ckpt}
    out["mlflow_run_id"], out["card"] = None, card
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        torch.save(out, tmp)
    return dst


def describe(path: str | Path) -> dict:
    """The checkpoint's card; for one without a card, what its config and statistics tell."""
    from koemorph.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    if "card" in ckpt:
        return ckpt["card"]
    return {**_summary(ckpt, Path(path).name), "note": "no model card (`koemorph package-model` adds one)"}


def _summary(ckpt: dict, name: str) -> dict:
    """What any checkpoint tells of itself: inputs, frame rate, model kind, training steps and files."""
    features = ckpt["config"]["features"]
    decoding = features.get("phones_decoding")
    warps = [float(w) for w in features["phones_warps"]]
    how = f" ({decoding})" if decoding in ("live", "adapted") else ""
    how = how or (f" (warps {', '.join(map(str, warps))})" if warps != [1.0] else "")
    inputs = ["log-mel"] + ([f"phones{how}"] if features.get("phones") else [])
    if features.get("phones") and features.get("phones_text"):
        inputs.append(TRANSCRIPT_INPUT)
    inputs += ["eGeMAPS"] if features.get("egemaps") and "egemaps" in ckpt["stats"] else []
    return {
        "name": name,
        "inputs": inputs,
        "fps": int(ckpt["fps"]),
        "model": ckpt["config"]["model"]["kind"],
        "training": {"steps": int(ckpt.get("step", 0)), "files": len(ckpt["stats"].get("ids", []))},
    }


def format_card(card: dict) -> str:
    """The card as plain text: the model, its data (every voice), the held-out scores, the licence."""
    lines = [
        f"model: {card['name']} ({card['model']}, {card['fps']} fps; inputs: {', '.join(card['inputs'])})"
    ]
    lines.append(f"training: {card['training']['steps']} steps on {card['training']['files']} files")
    if "data" in card:
        data = card["data"]
        lines += [f"data: {data['generator']}", f"engines: {', '.join(data['engines'])}", "voices:"]
        lines += [
            f"  {v['voice']:14s} {v['engine']:9s} {v['synth_voice']:24s} {v['gender']}  {v['files']} files"
            for v in data["voices"]
        ]
    if card.get("held_out_engines"):
        keys = ("lip r", "closure r", "closure recall", "false closures")
        lines.append("held-out engines (the same recipe, that engine left out of training):")
        lines.append(f"  {'held out':10s} {'method':10s}" + "".join(f"{k:>16s}" for k in keys))
        for fold in card["held_out_engines"]:
            for method in CARD_METHODS:
                if method in fold:
                    cells = "".join(_cell(fold[method].get(k)) for k in keys)
                    lines.append(f"  {fold['held out']:10s} {method:10s}{cells}")
        if any("model+text" in fold for fold in card["held_out_engines"]):
            lines.append("  (model+text: rendered with each file's words as its transcript, NAME.txt)")
    for key in ("note", "licence"):
        if key in card:
            lines.append(f"{key}: {card[key]}")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:16.3f}" if isinstance(value, (int, float)) else f"{'-':>16s}"
