"""ONNX export of a checkpoint's block model, and whole-file inference on the exported graph.

The graph is one inference *block* (see :mod:`koemorph.model.windows` for C, L, E): inputs

* ``mel`` ``[1, S+C-1+L, n_mels]`` float32: normalised log-mel, file frames ``[a-(C-1), a+S+L)``
  (frames outside the file hold the normalised silence ``pad_mel`` of the metadata);
* ``egemaps`` ``[1, S+E-1, 88]`` float32 (only when the model uses eGeMAPS): file frames
  ``[a-(E-1), a+S)``, 0 outside the file;
* ``positions`` ``[1, n]`` int64: output positions in ``[0, S)`` (``0 .. S-1`` for a whole block);
* ``state`` ``[1, 52]`` float32 and ``reset`` ``[1]`` float32 (only when the model smooths): the
  previous block's last smoothed frame, and 1.0 at a file start (``state`` is then ignored and the
  smoothing starts from the block's first raw frame, as in PyTorch);

and one output ``blendshapes`` ``[1, n, 52]`` float32 in [0, 1], Apple order. ``S`` (and so every
time length) is a dynamic axis. Whole-file inference (:func:`predict_file_onnx`) cuts blocks of
``chunk`` frames exactly as :func:`koemorph.model.infer.predict_file` does and carries ``state``.

The graph is traced through the models' generic attention path (the dense shortcut of
:mod:`koemorph.model.dense` and the emotion stream's distinct-window path branch on data, which a
static graph cannot); it computes the same function up to float rounding. Only the block model is
exported: there is no per-chunk streaming step to export.

Metadata (``metadata_props``, JSON strings): ``channels`` (52 names), ``fps``, ``spans``
(C, L, E, step in frames), ``features`` (the checkpoint's feature config), ``stats`` (train-split
normalisation stats), ``pad_mel`` (``[n_mels]``), ``model_kind``, ``smoothing``, ``egemaps``,
``checkpoint_sha256``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from koemorph import blendshapes
from koemorph.features.normalise import frame_pad
from koemorph.model.windows import Spans, window

OPSET = 17


class BlockGraph(nn.Module):
    """The exported function: ``(mel, [egemaps], positions, [state, reset]) -> blendshapes [1, n, 52]``.

    Runs the model without its own smoothing and applies the smoothing recursion in closed form
    (``y_t = sum_{s<=t} a c^(t-s) x_s + c^(t+1) y_{-1}``, ``c = 1 - a``, ``y_{-1}`` = ``state`` or,
    at a reset, ``x_0``) as one ``[n, n]`` matmul, which has no Python loop to unroll.
    """

    def __init__(self, model: nn.Module, use_egemaps: bool):
        super().__init__()
        self.model, self.use_egemaps = model, use_egemaps
        self.smooths = getattr(model, "smoothing", None) is not None

    def forward(self, mel, *rest):
        rest = list(rest)
        egemaps = rest.pop(0) if self.use_egemaps else None
        positions = rest.pop(0)
        raw = self.model(mel, egemaps, positions, smooth=False)["raw"]  # [1, n, 52]
        if not self.smooths:
            return raw
        state, reset = rest
        a = self.model.smoothing.alpha()
        t = torch.arange(raw.shape[1], device=raw.device).to(raw.dtype)
        lag = t[:, None] - t[None, :]
        weights = torch.where(lag >= 0, a * (1 - a) ** lag.clamp(min=0), torch.zeros_like(lag))
        prev = reset[:, None] * raw[:, 0] + (1 - reset[:, None]) * state  # [1, 52]
        return torch.matmul(weights, raw) + ((1 - a) ** (t + 1))[:, None] * prev[:, None, :]


def _metadata(model, meta: dict, use_egemaps: bool) -> dict[str, str]:
    cfg, stats = meta["config"].features, meta["stats"]
    pad = frame_pad(stats, cfg)
    return {
        "channels": json.dumps(list(blendshapes.ARKIT_NAMES)),
        "fps": json.dumps(int(meta["fps"])),
        "spans": json.dumps(dataclasses.asdict(model.spans)),
        "features": json.dumps(dataclasses.asdict(cfg)),
        "stats": json.dumps(stats),
        "pad_mel": json.dumps([float(v) for v in pad]),
        "model_kind": json.dumps(getattr(model, "kind", "")),
        "smoothing": json.dumps(getattr(model, "smoothing", None) is not None),
        "egemaps": json.dumps(use_egemaps),
        "checkpoint_sha256": json.dumps(meta.get("sha256")),
    }


def _example(model, use_egemaps: bool, span: int):
    """Trace inputs for a block of ``span`` outputs, and their names and dynamic axes."""
    spans: Spans = model.spans
    width = model.n_mels + model.n_phones  # the frame input: mel bins (then phone shares)
    names, inputs = ["mel"], [torch.zeros(1, span + spans.context - 1 + spans.lookahead, width)]
    axes = {"mel": {1: "mel_frames"}, "blendshapes": {1: "outputs"}}
    if use_egemaps:
        names.append("egemaps")
        inputs.append(torch.zeros(1, span + spans.emotion_context - 1, model.n_egemaps))
        axes["egemaps"] = {1: "egemaps_frames"}
    names.append("positions")
    inputs.append(torch.arange(span)[None])
    axes["positions"] = {1: "outputs"}
    if getattr(model, "smoothing", None) is not None:
        names += ["state", "reset"]
        inputs += [torch.zeros(1, blendshapes.NUM_BLENDSHAPES), torch.ones(1)]
    gen = torch.Generator().manual_seed(0)
    for name, x in zip(names, inputs):
        if name in ("mel", "egemaps", "state"):
            x.normal_(generator=gen)
    return names, tuple(inputs), axes


def export_model(model: nn.Module, meta: dict, out: str | Path, span: int = 300) -> Path:
    """Write ``model`` (from :func:`koemorph.training.checkpoint.load_model`, with its ``meta``) as
    an ONNX graph of one block to ``out`` (see the module docstring); returns ``out``.

    ``span`` is the block length of the trace (any length runs afterwards); it must exceed the mel
    window so that the trace takes the attention path meant for long blocks.
    """
    import onnx

    if getattr(getattr(model, "mel_stream", None), "overlap", 0):
        raise ValueError(
            "model.band_overlap > 0 cannot be exported: its overlapping band split (unfold) has no "
            "ONNX form with dynamic lengths; train with model.band_overlap: 0"
        )
    use_egemaps = bool(meta["config"].features.egemaps and "egemaps" in meta["stats"])
    use_egemaps = use_egemaps and getattr(model, "n_egemaps", 0) > 0
    span = max(span, model.spans.mel_window + 2)
    names, inputs, axes = _example(model, use_egemaps, span)
    graph = BlockGraph(model, use_egemaps).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    # grad on: the models take their generic (traceable) attention path; nothing is trained
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that hold for every block
        torch.onnx.export(
            graph,
            inputs,
            str(tmp),
            input_names=names,
            output_names=["blendshapes"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    for key, value in _metadata(model, meta, use_egemaps).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """``koemorph export``: load ``checkpoint`` and write its block graph to ``out`` (``.onnx``)."""
    from koemorph.training.checkpoint import load_model

    model, meta = load_model(checkpoint)
    return export_model(model, meta, out)


@dataclasses.dataclass
class OnnxModel:
    """An onnxruntime session on an exported graph and its metadata (decoded from JSON)."""

    session: object
    meta: dict

    @property
    def spans(self) -> Spans:
        return Spans(**self.meta["spans"])


def load_onnx(path: str | Path, threads: int | None = None) -> OnnxModel:
    """Open an exported graph with onnxruntime (CPU); ``threads`` intra-op threads (None: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    raw = session.get_modelmeta().custom_metadata_map
    if "spans" not in raw or "fps" not in raw:
        raise ValueError(f"{path}: not a koemorph export (no spans/fps metadata)")
    return OnnxModel(session, {k: json.loads(v) for k, v in raw.items()})


def predict_file_onnx(
    model: OnnxModel, mel, egemaps, fps: int, chunk: int = 512, pad_mel=None, pad_egemaps=0.0
) -> np.ndarray:
    """:func:`koemorph.model.infer.predict_file` on the exported graph: ``[T, 52]`` float32.

    ``mel`` ``[T, n_mels]`` and ``egemaps`` ``[T, 88]`` (or None) normalised, on the grid at ``fps``;
    ``pad_mel`` defaults to the metadata's normalised silence. Blocks of ``chunk`` output frames,
    the smoothing state carried from block to block (reset at frame 0 only).
    """
    spans, meta = model.spans, model.meta
    if int(fps) != spans.fps:
        raise ValueError(f"features at {fps} fps but the exported model was built for {spans.fps} fps")
    pad_mel = np.asarray(meta["pad_mel"], np.float32) if pad_mel is None else pad_mel
    mel = np.asarray(mel, np.float32)
    use_egemaps = bool(meta["egemaps"]) and egemaps is not None
    if meta["egemaps"] and egemaps is None:
        raise ValueError("the exported model needs eGeMAPS features, got None")
    n = mel.shape[0]
    result = np.zeros((n, blendshapes.NUM_BLENDSHAPES), np.float32)
    state = np.zeros((1, blendshapes.NUM_BLENDSHAPES), np.float32)
    for a in range(0, n, chunk):
        span = min(chunk, n - a)
        feed = {"mel": window(mel, *spans.mel_frames(a, span), pad_mel)[None]}
        if use_egemaps:
            e = window(np.asarray(egemaps, np.float32), *spans.egemaps_frames(a, span), pad_egemaps)
            feed["egemaps"] = e[None]
        feed["positions"] = np.arange(span, dtype=np.int64)[None]
        if meta["smoothing"]:
            feed["state"], feed["reset"] = state, np.array([1.0 if a == 0 else 0.0], np.float32)
        y = model.session.run(["blendshapes"], feed)[0]
        result[a : a + span] = y[0]
        state = y[:, -1].astype(np.float32)
    return result


_SESSIONS: dict[str, OnnxModel] = {}  # per process: checkpoint sha256 -> session on its export


def session_for(model: nn.Module, meta: dict, threads: int | None = None) -> OnnxModel:
    """The onnxruntime session of a loaded checkpoint (``render --runtime onnx``): exported once per
    process into a temporary folder, keyed by the checkpoint's sha256."""
    key = str(meta["sha256"])
    if key not in _SESSIONS:
        _SESSIONS.clear()
        with tempfile.TemporaryDirectory(prefix="koemorph-onnx-") as tmp:
            path = export_model(model, meta, Path(tmp) / "model.onnx")
            _SESSIONS[key] = load_onnx(path, threads)
    return _SESSIONS[key]


__all__ = ["BlockGraph", "OnnxModel", "export_checkpoint", "export_model", "load_onnx", "predict_file_onnx"]
