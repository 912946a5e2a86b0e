"""Training checkpoints: one plain dict per file (nanoGPT style), written atomically.

A checkpoint alone is enough to render: it holds the model weights, the whole config
(``to_dict``), the feature statistics used for normalisation, the frame rate, the blendshape
channel order and the model kind. For ``--resume`` it also holds the optimiser, the LR
schedule, the sampler position ``(epoch, batch)`` (the next batch to run), the RNG states of
python, numpy and torch, the best monitored value and the MLflow run id.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from koemorph.blendshapes import ARKIT_NAMES, ORDER_NAME
from koemorph.io.atomic import atomic_path

FORMAT_VERSION = 1


def rng_state() -> dict:
    """RNG states of python, numpy (global) and torch (CPU, and CUDA when present)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(
    path: str | Path,
    *,
    model,
    optimizer,
    schedule: dict,
    epoch: int,
    batch: int,
    step: int,
    best: float | None,
    bad_validations: int,
    config: dict,
    stats: dict,
    fps: int,
    run_id: str | None,
    rng: dict | None = None,
) -> Path:
    """Write the checkpoint dict to ``path`` atomically. ``(epoch, batch)`` is the next batch to run;
    ``rng`` the RNG states at that position (default: now)."""
    ckpt = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "model_kind": config["model"]["kind"],
        "optimizer": optimizer.state_dict(),
        "schedule": dict(schedule),
        "epoch": int(epoch),
        "batch": int(batch),
        "step": int(step),
        "best": best,
        "bad_validations": int(bad_validations),
        "rng": rng or rng_state(),
        "config": config,
        "stats": stats,
        "fps": int(fps),
        "blendshape_order": list(ARKIT_NAMES),
        "order_name": ORDER_NAME,
        "mlflow_run_id": run_id,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (a trusted local file: full unpickling)."""
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=False)
    if ckpt.get("blendshape_order") != list(ARKIT_NAMES):
        raise ValueError(f"{path}: blendshape order differs from koemorph's {ORDER_NAME}")
    return ckpt


def load_model(path: str | Path, map_location="cpu"):
    """Rebuild the network of a checkpoint for inference: ``(model, meta)``, model in eval mode.

    The model is built with :func:`koemorph.model.build_model` from the checkpoint's own config
    (``config["model"]``, ``config["features"]``), with ``n_mels`` / ``n_egemaps`` taken from the
    stored feature stats (``n_egemaps = 0`` when eGeMAPS was off), and its weights loaded strictly.
    ``meta``: ``config`` (a :class:`koemorph.config.Config`), ``stats`` (the train-split feature
    stats dict), ``fps`` (the features' native frame rate), ``model_kind``, ``mlflow_run_id``,
    ``step``, ``epoch`` and ``sha256`` (hex digest of the checkpoint file).
    """
    from koemorph.config import load_config
    from koemorph.io.audio import sha256_file
    from koemorph.model import build_model

    ckpt = load_checkpoint(path, map_location=map_location)
    cfg = load_config(None, extra=ckpt["config"])
    stats = ckpt["stats"]
    n_mels = len(stats["mel"]["mean"])
    n_egemaps = len(stats["egemaps"]["mean"]) if cfg.features.egemaps and "egemaps" in stats else 0
    if int(ckpt["fps"]) != int(cfg.features.fps):
        raise ValueError(
            f"{path}: checkpoint fps {ckpt['fps']} differs from its features.fps {cfg.features.fps}"
        )
    model = build_model(cfg.model, cfg.features, n_mels=n_mels, n_egemaps=n_egemaps)
    model.load_state_dict(ckpt["model"])
    model.to(map_location).eval()
    meta = {
        "config": cfg,
        "stats": stats,
        "fps": int(ckpt["fps"]),
        "model_kind": ckpt.get("model_kind"),
        "mlflow_run_id": ckpt.get("mlflow_run_id"),
        "step": ckpt.get("step"),
        "epoch": ckpt.get("epoch"),
        "sha256": sha256_file(path),
    }
    return model, meta
