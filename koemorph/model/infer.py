"""Whole-file inference: every grid frame of a file, in chunks, smoothing state carried across chunks.

Inputs are per-file arrays on the grid (frame ``k`` at ``k / fps`` s), already normalised with the
train-split stats: ``mel`` ``[T, n_mels]``, ``egemaps`` ``[T, 88]`` or None. Frames before 0 and
after ``T - 1`` are filled with ``pad_mel`` / ``pad_egemaps`` (in normalised units: for the mel use
:func:`koemorph.model.windows.mel_pad_value`, normalised digital silence). Slicing and padding go through
:func:`koemorph.model.windows.window`, the same helper the data loader uses.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from koemorph.model.windows import window

__all__ = ["eval_mode", "predict_file", "predict_file_naive", "window"]


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model.eval()`` and ``torch.no_grad()`` inside; the previous train/eval mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _numpy(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float32)


def _prepare(model, mel, egemaps, fps, pad_mel):
    spans = model.spans
    if int(fps) != spans.fps:
        raise ValueError(f"features at {fps} fps but the model was built for {spans.fps} fps")
    if pad_mel is None:
        raise ValueError("pass pad_mel: the normalised silence value (koemorph.model.windows.mel_pad_value)")
    mel = _numpy(mel)
    use_emotion = egemaps is not None and getattr(model, "n_egemaps", 0) > 0
    if use_emotion:
        egemaps = _numpy(egemaps)
        if egemaps.shape[0] != mel.shape[0]:
            raise ValueError(f"mel has {mel.shape[0]} frames but egemaps {egemaps.shape[0]}")
    device = next(model.parameters()).device
    return spans, mel, egemaps if use_emotion else None, device


def _run(model, spans, mel, egemaps, a, span, positions, smooth, state, pad_mel, pad_egemaps, device):
    m = window(mel, *spans.mel_frames(a, span), pad_mel)
    e = None if egemaps is None else window(egemaps, *spans.egemaps_frames(a, span), pad_egemaps)
    out = model(
        torch.from_numpy(m)[None].to(device),
        None if e is None else torch.from_numpy(e)[None].to(device),
        positions.to(device),
        smooth=smooth,
        state=state,
    )
    return out["blendshapes"]


def _smooth_flag(model, smooth):
    return getattr(model, "smoothing", None) is not None if smooth is None else bool(smooth)


def predict_file(
    model: nn.Module,
    mel,
    egemaps,
    fps: int,
    chunk: int = 256,
    pad_mel=None,
    pad_egemaps=0.0,
    smooth: bool | None = None,
) -> np.ndarray:
    """Blendshapes for every frame of one file: ``[T, 52]`` float32, Apple order.

    Runs blocks of ``chunk`` consecutive output frames (dense positions); each block's per-frame
    encodings are computed once and shared by its outputs. With smoothing (``smooth`` None = the
    model's own setting) the state resets at frame 0 only and is carried from chunk to chunk, so
    the result does not depend on ``chunk``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    spans, mel, egemaps, device = _prepare(model, mel, egemaps, fps, pad_mel)
    smooth = _smooth_flag(model, smooth)
    n = mel.shape[0]
    result = np.zeros((n, 52), dtype=np.float32)
    state = None
    with eval_mode(model):
        for a in range(0, n, chunk):
            span = min(chunk, n - a)
            positions = torch.arange(span)[None]
            y = _run(
                model, spans, mel, egemaps, a, span, positions, smooth, state, pad_mel, pad_egemaps, device
            )
            result[a : a + span] = y[0].float().cpu().numpy()
            state = y[:, -1] if smooth else None
    return result


def predict_file_naive(
    model: nn.Module, mel, egemaps, fps: int, pad_mel=None, pad_egemaps=0.0, smooth: bool | None = None
) -> np.ndarray:
    """Reference: one forward pass per output frame over that frame's whole window, ``[T, 52]``.

    Recomputes every window from scratch (``C + L`` mel frames, ``E`` eGeMAPS frames per output):
    the cost the render benchmark compares :func:`predict_file` against. Same numbers up to float
    tolerance (the smoothing state is carried frame to frame, so this holds with smoothing too).
    """
    spans, mel, egemaps, device = _prepare(model, mel, egemaps, fps, pad_mel)
    smooth = _smooth_flag(model, smooth)
    n = mel.shape[0]
    result = np.zeros((n, 52), dtype=np.float32)
    state = None
    positions = torch.zeros(1, 1, dtype=torch.long)
    with eval_mode(model):
        for t in range(n):
            y = _run(model, spans, mel, egemaps, t, 1, positions, smooth, state, pad_mel, pad_egemaps, device)
            result[t] = y[0, 0].float().cpu().numpy()
            state = y[:, -1] if smooth else None
    return result
