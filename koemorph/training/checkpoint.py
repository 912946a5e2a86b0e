"""Training checkpoints: one plain dict per file (nanoGPT style), written atomically.

A checkpoint alone is enough to render: it holds the model weights, the whole config
(``to_dict``), the feature statistics used for normalisation, the frame rate, the blendshape
channel order and the model kind. For ``--resume`` it also holds the optimiser, the LR
schedule, the sampler position ``(epoch, batch)`` (the next batch to run), the RNG states of
python, numpy and torch, the best monitored value and the MLflow run id.

Only tensors and plain values (dicts, lists, tuples, strings, numbers, None) are stored, so
:func:`load_checkpoint` reads with ``torch.load(..., weights_only=True)``: nothing in a checkpoint
file can run code. Checkpoints of earlier versions held numpy's RNG state as a numpy array; they
load too, with numpy array reconstruction (and nothing else) allowed.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import torch

from koemorph.blendshapes import ARKIT_NAMES, ORDER_NAME
from koemorph.config import ADDED_KEYS
from koemorph.io.atomic import atomic_path

FORMAT_VERSION = 2  # 2: numpy RNG state as a tensor and plain values (1: a numpy array)
REQUIRED = ("model", "config", "stats", "fps", "blendshape_order")  # what rendering needs


def rng_state() -> dict:
    """RNG states of python, numpy (global) and torch (CPU, and CUDA when present), as tensors and
    plain values: numpy's MT19937 state is ``{"name", "keys" (int64 tensor [624]), "pos", "has_gauss",
    "gauss"}``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {
        "name": str(name),
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state` (numpy's state also in the tuple form of earlier checkpoints)."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        keys = numpy_state["keys"].numpy().astype(np.uint32)
        numpy_state = (numpy_state["name"], keys, *(numpy_state[k] for k in ("pos", "has_gauss", "gauss")))
    np.random.set_state(numpy_state)
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
    extra: dict | None = None,
) -> Path:
    """Write the checkpoint dict to ``path`` atomically. ``(epoch, batch)`` is the next batch to run;
    ``rng`` the RNG states at that position (default: now); ``extra`` (plain values) is added as is
    (data parallel: ``world_size`` and ``rng_ranks``, every rank's RNG states in rank order)."""
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
        **(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def save_untrained(path: str | Path, model, cfg, stats: dict) -> Path:
    """``model`` saved as a checkpoint of no training run (step 0, a fresh SGD optimiser) with the
    :class:`koemorph.config.Config` ``cfg`` and the feature ``stats``: it renders, streams and exports
    like a trained one (for benchmarks and tests, whose speed does not depend on the weights)."""
    from koemorph.config import to_dict

    return save_checkpoint(
        path,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        schedule={},
        epoch=0,
        batch=0,
        step=0,
        best=None,
        bad_validations=0,
        config=to_dict(cfg),
        stats=stats,
        fps=cfg.features.fps,
        run_id=None,
    )


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, safely (see the module docstring).

    Config keys added since the file was written get the values that applied then
    (:data:`koemorph.config.ADDED_KEYS`).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for one that
    is empty, not a checkpoint, holds anything but tensors and plain values (refused unread: nothing
    in it runs), or whose blendshape order differs from koemorph's.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not a checkpoint: the file is empty")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(_load_error(path, exc)) from None
    missing = [k for k in REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a koemorph checkpoint (no {', '.join(missing)})")
    if ckpt["blendshape_order"] != list(ARKIT_NAMES):
        raise ValueError(f"{path}: blendshape order differs from koemorph's {ORDER_NAME}")
    for (section, key), value in ADDED_KEYS.items():
        if isinstance(ckpt["config"].get(section), dict):
            ckpt["config"][section].setdefault(key, copy.deepcopy(value))
    return ckpt


def _numpy_array_globals() -> list:
    """What unpickling a plain numpy array needs (the numpy RNG state of earlier checkpoints); the
    array module is named under both numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``)."""
    from numpy._core.multiarray import _reconstruct

    dtypes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.float32)]
    return [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *dtypes,
    ]


def _load_error(path: Path, exc: Exception) -> str:
    """The message for a checkpoint ``torch.load`` refused or could not read."""
    text = str(exc)
    names = _unsafe_globals(path)
    if names or "Unsupported global" in text:
        what = f" ({', '.join(names)})" if names else ""
        return (
            f"{path}: refused: it holds Python objects{what} whose loading could run code; a koemorph "
            "checkpoint holds only tensors and plain values. Nothing in the file was run."
        )
    text = text.split("WeightsUnpickler error:")[-1].strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    return f"{path}: not a readable checkpoint ({reason})"


def _unsafe_globals(path: Path) -> list[str]:
    """The Python objects a (zip-format) checkpoint would import beyond the numpy allow-list."""
    allowed = {
        g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _numpy_array_globals()
    }
    try:
        return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - allowed)
    except Exception:  # not a zip-format checkpoint: the load error says what is wrong
        return []


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
