"""Training losses, with channel groups chosen by name and velocity terms over real time deltas.

``compute_losses(out, target, mask, cfg, consecutive, scale=None)``:

* ``out``: the model's output dict; ``out["blendshapes"]`` ``[B, n, 52]`` (smoothed when the model
  smoothed, else the very ``out["raw"]`` tensor) and ``out["raw"]`` ``[B, n, 52]``, values in [0, 1];
* ``target`` ``[B, n, 52]`` Apple order; ``mask`` ``[B, n]`` bool, True = a real frame (False =
  padding, contributes nothing);
* ``consecutive``: the n positions are consecutive grid frames (dense block), so ``velocity`` and
  ``consistency`` are defined. Deltas are taken between neighbouring positions of the SAME batch
  row only, and only where both frames are real;
* ``scale`` (optional, ``[52]``): every channel's prediction and target are multiplied by it first
  (:func:`channel_scale`, ``LossConfig.channel_floor``), so each term weighs channels by ``scale²``.

Terms (unweighted, means over real frames and channels):
``mse``, ``l1``; ``perceptual`` = MSE over the mouth names + MSE over the expression names
(:mod:`koemorph.blendshapes` groups); ``velocity`` = MSE of ``pred[t]-pred[t-1]`` against
``target[t]-target[t-1]`` (dense only); ``consistency`` = MSE between the raw ``x_t`` and the
detached smoothed ``y_{t-1}`` (dense and smoothed only); ``closure`` (:func:`closure_term`, when
``cfg.closure > 0``) = how far the lips stay open where the truth closes them. ``total`` =
Σ ``cfg.<term>`` · term over the terms computed. Returns ``(total, {name: 0-dim tensor})`` with
slash-free names, ``total`` included (detached, for logging).
"""

from __future__ import annotations

import torch

from koemorph import blendshapes


def _masked_mean(values: torch.Tensor, weight: torch.Tensor, rows=None) -> torch.Tensor:
    """Mean of ``values`` ``[B, n, K]`` over rows with ``weight`` ``[B, n]`` 1 (0 if none); ``rows``
    (optional 0-dim tensor) replaces the number of such rows as the normaliser (data parallel: the
    count over all ranks, so the mean is this rank's share of the global one)."""
    w = weight.to(values.dtype).unsqueeze(-1)
    count = (w.sum() if rows is None else rows.to(values)) * values.shape[-1]
    return (values * w).sum() / count.clamp_min(1.0)


def channel_scale(std, floor: float) -> torch.Tensor | None:
    """``[52]`` per-channel error scale ``1 / max(std, floor)``, normalised so the squared scales average 1;
    None when ``floor <= 0`` (plain errors). ``std``: ``[52]`` train-split target std.

    Pearson r, the metric, weighs every channel alike whatever its range, while a plain MSE weighs
    channel ``c`` by ``std_c²``: a channel moving by 0.02 (mouthFrown*) got ~1/100 of the gradient of
    one moving by 0.2 (mouthPucker). The floor keeps near-constant channels from taking over.
    """
    if floor <= 0:
        return None
    s = 1.0 / torch.as_tensor(std, dtype=torch.float32).clamp_min(float(floor))
    return s / s.square().mean().sqrt()


JAW, CLOSE = blendshapes.INDEX["jawOpen"], blendshapes.INDEX["mouthClose"]
CLOSURE_SLACK = 2  # dense blocks: a closure may come this many frames early or late


def closure_term(pred, target, mask, below: float, consecutive: bool, rows=None) -> torch.Tensor:
    """Lips left open at the truth's closures: mean over real frames of ``relu(a_pred - a_true)²`` on
    the frames whose truth aperture ``a = jawOpen - mouthClose`` is ``<= below`` (else 0).

    ``pred``/``target`` ``[B, n, 52]`` in blendshape units. In a dense block ``a_pred`` is the
    smallest predicted aperture within ``CLOSURE_SLACK`` frames (same row), so a closure a frame or two
    off still counts: MSE alone rewards a shallow dip spread over the uncertain time, the metric an
    animator sees is whether the lips close at all.
    """
    a_pred = pred[..., JAW] - pred[..., CLOSE]  # [B, n]
    a_true = target[..., JAW] - target[..., CLOSE]
    if consecutive and pred.shape[1] > 1:
        open_ = a_pred.masked_fill(~mask, float("inf")).unsqueeze(1)  # padding never counts as closed
        k = 2 * CLOSURE_SLACK + 1
        a_pred = -torch.nn.functional.max_pool1d(-open_, k, stride=1, padding=CLOSURE_SLACK).squeeze(1)
    closed = mask & (a_true <= below)
    gap = torch.where(closed, torch.relu(a_pred - a_true), torch.zeros_like(a_true))
    return _masked_mean(gap.square().unsqueeze(-1), mask, rows)


def compute_losses(
    out: dict,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    cfg,
    consecutive: bool,
    scale: torch.Tensor | None = None,
    counts: dict | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """See the module docstring. ``counts`` (optional ``{"mask", "pair"}`` 0-dim tensors) are the
    normalisers of the frame terms and of the neighbour-pair terms (data parallel: summed over ranks)."""
    n_mask, n_pair = (None, None) if counts is None else (counts["mask"], counts["pair"])
    pred, raw = out["blendshapes"], out["raw"]
    if pred.shape != target.shape or pred.shape[-1] != blendshapes.NUM_BLENDSHAPES:
        raise ValueError(f"prediction {tuple(pred.shape)}, target {tuple(target.shape)}: need [B, n, 52]")
    if mask is None:
        mask = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    target = target_raw = target.to(pred.dtype)
    if scale is not None:  # every term in scaled units (see channel_scale); `pred is raw` is kept
        scale = scale.to(pred)
        smoothed = pred is not raw
        raw = raw * scale
        pred, target = (pred * scale if smoothed else raw), target * scale
    err = pred - target
    terms = {"mse": _masked_mean(err.square(), mask, n_mask), "l1": _masked_mean(err.abs(), mask, n_mask)}
    mouth = torch.as_tensor(blendshapes.MOUTH_INDICES, device=pred.device)
    expr = torch.as_tensor(blendshapes.EXPRESSION_INDICES, device=pred.device)
    sq = err.square()
    terms["perceptual"] = _masked_mean(sq.index_select(-1, mouth), mask, n_mask) + _masked_mean(
        sq.index_select(-1, expr), mask, n_mask
    )
    if consecutive and pred.shape[1] >= 2:
        pair = mask[:, 1:] & mask[:, :-1]
        d_pred, d_tgt = pred.diff(dim=1), target.diff(dim=1)
        terms["velocity"] = _masked_mean((d_pred - d_tgt).square(), pair, n_pair)
        if pred is not raw:  # the model smoothed: y_{t-1} is pred[t-1]
            terms["consistency"] = _masked_mean((raw[:, 1:] - pred[:, :-1].detach()).square(), pair, n_pair)
    if cfg.closure > 0:
        terms["closure"] = closure_term(
            out["blendshapes"], target_raw, mask, cfg.closure_below, consecutive, n_mask
        )
    total = sum(float(getattr(cfg, name)) * value for name, value in terms.items())
    terms["total"] = total.detach()
    return total, terms
