"""``koemorph evaluate PRED_DIR TRUTH_DIR``: score a folder of predicted tracks against true tracks,
with the mean-pose and ridge baselines scored on the same files and frames.

Pairing is by relative path and stem: ``PRED/a/b/x.jsonl`` ↔ ``TRUTH/a/b/x.{jsonl,csv,json}``, with
``TRUTH/a/b/x.wav`` (or .flac/.ogg) as the audio and ``TRUTH/a/b/x.phones.json`` as phone timings.

Alignment: each track is read with :func:`koemorph.io.tracks.read_track` and resampled by timestamp
onto the grid (frame k at k/fps s). The frames scored are ``T = min(pred frames, truth frames,
audio frames)`` where a track's frames are ``grid.num_frames(track_span)`` and the audio's are
``grid.num_frames(duration)`` (when the audio exists); ``trimmed_frames = max(...) - T``
(``trimmed_s`` in seconds). Every trimmed file is named, with what was cut from which file, on the
console (``log``) and in the report.

Silent frames (rest-pose metrics): from ``.phones.json`` pauses when present (phones win: energy
cannot tell a pause from a stop closure); frames no phone covers, or all frames without phones,
are silent when their RMS (one frame period of audio centred on the frame) is at least
``silence_db`` dB below the file's loudest frame. Without audio or phones there are no silence
metrics. Failures (missing prediction, unreadable file) are per-file records; the rest is scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from koemorph import grid
from koemorph.evaluation.metrics import (
    EvaluateConfig,
    aggregate,
    micro_scores,
    score_file,
    segment_frames,
    segment_kind,
)
from koemorph.io.audio import AUDIO_EXTENSIONS
from koemorph.io.tracks import format_of, preferred
from koemorph.io.walk import files_under

METHODS = ("model", "ridge", "mean_pose")
# Baseline metrics copied into per_file.csv as "<method>:<metric>" columns.
REPORT_BASELINE_KEYS = (
    "mouth/pearson",
    "mouth/mae",
    "all/mae",
    "closure/pearson",
    "lip_max_error",
    "closure/recall",
)


@dataclass
class FilePair:
    key: str  # relative path without suffix, posix
    pred: Path | None
    truth: Path | None
    audio: Path | None = None
    phones: Path | None = None


@dataclass
class Evaluation:
    """Everything :mod:`koemorph.evaluation.report` writes. ``per_file[m]``: one metrics dict per scored file
    (same order as ``keys``); ``preds[m]``/``truths``: the scored ``[T, 52]`` arrays, for micro metrics
    and plots; ``rows``: one record per file (scored or failed) with alignment facts."""

    fps: int
    keys: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    per_file: dict = field(default_factory=lambda: {m: [] for m in METHODS})
    preds: dict = field(default_factory=lambda: {m: [] for m in METHODS})
    truth_index: dict = field(default_factory=lambda: {m: [] for m in METHODS})  # into ``truths``
    truths: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)  # one line per file scored on fewer frames
    failures: list[dict] = field(default_factory=list)

    def methods(self) -> list[str]:
        """Methods scored on at least one file (the model always first)."""
        return [m for m in METHODS if self.per_file[m]]

    def summary(self, cfg: EvaluateConfig) -> dict:
        """The aggregate metrics (``metrics.json``): per method the macro mean over files plus ``micro/*``
        (pooled frames / counts), and run-level counts. Baselines are aggregated over the files they
        could be scored on (``<method>.files``)."""
        out: dict = {}
        for m in self.methods():
            rows, truths = self.per_file[m], [self.truths[i] for i in self.truth_index[m]]
            out[m] = {**aggregate(rows), **micro_scores(self.preds[m], truths, cfg.flat_std, rows)}
        scored = [r for r in self.rows if r["status"] == "ok"]
        model = out.get("model", {})
        out.update(
            {
                "files": len(scored),
                "failed_files": len(self.rows) - len(scored),
                "frames": int(sum(r["frames"] for r in scored)),
                "trimmed_frames": int(sum(r["trimmed_frames"] for r in scored)),
                "skipped_flat_channels": model.get("skipped_flat_channels", float("nan")),
                "skipped_flat_channels_micro": model.get("micro/skipped_flat_channels", float("nan")),
                "fps": self.fps,
            }
        )
        return out


def _tracks_under(root: Path) -> dict[str, Path]:
    """The best track (:func:`koemorph.io.tracks.preferred`) per relative path without suffix."""
    found: dict[str, list[Path]] = {}
    for path in files_under(root):
        if format_of(path) is not None:
            found.setdefault(path.relative_to(root).with_suffix("").as_posix(), []).append(path)
    return {k: preferred(v)[0] for k, v in found.items()}


def find_pairs(pred_dir: str | Path, truth_dir: str | Path) -> list[FilePair]:
    """All stems under either folder, sorted; ``pred`` or ``truth`` is None where a side is missing."""
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    preds, truths = _tracks_under(pred_dir), _tracks_under(truth_dir)
    pairs = []
    for key in sorted(set(preds) | set(truths)):
        audio = next((p for s in AUDIO_EXTENSIONS if (p := truth_dir / f"{key}{s}").is_file()), None)
        phones = truth_dir / f"{key}.phones.json"
        pairs.append(
            FilePair(key, preds.get(key), truths.get(key), audio, phones if phones.is_file() else None)
        )
    return pairs


def rms_silence(samples: np.ndarray, n_frames: int, fps: int, below_db: float = 40.0) -> np.ndarray:
    """``[n_frames]`` bool: frames whose RMS over one frame period of audio centred on the frame
    (16 kHz ``samples``) is at least ``below_db`` dB below the loudest frame's."""
    x = np.asarray(samples, dtype=np.float64)
    if n_frames == 0 or x.size == 0:
        return np.zeros(n_frames, dtype=bool)
    half = grid.SAMPLE_RATE // fps // 2
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    centers = grid.frame_centers(n_frames, fps)
    lo, hi = np.clip(centers - half, 0, x.size), np.clip(centers + half + 1, 0, x.size)
    power = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    db = 10 * np.log10(np.maximum(power, 1e-20))
    return db <= db.max() - below_db


def phone_silence(phones: list[dict], n_frames: int, fps: int) -> np.ndarray:
    """``[n_frames]`` int8: 1 in pause segments, 0 in other segments, -1 where no segment lies."""
    out = np.full(n_frames, -1, dtype=np.int8)
    for seg in phones:
        frames = segment_frames(float(seg["start"]), float(seg["end"]), n_frames, fps)
        out[frames] = 1 if segment_kind(seg) == "pause" else 0
    return out


def read_phones(path: Path) -> list[dict]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    phones = data.get("phones") if isinstance(data, dict) else data
    if not isinstance(phones, list):
        raise ValueError(f"{path}: expected {{'phones': [...]}}")
    return phones


def load_pair(pair: FilePair, fps: int, cfg: EvaluateConfig) -> dict:
    """Read and align one pair. Returns ``{pred, truth: [T, 52] float32, silent: [T] bool | None,
    phones: list | None, row: alignment facts, samples: audio or None}``. Raises on unusable input."""
    from koemorph.io.audio import load_audio
    from koemorph.io.tracks import read_track, resample_to_grid, track_span

    if pair.truth is None:
        raise FileNotFoundError(f"{pair.pred}: no truth track with this stem")
    if pair.pred is None:
        raise FileNotFoundError(
            f"{pair.truth}: missing prediction (no {pair.key}.jsonl in the prediction folder)"
        )
    truth_track, pred_track = read_track(pair.truth), read_track(pair.pred)
    n_truth, n_pred = (
        grid.num_frames(track_span(truth_track), fps),
        grid.num_frames(track_span(pred_track), fps),
    )
    samples, lengths = None, [n_pred, n_truth]
    if pair.audio is not None:
        samples = load_audio(pair.audio)
        lengths.append(grid.num_frames_for_samples(len(samples), fps))
    n = min(lengths)
    if n < 3:
        raise ValueError(f"{pair.truth}: only {n} frame(s) to score")
    phones = read_phones(pair.phones) if pair.phones is not None else None
    silent, source = None, "none"
    if phones is not None:
        labels = phone_silence(phones, n, fps)
        silent, source = labels == 1, "phones"
        if samples is not None and (labels < 0).any():
            silent |= (labels < 0) & rms_silence(samples, n, fps, cfg.silence_db)
            source = "phones+rms"
    elif samples is not None:
        silent, source = rms_silence(samples, n, fps, cfg.silence_db), "rms"
    row = {
        "id": pair.key,
        "status": "ok",
        "error": "",
        "pred_frames": n_pred,
        "truth_frames": n_truth,
        "audio_frames": lengths[2] if samples is not None else "",
        "frames": n,
        "trimmed_frames": max(lengths) - n,
        "trimmed_s": round((max(lengths) - n) / fps, 6),
        "silence_source": source,
    }
    return {
        "pred": resample_to_grid(pred_track, n, fps),
        "truth": resample_to_grid(truth_track, n, fps),
        "silent": silent,
        "phones": phones,
        "row": row,
    }


def trim_note(pair: FilePair, row: dict, fps: int) -> str | None:
    """One line naming the files that were longer than the frames scored and by how much (None if
    nothing was trimmed). ``row``: :func:`load_pair`'s alignment facts."""
    n = row["frames"]
    sides = (("prediction", pair.pred, row["pred_frames"]), ("truth", pair.truth, row["truth_frames"]))
    sides += (("audio", pair.audio, row["audio_frames"]),) if row["audio_frames"] != "" else ()
    longer = [f"{name} {path} by {(m - n) / fps:.2f} s ({m - n} frames)" for name, path, m in sides if m > n]
    if not longer:
        return None
    return f"{pair.key}: scored the first {n / fps:.2f} s ({n} frames); trimmed the {'; the '.join(longer)}"


def _baselines(ev: Evaluation, store, cfg: EvaluateConfig, ridge_cache, log):
    """``(mean pose [52] or None, ridge or None, StoreMel or None)`` from ``store``; why not, in notes."""
    ridge = pose = mels = None
    if store is None:
        ev.notes.append("baselines skipped: no --store given")
        return pose, ridge, mels
    from koemorph.evaluation.baselines import StoreMel, fit_ridge, mean_pose

    try:
        pose, mels = mean_pose(store), StoreMel(store)
        if mels.fps != ev.fps:
            ev.notes.append(f"ridge skipped: the store is at {mels.fps} fps, evaluating at {ev.fps}")
        else:
            ridge = fit_ridge(store, cfg, cache=ridge_cache, log=log)
            ev.notes.append(
                f"ridge: alpha {ridge.alpha:g} chosen by {ridge.chosen_by}, context ±{ridge.context} frames"
            )
    except (FileNotFoundError, ValueError, KeyError) as exc:
        ev.notes.append(f"baselines skipped: {exc}")
    return pose, ridge, mels


def _failed(ev: Evaluation, pair: FilePair, exc: Exception) -> None:
    problem = str(exc) if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: {exc}"
    ev.rows.append({"id": pair.key, "status": "error", "error": problem})
    ev.failures.append(
        {"id": pair.key, "pred": str(pair.pred or ""), "truth": str(pair.truth or ""), "problem": problem}
    )


def _score(ev: Evaluation, pair: FilePair, loaded: dict, baselines: tuple, cfg: EvaluateConfig) -> None:
    """Score the model and the baselines on one loaded pair; append to ``ev``."""
    pose, ridge, mels = baselines
    t = len(ev.truths)
    truth, row = loaded["truth"], loaded["row"]
    kwargs = {"silent": loaded["silent"], "phones": loaded["phones"], "cfg": cfg}
    candidates = {"model": loaded["pred"]}
    if pose is not None:
        candidates["mean_pose"] = np.tile(pose, (len(truth), 1))
    if ridge is not None and pair.audio is not None:
        try:
            mel, row["mel_source"] = mels.mel(pair.audio)
            if len(mel) >= len(truth):
                candidates["ridge"] = ridge.predict(mel[: len(truth)])
        except Exception as exc:
            row["mel_source"] = f"error: {exc}"
    for method, pred in candidates.items():
        scores = score_file(pred, truth, ev.fps, **kwargs)
        ev.per_file[method].append(scores)
        ev.preds[method].append(pred)
        ev.truth_index[method].append(t)
        for k, v in scores.items():
            if method == "model":
                row[k] = v
            elif k in REPORT_BASELINE_KEYS:
                row[f"{method}:{k}"] = v
    ev.truths.append(truth)
    ev.keys.append(pair.key)
    ev.rows.append(row)


def evaluate(
    pred_dir: str | Path,
    truth_dir: str | Path,
    *,
    fps: int = 30,
    store: str | Path | None = None,
    cfg: EvaluateConfig | None = None,
    ridge_cache: str | Path | None = None,
    log=None,
) -> Evaluation:
    """Score every pair (see module doc). With ``store``, also the mean pose and the ridge baseline
    (fit on the store's train split, cached at ``ridge_cache``) on the same frames.

    A file scored on fewer frames than one of its prediction, truth and audio has gets a line
    (:func:`trim_note`) in ``ev.trimmed``, passed at once to ``log`` (``callable(str)``), and the
    count goes into ``ev.notes``."""
    cfg = cfg or EvaluateConfig()
    ev = Evaluation(fps=grid.check_fps(fps))
    baselines = _baselines(ev, store, cfg, ridge_cache, log)
    pairs = find_pairs(pred_dir, truth_dir)
    if not pairs:
        ev.notes.append(f"no track files under {pred_dir} or {truth_dir}")
    for pair in pairs:
        try:
            loaded = load_pair(pair, ev.fps, cfg)
        except Exception as exc:  # failures are data: record and go on
            _failed(ev, pair, exc)
            continue
        note = trim_note(pair, loaded["row"], ev.fps)
        if note:
            ev.trimmed.append(note)
            if log:
                log(f"trimmed: {note}")
        _score(ev, pair, loaded, baselines, cfg)
    if ev.trimmed:
        ev.notes.append(
            f"{len(ev.trimmed)} file(s) scored on fewer frames than their prediction, truth or audio has"
            " (evaluation.json: trimmed; per_file.csv: trimmed_s)"
        )
    return ev
