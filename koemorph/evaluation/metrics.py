"""Blendshape-space metrics: prediction vs truth, both ``[T, 52]`` on the same grid, Apple order.

Pure numpy. Every function takes ``pred`` and ``truth`` of equal shape ``[T, 52]`` (weights in
[0, 1], frame ``k`` at ``k / fps`` s); the caller aligns lengths (trims to the shorter) and reports
the trimmed frames. Results are plain floats, ``[52]`` arrays, or dicts with slash names
(``mouth/pearson``). NaN means "not defined for this file" (e.g. no silent frames) and is skipped
by :func:`aggregate`.

Groups (by name, :mod:`koemorph.blendshapes`): ``mouth`` (28 jaw*/mouth*/tongueOut), ``expression``
(24 eye*/brow*/cheek*/nose*), ``all`` (52); ``closure`` = CLOSURE_NAMES; ``upper`` = UPPER_FACE_NAMES.

Definitions are in the docstrings and, for the file-level metrics, in :func:`score_file`.
"""

from __future__ import annotations

import numpy as np

from koemorph import blendshapes as bs
from koemorph.config import EvaluateConfig

GROUPS: dict[str, list[int]] = {
    "mouth": list(bs.MOUTH_INDICES),
    "expression": list(bs.EXPRESSION_INDICES),
    "all": list(range(bs.NUM_BLENDSHAPES)),
}
CLOSURE_INDICES = bs.indices(bs.CLOSURE_NAMES)
UPPER_INDICES = bs.indices(bs.UPPER_FACE_NAMES)
JAW, CLOSE = bs.INDEX["jawOpen"], bs.INDEX["mouthClose"]

BILABIAL_PHONES = frozenset({"p", "b", "m"})
BILABIAL_VISEMES = frozenset({"closed"})
OPEN_VOWEL_VISEMES = frozenset({"ae", "ah", "aw"})  # jaw >= 0.6 in the demo's viseme table
PAUSE_PHONES = frozenset({"_", "sil", "sp", "pau", ""})
PAUSE_VISEMES = frozenset({"rest", "sil"})
# Per-file values that are counts: summed (not averaged) over files by :func:`aggregate`.
COUNT_KEYS = frozenset(
    {
        "frames",
        "trimmed_frames",
        "silence/frames",
        "closure/bilabials",
        "closure/hits",
        "closure/open_vowels",
        "closure/false_closures",
    }
)


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 2:
        raise ValueError(f"pred {p.shape} and truth {y.shape} must be equal [T, C] arrays")
    return p, y


def channel_mae(pred, truth) -> np.ndarray:
    """``[C]`` mean over frames of |pred - truth| (blendshape weight units, 0..1)."""
    p, y = _pair(pred, truth)
    return np.abs(p - y).mean(0) if len(p) else np.full(p.shape[1], np.nan)


def channel_rmse(pred, truth) -> np.ndarray:
    """``[C]`` root mean square over frames of pred - truth (weight units)."""
    p, y = _pair(pred, truth)
    return np.sqrt(((p - y) ** 2).mean(0)) if len(p) else np.full(p.shape[1], np.nan)


def flat_channels(truth, flat_std: float = 1e-3) -> np.ndarray:
    """``[C]`` bool: truth channels whose std over frames is below ``flat_std`` (no signal to correlate)."""
    y = np.asarray(truth, dtype=np.float64)
    return y.std(0) < flat_std if len(y) > 1 else np.ones(y.shape[1], dtype=bool)


def channel_pearson(pred, truth, flat_std: float = 1e-3) -> np.ndarray:
    """``[C]`` Pearson r over frames (unitless, -1..1); NaN where the truth is flat
    (:func:`flat_channels`); 0 where only the prediction is flat (a constant carries no correlation)."""
    p, y = _pair(pred, truth)
    flat = flat_channels(y, flat_std)
    if len(p) < 2:
        return np.full(p.shape[1], np.nan)
    pc, yc = p - p.mean(0), y - y.mean(0)
    sp, sy = np.sqrt((pc**2).mean(0)), np.sqrt((yc**2).mean(0))
    cov = (pc * yc).mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(sp > 1e-12, cov / np.maximum(sp * sy, 1e-300), 0.0)
    return np.where(flat, np.nan, np.clip(r, -1.0, 1.0))


def channel_ccc(pred, truth, flat_std: float = 1e-3) -> np.ndarray:
    """``[C]`` Lin's concordance correlation ``2 cov / (var_p + var_y + (mean_p - mean_y)^2)`` (unitless,
    -1..1): like Pearson but also penalises scale and offset. NaN where the truth is flat."""
    p, y = _pair(pred, truth)
    flat = flat_channels(y, flat_std)
    if len(p) < 2:
        return np.full(p.shape[1], np.nan)
    mp, my = p.mean(0), y.mean(0)
    cov = ((p - mp) * (y - my)).mean(0)
    denom = p.var(0) + y.var(0) + (mp - my) ** 2
    return np.where(flat, np.nan, 2 * cov / np.maximum(denom, 1e-300))


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def group_scores(pred, truth, flat_std: float = 1e-3) -> dict:
    """``{g}/mae``, ``{g}/rmse`` (weight units, mean over the group's channels), ``{g}/pearson`` and
    ``{g}/ccc`` (mean over the group's non-flat channels) for g in mouth / expression / all; plus
    ``closure/pearson`` (CLOSURE_NAMES) and ``skipped_flat_channels`` (count of flat truth channels)."""
    mae, rmse = channel_mae(pred, truth), channel_rmse(pred, truth)
    r, ccc = channel_pearson(pred, truth, flat_std), channel_ccc(pred, truth, flat_std)
    out: dict = {}
    for g, idx in GROUPS.items():
        out[f"{g}/mae"] = _nanmean(mae[idx])
        out[f"{g}/rmse"] = _nanmean(rmse[idx])
        out[f"{g}/pearson"] = _nanmean(r[idx])
        out[f"{g}/ccc"] = _nanmean(ccc[idx])
    out["closure/pearson"] = _nanmean(r[CLOSURE_INDICES])
    out["skipped_flat_channels"] = int(np.isnan(r).sum())
    return out


def lip_max_error(pred, truth) -> float:
    """LVE analogue: mean over frames of the max over mouth channels of |pred - truth| (weight units)."""
    p, y = _pair(pred, truth)
    idx = GROUPS["mouth"]
    return float(np.abs(p[:, idx] - y[:, idx]).max(1).mean()) if len(p) else float("nan")


def upper_face_dynamics_deviation(pred, truth) -> float:
    """FDD analogue: mean over UPPER_FACE_NAMES of |std_t(truth) - std_t(pred)| (weight units).
    Large when the upper face is dead (over-smoothed) or over-active."""
    p, y = _pair(pred, truth)
    if not len(p):
        return float("nan")
    return float(np.abs(y[:, UPPER_INDICES].std(0) - p[:, UPPER_INDICES].std(0)).mean())


def velocity_error(pred, truth, fps: int, channels=None) -> float:
    """Mean over frames and ``channels`` of |Δpred - Δtruth| × fps, Δx_t = x_t - x_{t-1}
    (weight units per second)."""
    p, y = _pair(pred, truth)
    idx = list(range(p.shape[1])) if channels is None else list(channels)
    if len(p) < 2:
        return float("nan")
    return float(np.abs(np.diff(p[:, idx], axis=0) - np.diff(y[:, idx], axis=0)).mean() * fps)


def jitter_ratio(pred, truth, channels=None) -> float:
    """mean|Δ²pred| / mean|Δ²truth| over frames and ``channels`` (unitless): > 1 jittery,
    << 1 over-smoothed, 1 = as lively as the truth. NaN when the truth has no second differences."""
    p, y = _pair(pred, truth)
    idx = list(range(p.shape[1])) if channels is None else list(channels)
    if len(p) < 3:
        return float("nan")
    num = np.abs(np.diff(p[:, idx], n=2, axis=0)).mean()
    den = np.abs(np.diff(y[:, idx], n=2, axis=0)).mean()
    return float(num / den) if den > 1e-12 else float("nan")


def silence_rest(pred, truth, silent) -> dict:
    """Rest pose on silent frames (``silent``: ``[T]`` bool). ``silence/pred_mouth_mean`` and
    ``silence/truth_mouth_mean``: mean mouth-channel weight there (units; "mouth stays open" shows as
    pred > truth); ``silence/mouth_mae``: mean |pred - truth| over mouth channels there;
    ``silence/frames``: how many frames. NaN values when there are no silent frames."""
    p, y = _pair(pred, truth)
    mask = np.asarray(silent, dtype=bool)
    if mask.shape != (len(p),):
        raise ValueError(f"silent mask {mask.shape} does not match {len(p)} frames")
    idx = GROUPS["mouth"]
    n = int(mask.sum())
    if n == 0:
        nan = float("nan")
        return {
            "silence/frames": 0,
            "silence/pred_mouth_mean": nan,
            "silence/truth_mouth_mean": nan,
            "silence/mouth_mae": nan,
        }
    ps, ys = p[mask][:, idx], y[mask][:, idx]
    return {
        "silence/frames": n,
        "silence/pred_mouth_mean": float(ps.mean()),
        "silence/truth_mouth_mean": float(ys.mean()),
        "silence/mouth_mae": float(np.abs(ps - ys).mean()),
    }


def sync_lag_ms(pred_channel, truth_channel, fps: int, window_s: float = 0.2) -> float:
    """Lag in ms (multiple of 1000/fps) within ±``window_s`` that maximises the Pearson correlation of
    ``pred[t]`` with ``truth[t - lag]`` over their overlap. Positive = the prediction is late.
    Ties go to the smallest |lag|. NaN when either signal is flat or too short."""
    p = np.asarray(pred_channel, dtype=np.float64)
    y = np.asarray(truth_channel, dtype=np.float64)
    n = min(len(p), len(y))
    p, y = p[:n], y[:n]
    w = min(int(round(window_s * fps)), n - 3)
    if w < 0 or p.std() < 1e-9 or y.std() < 1e-9:
        return float("nan")
    best, best_lag = -np.inf, 0
    for lag in sorted(range(-w, w + 1), key=abs):
        a, b = (p[lag:], y[: n - lag]) if lag >= 0 else (p[: n + lag], y[-lag:])
        if a.std() < 1e-9 or b.std() < 1e-9:
            continue
        r = float(np.corrcoef(a, b)[0, 1])
        if r > best + 1e-12:
            best, best_lag = r, lag
    return best_lag * 1000.0 / fps


def segment_kind(seg: dict) -> str | None:
    """``bilabial`` (p/b/m or viseme ``closed``), ``open_vowel`` (viseme ae/ah/aw, or a diphthong starting
    with one, e.g. ``ah>ee``), ``pause`` (``_`` / ``rest``), else None."""
    phone, viseme = str(seg.get("phone", "")), str(seg.get("viseme", "") or "")
    if phone in BILABIAL_PHONES or viseme in BILABIAL_VISEMES:
        return "bilabial"
    if viseme.split(">")[0] in OPEN_VOWEL_VISEMES:
        return "open_vowel"
    if phone in PAUSE_PHONES or viseme in PAUSE_VISEMES:
        return "pause"
    return None


def segment_frames(
    start_s: float, end_s: float, n_frames: int, fps: int, slack_frames: int = 0
) -> np.ndarray:
    """Grid frames k with start <= k/fps < end, widened by ``slack_frames`` each side and clipped to
    [0, n_frames); a segment shorter than a frame gets the frame nearest its centre. May be empty
    (segment after the end of the track)."""
    lo = int(np.ceil(start_s * fps - 1e-9)) - slack_frames
    hi = int(np.ceil(end_s * fps - 1e-9)) + slack_frames
    if hi <= lo:
        lo = int(round((start_s + end_s) / 2 * fps))
        hi = lo + 1
    return np.arange(max(lo, 0), min(hi, n_frames))


def _closure_segments(phones: list[dict], n: int, fps: int, slack: int) -> tuple[list, list]:
    """Frame indices of the non-empty bilabial segments (widened by ``slack`` frames each side) and
    of the open-vowel segments (unwidened), each a list of ``[k]`` int arrays."""
    bil, opn = [], []
    for seg in phones:
        kind = segment_kind(seg)
        if kind == "bilabial":
            frames = segment_frames(float(seg["start"]), float(seg["end"]), n, fps, slack)
            if frames.size:
                bil.append(frames)
        elif kind == "open_vowel":
            frames = segment_frames(float(seg["start"]), float(seg["end"]), n, fps)
            if frames.size:
                opn.append(frames)
    return bil, opn


def closure_scores(
    pred, truth, phones: list[dict], fps: int, quantile: float = 0.9, slack_s: float = 0.05
) -> dict:
    """Bilabial closure metrics on lip aperture ``a_t = jawOpen_t - mouthClose_t`` (weight units).

    - τ (``closure/tau``): the ``quantile`` (0.9) of the truth's per-segment min aperture over the
      file's bilabial segments, each segment widened by ``slack_s`` on both sides (so per file,
      calibrated on this speaker's truth).
    - Reference bilabials (``closure/bilabials``): segments where the truth closes (min a ≤ τ).
      ``closure/recall`` = share of them where the prediction closes too (min a ≤ τ in the same window).
    - ``closure/timing_offset_ms``: mean over hits of (first frame with a ≤ τ in pred − the same in
      truth), ms; positive = the prediction closes late.
    - Reference open vowels (``closure/open_vowels``): open-vowel segments (unwidened) where the truth
      opens (max a > τ); ``closure/false_closure_rate`` = share where the prediction's max a ≤ τ.
    All NaN (counts 0) without bilabial segments; false-closure values NaN without open vowels.
    """
    p, y = _pair(pred, truth)
    ap, ay = p[:, JAW] - p[:, CLOSE], y[:, JAW] - y[:, CLOSE]
    bil, opn = _closure_segments(phones, len(p), fps, int(round(slack_s * fps)))
    nan = float("nan")
    out = {
        "closure/tau": nan,
        "closure/recall": nan,
        "closure/timing_offset_ms": nan,
        "closure/false_closure_rate": nan,
        "closure/bilabials": 0,
        "closure/hits": 0,
        "closure/open_vowels": 0,
        "closure/false_closures": 0,
    }
    if not bil:
        return out
    tau = float(np.quantile([ay[f].min() for f in bil], quantile))
    ref = [f for f in bil if ay[f].min() <= tau]
    offsets = []
    for f in ref:
        closed = np.flatnonzero(ap[f] <= tau)
        if closed.size:
            offsets.append((closed[0] - np.flatnonzero(ay[f] <= tau)[0]) * 1000.0 / fps)
    out.update(
        {
            "closure/tau": tau,
            "closure/bilabials": len(ref),
            "closure/hits": len(offsets),
            "closure/recall": len(offsets) / len(ref),
            "closure/timing_offset_ms": float(np.mean(offsets)) if offsets else nan,
        }
    )
    ref_open = [f for f in opn if ay[f].max() > tau]
    if ref_open:
        false = sum(1 for f in ref_open if ap[f].max() <= tau)
        out.update(
            {
                "closure/open_vowels": len(ref_open),
                "closure/false_closures": false,
                "closure/false_closure_rate": false / len(ref_open),
            }
        )
    return out


def score_file(pred, truth, fps: int, *, silent=None, phones=None, cfg: EvaluateConfig | None = None) -> dict:
    """All metrics of one file: :func:`group_scores`, ``lip_max_error`` (LVE analogue),
    ``upper/dynamics_deviation`` (FDD analogue), ``{mouth,expression,all}/velocity_error`` (units/s),
    ``{mouth,expression,all}/jitter_ratio``, ``sync_lag_ms`` (jawOpen), ``silence/*`` when ``silent``
    (``[T]`` bool) is given, ``closure/*`` when ``phones`` (segments ``{phone, start, end, viseme}``, s)
    are given, and ``frames``. ``pred``/``truth``: ``[T, 52]`` at ``fps``."""
    cfg = cfg or EvaluateConfig()
    p, y = _pair(pred, truth)
    out = {"frames": len(p), **group_scores(p, y, cfg.flat_std)}
    out["lip_max_error"] = lip_max_error(p, y)
    out["upper/dynamics_deviation"] = upper_face_dynamics_deviation(p, y)
    for g, idx in GROUPS.items():
        out[f"{g}/velocity_error"] = velocity_error(p, y, fps, idx)
        out[f"{g}/jitter_ratio"] = jitter_ratio(p, y, idx)
    out["sync_lag_ms"] = sync_lag_ms(p[:, JAW], y[:, JAW], fps, cfg.lag_window_s)
    if silent is not None:
        out.update(silence_rest(p, y, silent))
    if phones is not None:
        out.update(closure_scores(p, y, phones, fps, cfg.closure_quantile, cfg.closure_slack_s))
    return out


def aggregate(per_file: list[dict]) -> dict:
    """Macro aggregate over files: the mean over files of each metric, skipping NaN; keys in
    :data:`COUNT_KEYS` (and ``skipped_flat_channels``, as ``skipped_flat_channels_total``) are summed.
    ``files``: how many files were aggregated."""
    out: dict = {"files": len(per_file)}
    keys = sorted({k for row in per_file for k, v in row.items() if isinstance(v, (int, float))})
    for k in keys:
        values = [row[k] for row in per_file if isinstance(row.get(k), (int, float))]
        if k in COUNT_KEYS:
            out[k] = int(np.sum(values))
        else:
            out[k] = _nanmean(values)
            if k == "skipped_flat_channels":
                out["skipped_flat_channels_total"] = int(np.sum(values))
    return out


def micro_scores(
    preds: list, truths: list, flat_std: float = 1e-3, per_file: list[dict] | None = None
) -> dict:
    """Micro aggregates, prefixed ``micro/``: :func:`group_scores` over all files' frames concatenated
    (per-channel Pearson/CCC/MAE over the pooled frames, then the group mean), and, from ``per_file``
    counts, pooled ``micro/closure/recall`` (Σ hits / Σ bilabials) and
    ``micro/closure/false_closure_rate``."""
    if not preds:
        return {}
    scores = group_scores(np.concatenate(preds), np.concatenate(truths), flat_std)
    out = {f"micro/{k}": v for k, v in scores.items()}
    if per_file:
        pooled = (
            ("closure/hits", "closure/bilabials", "closure/recall"),
            ("closure/false_closures", "closure/open_vowels", "closure/false_closure_rate"),
        )
        for num, den, name in pooled:
            d = sum(row.get(den, 0) or 0 for row in per_file)
            out[f"micro/{name}"] = sum(row.get(num, 0) or 0 for row in per_file) / d if d else float("nan")
    return out


def micro_channel_pearson(preds: list, truths: list, flat_std: float = 1e-3) -> np.ndarray:
    """``[52]`` Pearson r per channel over all files' frames concatenated (NaN: flat truth)."""
    return channel_pearson(np.concatenate(preds), np.concatenate(truths), flat_std)
