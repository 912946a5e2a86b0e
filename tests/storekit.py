"""A small real feature store for the sampling and training tests.

Generated pairs: a voiced tone whose loudness follows a random syllable envelope (about 5 per
second), and ARKit targets derived from that envelope (jaw opens with loudness, lips close in
pauses, periodic blinks), so a model can learn them from the mel. The store is built with the
real ``pipeline.extract.extract`` (Dask LocalCluster, openSMILE when ``egemaps``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from koemorph import blendshapes as bs
from koemorph import grid
from koemorph.config import load_config
from koemorph.data.manifest import build_manifest
from koemorph.io.tracks import write_jsonl_track


def write_pair(root: Path, rel: str, seconds: float, seed: int, fps: int = 30) -> None:
    sr = grid.SAMPLE_RATE
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    knots_t = np.arange(0, seconds + 0.4, 0.2)
    knots = rng.uniform(0, 1, len(knots_t)) ** 2 * (rng.uniform(0, 1, len(knots_t)) > 0.25)
    env = np.interp(t, knots_t, knots)
    f0 = 120 + 20 * seed
    voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3, 4))
    audio = (0.25 * env * voice + 0.002 * rng.standard_normal(n)).astype(np.float32)
    path = root / f"{rel}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype="PCM_16")
    frames = grid.num_frames(seconds, fps)
    e = np.interp(grid.frame_times(frames, fps), knots_t, knots)
    values = np.full((frames, 52), 0.05, np.float32)
    values[:, bs.INDEX["jawOpen"]] = 0.9 * e
    values[:, bs.INDEX["mouthClose"]] = 0.6 * (1 - e)
    values[:, bs.INDEX["mouthPucker"]] = 0.4 * e**2
    values[:, bs.INDEX["mouthSmileLeft"]] = 0.2 + 0.1 * e
    values[:, bs.INDEX["eyeBlinkLeft"]] = (np.arange(frames) % 97 < 5) * 0.9
    values[:, bs.INDEX["browInnerUp"]] = 0.1 + 0.4 * e
    write_jsonl_track(root / f"{rel}.jsonl", np.clip(values, 0, 1), fps)


def build_store(
    tmp: Path, files, egemaps: bool = False, fps: int = 30, workers: int = 1, overrides=()
) -> Path:
    """``files``: ``[(split, seconds), ...]``; ``overrides``: more ``--set`` style config values.
    Returns the store path (``tmp/features.zarr``)."""
    from pipeline.extract import extract

    data = tmp / "data"
    for i, (split, seconds) in enumerate(files):
        write_pair(data, f"{split}/spk{i}_{i:03d}", seconds, seed=i, fps=fps)
    cfg = load_config(None, [f"features.egemaps={str(egemaps).lower()}", f"features.fps={fps}", *overrides])
    manifest = tmp / "m.jsonl"
    build_manifest(data, manifest, cfg.data)
    store = tmp / "features.zarr"
    summary = extract(manifest, store, cfg, workers=workers)
    assert summary["error files"] == 0, summary
    return store
