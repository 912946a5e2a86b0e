"""Model references for ``koemorph render``: what ``--model`` names, resolved to a local checkpoint,
and the per-process model cache the workers render with.

``--model`` is a checkpoint path, ``default`` (the model shipped in the package,
:mod:`koemorph.inference.bundled`) or an MLflow artifact URI (``runs:/<run_id>/<path>``,
``models:/<name>/<version>``, ``mlflow-artifacts:/...``); URIs are downloaded into
``OUT_DIR/.render_models/`` (inside the output folder, so that every worker sees them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koemorph import grid
from koemorph.inference import bundled

MODEL_DIR = ".render_models"  # MLflow downloads, inside OUT_DIR (workers must see them)
RUNTIMES = ("torch", "onnx")  # onnx: blocks run by onnxruntime on the checkpoint's export
MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``--model``: local checkpoint path, its sha256, the id written to the manifest."""

    path: str
    sha256: str
    id: str  # MLflow run id, or the checkpoint's sha256 prefix
    source: str  # what the user passed
    fps: int  # the model's native (features) fps
    features: dict  # the checkpoint's FeaturesConfig as a dict
    runtime: str = "torch"  # one of RUNTIMES


def _download(spec: str, out_dir: str | Path, tracking_uri: str | None) -> Path:
    """The one checkpoint (``.pt``; ``best.pt`` preferred) of the MLflow artifact ``spec``, downloaded."""
    from mlflow.artifacts import download_artifacts

    from koemorph.training.tracking import resolve_uri

    dst = Path(out_dir) / MODEL_DIR / re.sub(r"[^A-Za-z0-9._-]+", "_", spec)
    dst.mkdir(parents=True, exist_ok=True)
    local = Path(
        download_artifacts(artifact_uri=spec, dst_path=str(dst), tracking_uri=resolve_uri(tracking_uri))
    )
    if local.is_dir():
        found = sorted(local.rglob("*.pt"))
        found = [p for p in found if p.name == "best.pt"] or found
        if len(found) != 1:
            raise ValueError(f"{spec}: expected one checkpoint (.pt) in the artifact, found {len(found)}")
        local = found[0]
    return local


def resolve_model(
    spec: str, out_dir: str | Path, tracking_uri: str | None = None, runtime: str = "torch"
) -> ModelRef:
    """A checkpoint path, or an MLflow URI (``runs:/<run_id>/<path>``, ``models:/<name>/<version>``)
    downloaded with ``mlflow.artifacts.download_artifacts`` into ``OUT_DIR/.render_models/``, to be
    run by ``runtime`` (:data:`RUNTIMES`).

    Tracking URI: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.
    """
    from koemorph.io.audio import sha256_file
    from koemorph.training.checkpoint import load_checkpoint

    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    run_id = None
    if spec.startswith(MLFLOW_SCHEMES):
        if spec.startswith("runs:/"):
            run_id = spec[len("runs:/") :].strip("/").split("/")[0]
        local = _download(spec, out_dir, tracking_uri)
    else:
        local = Path(bundled.resolve(spec))
        if not local.is_file():
            raise FileNotFoundError(f"{local}: no such checkpoint file")
    ckpt = load_checkpoint(local)
    sha = sha256_file(local)
    run_id = run_id or (ckpt.get("mlflow_run_id") if spec.startswith(MLFLOW_SCHEMES) else None)
    return ModelRef(
        str(local.resolve()),
        sha,
        run_id or sha[:16],
        spec,
        int(ckpt["fps"]),
        dict(ckpt["config"]["features"]),
        runtime,
    )


_MODELS: dict[tuple[str, str], tuple] = {}  # per worker process: (checkpoint path, sha256) -> (model, meta)


def get_model(path: str, sha256: str, threads: int | None = None):
    """The checkpoint's ``(model, meta)``, loaded once per process (cached by path and sha256)."""
    import torch

    from koemorph.training.checkpoint import load_model

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    key = (path, sha256)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker at a time
        _MODELS[key] = load_model(path)
    return _MODELS[key]


def warm_up(path: str, sha256: str, threads: int | None = None) -> None:
    """Worker start-up: load the model (:func:`get_model`) and render 1 s of faint noise without
    writing anything, so that imports, openSMILE objects and the attention kernels are ready
    before the first file (about 2 CPU s otherwise spent in it)."""
    from koemorph.inference.render import RenderJob, file_features
    from koemorph.model.infer import predict_file

    model, meta = get_model(path, sha256, threads)
    samples = np.random.default_rng(0).normal(0.0, 1e-3, grid.SAMPLE_RATE).astype(np.float32)
    job = RenderJob("", "", "", "", "jsonl", meta["fps"], {}, {}, None, 0.0)
    try:
        feats, _ = file_features(samples, "", meta, job)
        predict_file(
            model, feats["mel"], feats["egemaps"], meta["fps"], chunk=job.chunk, pad_mel=feats["mel_pad"]
        )
    except Exception:  # best effort (e.g. openSMILE missing): every file reports its own error record
        pass
