"""Reference predictors scored beside every model: the mean pose and ridge regression on log-mel.

Both are fit on the **train** split of a feature store made by ``koemorph extract`` (its
``results.jsonl`` and ``stats.json`` sidecars and each group's ``mel`` ``[T, 80]`` and ``targets``
``[T, 52]``, one row per grid frame at the store's fps).

Ridge: frame ``t`` is described by the train-normalised mel (``(mel - mean) / std`` from
``stats.json``) of frames ``t - C .. t + C`` (C = 20: 41 × 80 = 3280 features, zeros beyond the file
ends) plus a bias. Weights solve ``(XᵀX + λI) W = XᵀY`` by Cholesky (the bias is not penalised),
with ``λ = alpha × N`` (N = train frames used) and alpha chosen from a small grid by mean squared
error on the **val** split. XᵀX is accumulated over chunks of 2048 frames, so the stacked features
are never held whole. Predictions are clipped to [0, 1]. A fitted model is saved as ``.npz`` keyed by
a hash of the store's stats, its train/val files and the ridge settings, and reused while that holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from koemorph.evaluation.metrics import EvaluateConfig

CHUNK = 2048  # frames per stacked block


def _store_records(store: str | Path) -> tuple[list, dict]:
    """The store's results (:class:`koemorph.data.store.FileRecord`) and stats."""
    from koemorph.data.store import read_results, read_stats

    return read_results(store), read_stats(store)


def _usable(records: list, split: str) -> list:
    return [r for r in records if r.split == split and {"mel", "targets"} <= set(r.arrays or ())]


def mean_pose(store: str | Path) -> np.ndarray:
    """Mean of the train split's targets over all their frames: ``[52]`` float32 (weights in [0, 1])."""
    from koemorph.data.store import open_arrays

    records, _ = _store_records(store)
    total, n = np.zeros(52), 0
    for rec in _usable(records, "train"):
        targets = open_arrays(store, rec.id)["targets"][:]
        total += targets.astype(np.float64).sum(0)
        n += len(targets)
    if n == 0:
        raise ValueError(f"{store}: no train files with targets")
    return (total / n).astype(np.float32)


def stack_context(z: np.ndarray, frames: np.ndarray, context: int) -> np.ndarray:
    """Rows ``[len(frames), (2C+1) * D]`` float64: ``z[t-C], ..., z[t+C]`` for each t in ``frames``
    (row-major: the oldest frame's D values first), zeros outside ``[0, len(z))``. ``z``: ``[T, D]``."""
    z = np.asarray(z, dtype=np.float64)
    padded = np.zeros((len(z) + 2 * context, z.shape[1]))
    padded[context : context + len(z)] = z
    idx = np.asarray(frames, dtype=np.int64)[:, None] + np.arange(2 * context + 1)[None, :]
    return padded[idx].reshape(len(idx), -1)


@dataclass
class RidgeBaseline:
    """Fitted ridge regression from log-mel context to the 52 blendshapes at ``fps``."""

    weights: np.ndarray  # [(2C+1) * n_mels + 1, 52]; the last row is the bias
    mel_mean: np.ndarray  # [n_mels] dB, train split
    mel_std: np.ndarray  # [n_mels] dB, train split
    context: int  # C: frames each side
    fps: int
    alpha: float  # chosen: lambda = alpha * train_frames
    train_frames: int
    key: str = ""
    val_mse: dict = field(default_factory=dict)  # alpha -> val MSE (weight units^2)
    chosen_by: str = "val"

    def predict(self, mel: np.ndarray) -> np.ndarray:
        """``mel`` ``[T, n_mels]`` (dB, on the grid at ``fps``) -> ``[T, 52]`` float32 in [0, 1]."""
        mel = np.asarray(mel, dtype=np.float64)
        if mel.ndim != 2 or mel.shape[1] != len(self.mel_mean):
            raise ValueError(f"mel must be [T, {len(self.mel_mean)}], got {mel.shape}")
        z = (mel - self.mel_mean) / self.mel_std
        out = np.empty((len(z), self.weights.shape[1]), dtype=np.float32)
        for a in range(0, len(z), CHUNK):
            x = stack_context(z, np.arange(a, min(a + CHUNK, len(z))), self.context)
            out[a : a + len(x)] = x @ self.weights[:-1] + self.weights[-1]
        return np.clip(out, 0.0, 1.0)

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` atomically."""
        from koemorph.io.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                weights=self.weights,
                mel_mean=self.mel_mean,
                mel_std=self.mel_std,
                meta=json.dumps(
                    {
                        "context": self.context,
                        "fps": self.fps,
                        "alpha": self.alpha,
                        "train_frames": self.train_frames,
                        "key": self.key,
                        "val_mse": self.val_mse,
                        "chosen_by": self.chosen_by,
                    }
                ),
            )

    @classmethod
    def load(cls, path: str | Path) -> RidgeBaseline:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return cls(weights=data["weights"], mel_mean=data["mel_mean"], mel_std=data["mel_std"], **meta)


def ridge_key(store: str | Path, cfg: EvaluateConfig) -> str:
    """Hash of the store's stats.json, its train/val files (ids, audio and track hashes) and the ridge
    settings."""
    from koemorph.io.digest import short_hash

    records, stats = _store_records(store)
    files = sorted(
        (r.id, r.split, r.audio_sha256, r.track_sha256) for r in records if r.split in ("train", "val")
    )
    text = json.dumps(
        {
            "stats": json.dumps(stats, indent=1) + "\n",  # the file's text, as extract writes it
            "files": files,
            "context": cfg.ridge_context,
            "alphas": list(cfg.ridge_alphas),
            "max_frames": cfg.ridge_max_frames,
        }
    )
    return short_hash(text)


def _file_frames(n: int, stride: int) -> np.ndarray:
    return np.arange(0, n, stride)


def _normal_equations(store, train: list[dict], mean, std, c: int, stride: int):
    """``(XᵀX, XᵀY, N)`` over every ``stride``-th frame of the train files (features with a bias)."""
    from koemorph.data.store import open_arrays

    dim = (2 * c + 1) * len(mean) + 1
    xtx, xty, n = np.zeros((dim, dim)), np.zeros((dim, 52)), 0
    for rec in train:
        arrays = open_arrays(store, rec.id)
        z, y = (arrays["mel"][:] - mean) / std, arrays["targets"][:].astype(np.float64)
        frames = _file_frames(len(z), stride)
        for a in range(0, len(frames), CHUNK):
            f = frames[a : a + CHUNK]
            x = np.hstack([stack_context(z, f, c), np.ones((len(f), 1))])
            xtx += x.T @ x
            xty += x.T @ y[f]
            n += len(f)
    return xtx, xty, n


def _solve(xtx, xty, n: int, alphas) -> dict:
    """``{alpha: weights [dim, 52]}`` of ``(XᵀX + alpha·N·I) W = XᵀY`` (the bias not penalised)."""
    import scipy.linalg

    solutions = {}
    for alpha in alphas:
        reg = np.full(len(xtx), alpha * n)
        reg[-1] = 0.0  # the bias is not penalised
        factor = scipy.linalg.cho_factor(xtx + np.diag(reg), lower=False, check_finite=False)
        solutions[float(alpha)] = scipy.linalg.cho_solve(factor, xty, check_finite=False)
    return solutions


def _choose_alpha(store, val: list[dict], solutions: dict, mean, std, c: int) -> tuple[float, dict, str]:
    """``(alpha, {alpha: val MSE}, chosen_by)``: the lowest MSE on the val files, else the middle alpha."""
    from koemorph.data.store import open_arrays

    if not val:
        return sorted(solutions)[len(solutions) // 2], {}, "default: no val files"
    sse, count = dict.fromkeys(solutions, 0.0), 0
    for rec in val:
        arrays = open_arrays(store, rec.id)
        z, y = (arrays["mel"][:] - mean) / std, arrays["targets"][:].astype(np.float64)
        for a in range(0, len(z), CHUNK):
            f = np.arange(a, min(a + CHUNK, len(z)))
            x = np.hstack([stack_context(z, f, c), np.ones((len(f), 1))])
            for alpha, w in solutions.items():
                sse[alpha] += float(((np.clip(x @ w, 0, 1) - y[f]) ** 2).sum())
            count += y[f].size
    alpha = min(solutions, key=lambda a: sse[a])
    edge = alpha in (min(solutions), max(solutions))
    return (
        alpha,
        {str(a): s / count for a, s in sse.items()},
        "val (at the edge of the alpha grid)" if edge else "val",
    )


def fit_ridge(
    store: str | Path, cfg: EvaluateConfig | None = None, cache: str | Path | None = None, log=None
) -> RidgeBaseline:
    """Fit (or load from ``cache`` when its key matches) the ridge baseline on the store's train split,
    choosing alpha on its val split (the middle alpha when there is no val file; see ``chosen_by``).
    Uses at most ``cfg.ridge_max_frames`` evenly strided train frames (all frames, with context, feed
    the features). ``log``: optional ``callable(str)`` for progress lines."""
    cfg = cfg or EvaluateConfig()
    key = ridge_key(store, cfg)
    if cache is not None and Path(cache).is_file():
        try:
            cached = RidgeBaseline.load(cache)
            if cached.key == key:
                return cached
        except (OSError, ValueError, KeyError):
            pass
    records, stats = _store_records(store)
    train, val = _usable(records, "train"), _usable(records, "val")
    if not train or "mel" not in stats:
        raise ValueError(f"{store}: no train files with mel and targets")
    mean, std = np.asarray(stats["mel"]["mean"], np.float64), np.asarray(stats["mel"]["std"], np.float64)
    c = cfg.ridge_context
    total = sum(int(r.num_frames) for r in train)
    stride = max(1, -(-total // cfg.ridge_max_frames))
    xtx, xty, n = _normal_equations(store, train, mean, std, c, stride)
    if log:
        log(f"ridge: {len(train)} train files, {n} frames (stride {stride}), {len(xtx)} features")
    solutions = _solve(xtx, xty, n, cfg.ridge_alphas)
    alpha, val_mse, chosen_by = _choose_alpha(store, val, solutions, mean, std, c)
    if log:
        log(f"ridge: alpha {alpha:g} ({chosen_by}); val MSE {val_mse}")
    model = RidgeBaseline(
        solutions[alpha].astype(np.float32),
        mean,
        std,
        c,
        int(stats["features"]["fps"]),
        float(alpha),
        n,
        key,
        val_mse,
        chosen_by,
    )
    if cache is not None:
        model.save(cache)
    return model


class StoreMel:
    """Log-mel for an evaluated WAV: from the store when its audio sha256, frame count and mel
    settings hash match a stored file (:func:`koemorph.inference.features.raw_mel`, the check
    ``koemorph render`` uses), else computed with the store's feature settings. ``fps`` is the
    store's frame rate."""

    def __init__(self, store: str | Path):
        from koemorph.config import FeaturesConfig

        records, stats = _store_records(store)
        self.store = Path(store)
        self.by_sha = {r.audio_sha256: r.id for r in records if "mel" in (r.arrays or ())}
        self.features = FeaturesConfig(**stats["features"])
        self.fps = int(self.features.fps)

    def mel(self, wav: str | Path) -> tuple[np.ndarray, str]:
        """``([T, n_mels] float32 dB, "store" | "computed")``; T = grid.num_frames of the audio."""
        from koemorph.inference.features import raw_mel
        from koemorph.io.audio import load_audio, sha256_file

        sha = sha256_file(wav)
        return raw_mel(self.store, self.by_sha.get(sha), load_audio(wav), sha, self.features)
