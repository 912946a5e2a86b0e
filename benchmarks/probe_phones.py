"""Probe: recognised phones (PocketSphinx allphone) against log-mel as ridge-regression inputs.

``python benchmarks/probe_phones.py /tmp/phones_demo`` on a corpus made by ``koemorph demo-data``
(split folders ``train/ val/ test/`` of voice-disjoint WAVs with ``.jsonl`` tracks and espeak
``.phones.json`` timings). Everything is on the 30 fps grid (``--fps`` to change).

Inputs, per file: :func:`koemorph.features.phones.phone_features` (whole file, batch CMN), the same
from :class:`koemorph.features.phone_stream.PhoneStream` fed ``--chunk-ms`` chunks (live CMN), and the
log-mel (:func:`koemorph.features.mel.log_mel`, normalised with the train split's mean and std).

Ridge: frame t is described by its input's rows t-C..t+C (C = ``--context``, zeros beyond the file
ends; :func:`koemorph.evaluation.baselines.stack_context`) plus a bias; ``(XᵀX + αN I) W = XᵀY``
with the bias unpenalised, α chosen on val by MSE from ``EvaluateConfig.ridge_alphas``, predictions
clipped to [0, 1]. Scores: pooled-frame (micro) mouth-group and closure-channel Pearson r on test
(:func:`koemorph.evaluation.metrics.micro_scores`). "Seen vs new voices": the same ridge fit on the
train voices' ``*_0000`` files only, scored on their ``*_0001`` files and on the test voices.

Also printed: decoding real-time factors (decode seconds / audio seconds, with log-mel's as the
baseline measured in the same run), streaming-vs-whole-file frame agreement and the streaming
latency (audio pushed minus frame time, when each row was returned), and bilabial recall: the
fraction of espeak p/b/m phones with a recognised P/B/M on some grid frame within ±50 ms of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg

from koemorph.config import EvaluateConfig, FeaturesConfig
from koemorph.evaluation.baselines import stack_context
from koemorph.evaluation.metrics import BILABIAL_PHONES, micro_scores
from koemorph.features import phones as ph
from koemorph.features.mel import log_mel
from koemorph.features.phone_stream import PhoneStream
from koemorph.io.audio import load_audio
from koemorph.io.tracks import load_track_for_audio

SPLITS = ("train", "val", "test")
BILABIAL_COLUMNS = [ph.PHONE_INDEX[p] for p in ("P", "B", "M")]
NEAR_S = 0.05  # bilabial recall window each side of the espeak phone


def load_file(wav: Path, cfg: FeaturesConfig, chunk: int, clock: dict) -> dict:
    """One corpus file: targets, features and timings (seconds added to ``clock``)."""
    x = load_audio(wav)
    seconds = x.size / 16000
    t0 = time.perf_counter()
    batch = ph.phone_features(x, cfg)
    t1 = time.perf_counter()
    stream = PhoneStream(cfg.fps)
    t2 = time.perf_counter()  # the stream's model loading is not counted
    rows = [stream.push(x[a : a + chunk]) for a in range(0, x.size, chunk)]
    streamed = np.concatenate([*rows, stream.finish()])
    t3 = time.perf_counter()
    mel = log_mel(x, cfg)
    t4 = time.perf_counter()
    warm = PhoneStream(cfg.fps)  # the same file twice: live CMN settled by the first pass
    first = np.zeros(-(-x.size // 1600) * 1600, np.float32)  # padded to 0.1 s: the repeat starts on a frame
    first[: x.size] = x
    twice = np.concatenate([first, x])
    rows = [warm.push(twice[a : a + chunk]) for a in range(0, twice.size, chunk)]
    k0 = first.size * cfg.fps // 16000
    warmed = np.concatenate([*rows, warm.finish()])[k0 : k0 + len(batch)]
    for key, dt in (("batch", t1 - t0), ("stream", t3 - t2), ("mel", t4 - t3), ("audio", seconds)):
        clock[key] = clock.get(key, 0.0) + dt
    track = wav.with_suffix(".jsonl")
    y = load_track_for_audio(track, seconds, cfg.fps, tolerance_s=0.5)
    phones = json.loads(wav.with_name(wav.stem + ".phones.json").read_text())["phones"]
    return {
        "id": wav.stem,
        "y": y,
        "batch": batch,
        "stream": streamed,
        "warm": warmed,
        "mel": mel,
        "lags": np.asarray(stream.lags_s),
        "phones": phones,
    }


def fit_ridge(xs: list, ys: list, vx: list, vy: list, context: int, alphas) -> np.ndarray:
    """Ridge weights ``[(2C+1) D + 1, 52]`` on train ``xs``/``ys``, alpha chosen by val MSE."""
    dim = (2 * context + 1) * xs[0].shape[1] + 1
    xtx, xty, n = np.zeros((dim, dim)), np.zeros((dim, ys[0].shape[1])), 0
    for x, y in zip(xs, ys):
        a = design(x, context)
        xtx += a.T @ a
        xty += a.T @ y
        n += len(a)
    best, best_mse = None, np.inf
    for alpha in alphas:
        reg = np.full(dim, alpha * n)
        reg[-1] = 0.0
        w = scipy.linalg.cho_solve(scipy.linalg.cho_factor(xtx + np.diag(reg)), xty)
        mse = np.mean(np.concatenate([(predict(w, x, context) - y) ** 2 for x, y in zip(vx, vy)]))
        if mse < best_mse:
            best, best_mse = w, mse
    return best


def design(x: np.ndarray, context: int) -> np.ndarray:
    return np.hstack([stack_context(x, np.arange(len(x)), context), np.ones((len(x), 1))])


def predict(w: np.ndarray, x: np.ndarray, context: int) -> np.ndarray:
    return np.clip(design(x, context) @ w, 0.0, 1.0)


def score(w, xs, ys, context) -> tuple[float, float]:
    """Pooled mouth r and closure r of ``w`` on the files ``xs``/``ys``."""
    s = micro_scores([predict(w, x, context) for x in xs], ys)
    return s["micro/mouth/pearson"], s["micro/closure/pearson"]


def blur(x: np.ndarray, half: int) -> np.ndarray:
    """Triangular blur along time (weights 1..half+1..1, normalised), rows still summing to 1."""
    k = np.concatenate([np.arange(1, half + 2), np.arange(half, 0, -1)]).astype(np.float64)
    k /= k.sum()
    pad = np.pad(x, ((half, half), (0, 0)), mode="edge")
    return np.stack([np.convolve(pad[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)


def inputs(files: list, kind: str, mel_mean, mel_std) -> list:
    if kind == "mel":
        return [(f["mel"] - mel_mean) / mel_std for f in files]
    if kind == "batch+mel":
        return [np.hstack([f["batch"], (f["mel"] - mel_mean) / mel_std]) for f in files]
    if kind == "blur2":
        return [blur(f["batch"], 2) for f in files]
    return [f[kind] for f in files]


def ridge_table(data: dict, context: int, alphas) -> None:
    """Test mouth / closure r per input, and seen-vs-new voices."""
    mel = np.concatenate([f["mel"] for f in data["train"]])
    mean, std = mel.mean(0), mel.std(0) + 1e-6
    ys = {s: [f["y"] for f in data[s]] for s in SPLITS}
    seen_fit = [f for f in data["train"] if f["id"].endswith("_0000")]
    seen_test = [f for f in data["train"] if not f["id"].endswith("_0000")]
    print(f"\nridge ±{context} frames -> 52 channels; test = new voices (pooled r)")
    print(
        f"{'input':<26} {'val r':>6} {'mouth r':>8} {'closure r':>10} | seen r  new r  drop (fit on *_0000)"
    )
    rows = [
        ("phones (whole file)", "batch", "batch"),
        ("phones (streamed)", "stream", "stream"),
        ("fit whole, test streamed", "batch", "stream"),
        ("phones blurred ±2", "blur2", "blur2"),
        ("log-mel", "mel", "mel"),
        ("phones + log-mel", "batch+mel", "batch+mel"),
    ]
    for label, fit_kind, test_kind in rows:
        w = fit_ridge(
            inputs(data["train"], fit_kind, mean, std),
            ys["train"],
            inputs(data["val"], fit_kind, mean, std),
            ys["val"],
            context,
            alphas,
        )
        mouth, closure = score(w, inputs(data["test"], test_kind, mean, std), ys["test"], context)
        val = score(w, inputs(data["val"], test_kind, mean, std), ys["val"], context)[0]
        w2 = fit_ridge(
            inputs(seen_fit, fit_kind, mean, std),
            [f["y"] for f in seen_fit],
            inputs(data["val"], fit_kind, mean, std),
            ys["val"],
            context,
            alphas,
        )
        seen = score(w2, inputs(seen_test, test_kind, mean, std), [f["y"] for f in seen_test], context)[0]
        new = score(w2, inputs(data["test"], test_kind, mean, std), ys["test"], context)[0]
        print(
            f"{label:<26} {val:6.3f} {mouth:8.3f} {closure:10.3f} | {seen:6.3f} {new:6.3f} {seen - new:+6.3f}"
        )


def bilabial_recall(files: list, kind: str, fps: int) -> tuple[float, float, int]:
    """(fraction of espeak p/b/m with a recognised P/B/M within ±NEAR_S, median onset offset s, count)."""
    hits, total, offsets = 0, 0, []
    for f in files:
        is_bilabial = f[kind][:, BILABIAL_COLUMNS].sum(1) > 0.5
        times = np.arange(len(is_bilabial)) / fps
        for seg in f["phones"]:
            if seg["phone"] not in BILABIAL_PHONES:
                continue
            total += 1
            near = is_bilabial & (times >= seg["start"] - NEAR_S) & (times <= seg["end"] + NEAR_S)
            if near.any():
                hits += 1
                offsets.append(times[np.argmax(near)] - seg["start"])
    return hits / max(total, 1), float(np.median(offsets)) if offsets else float("nan"), total


def report_decoding(data: dict, clock: dict, fps: int) -> None:
    files = [f for s in SPLITS for f in data[s]]
    audio = clock["audio"]
    print(f"audio {audio:.1f} s in {len(files)} files")
    print(
        f"RTF whole-file decode {clock['batch'] / audio:.4f}, streamed {clock['stream'] / audio:.4f}, "
        f"log-mel {clock['mel'] / audio:.4f} (decode / log-mel = {clock['batch'] / clock['mel']:.1f}x)"
    )
    agree = np.mean(np.concatenate([f["batch"].argmax(1) == f["stream"].argmax(1) for f in files]))
    per_file = [float(np.mean(f["batch"].argmax(1) == f["stream"].argmax(1))) for f in files]
    lags = np.concatenate([f["lags"] for f in files])
    print(
        f"streamed vs whole file: {agree:.1%} of frames agree (files {min(per_file):.1%} .. "
        f"{max(per_file):.1%}); lag median {np.median(lags) * 1000:.0f} ms, p90 "
        f"{np.percentile(lags, 90) * 1000:.0f} ms, max {lags.max() * 1000:.0f} ms"
    )
    warm = np.mean(np.concatenate([f["batch"].argmax(1) == f["warm"].argmax(1) for f in files]))
    print(f"  streamed after a first pass over the same file (live CMN settled): {warm:.1%} agree")
    early = [f["batch"].argmax(1)[: 2 * fps] == f["stream"].argmax(1)[: 2 * fps] for f in files]
    late = [f["batch"].argmax(1)[2 * fps :] == f["stream"].argmax(1)[2 * fps :] for f in files]
    early, late = np.mean(np.concatenate(early)), np.mean(np.concatenate(late))
    print(f"  first 2 s of each file {early:.1%}, after {late:.1%}")
    sil = np.mean(np.concatenate([f["batch"][:, 0] for f in files]))
    print(f"silence rows {sil:.1%}")
    for kind in ("batch", "stream"):
        recall, offset, n = bilabial_recall(files, kind, fps)
        print(
            f"bilabial recall ({kind}): {recall:.1%} of {n} espeak p/b/m have a recognised P/B/M "
            f"within ±{NEAR_S * 1000:.0f} ms; median onset offset {offset * 1000:+.0f} ms"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("corpus", type=Path)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--context", type=int, default=10)
    p.add_argument("--chunk-ms", type=int, default=100)
    p.add_argument("--lw", type=float, default=None, help="override the decoder's language weight")
    args = p.parse_args(argv)
    if args.lw is not None:
        ph.DECODER_SETTINGS["lw"] = args.lw
    print(f"decoder settings {ph.DECODER_SETTINGS}, chunks {args.chunk_ms} ms, fps {args.fps}")
    cfg = FeaturesConfig(fps=args.fps)
    chunk = 16 * args.chunk_ms
    clock: dict = {}
    data = {
        s: [load_file(w, cfg, chunk, clock) for w in sorted((args.corpus / s).glob("*.wav"))] for s in SPLITS
    }
    if not all(data.values()):
        print(f"{args.corpus}: needs train/, val/ and test/ WAVs (koemorph demo-data)", file=sys.stderr)
        return 2
    report_decoding(data, clock, args.fps)
    ridge_table(data, args.context, EvaluateConfig().ridge_alphas)
    return 0


if __name__ == "__main__":
    sys.exit(main())
