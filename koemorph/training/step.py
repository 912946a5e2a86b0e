"""One optimiser step of ``koemorph train``: forward, loss, backward, clip, update."""

from __future__ import annotations

import torch

from koemorph import blendshapes as bs
from koemorph.training import distributed
from koemorph.training.diagnostics import grad_norms
from koemorph.training.losses import compute_losses


def train_step(
    model, batch: dict, optimizer, cfg, device, check=None, scale=None, world=None, net=None
) -> dict:
    """Forward, loss, backward, clip, update on one collated batch; returns slash-named scalars.

    ``batch``: see :func:`koemorph.training.batches.collate`. Metrics: ``train/loss`` and the unweighted loss
    terms (``train/mse`` ...), ``grad_norm`` and ``grad/<group>`` (before clipping), and, when the
    model reports them, ``stream/mel_weight_mouth|expression`` and ``smoothing/alpha``.
    ``check`` (optional) is called with the model after backward (gradient warnings); ``scale``
    (optional ``[52]``) is the per-channel error scale of :func:`koemorph.training.losses.channel_scale`.
    Data parallel (``world`` of several ranks, ``net`` the DDP-wrapped ``model``): every rank runs this
    on its rows of the global batch; the loss is its share of the global loss times the world size
    (DDP averages the gradients) and the returned loss terms are summed over ranks: the global ones.
    """
    mel = batch["mel"].to(device, non_blocking=True)
    egemaps = batch["egemaps"].to(device, non_blocking=True) if batch["egemaps"] is not None else None
    positions = batch["positions"].to(device, non_blocking=True)
    targets = batch["targets"].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    out = (model if net is None else net)(mel, egemaps, positions, smooth=batch["smooth"], state=None)
    counts = distributed.global_counts(mask, batch["smooth"], world) if world is not None else None
    total, terms = compute_losses(
        out, targets, mask, cfg.loss, consecutive=batch["smooth"], scale=scale, counts=counts
    )
    optimizer.zero_grad(set_to_none=True)
    (total if counts is None else total * world.size).backward()
    metrics = {
        "train/loss": float(total.detach()),
        **{f"train/{k}": float(torch.as_tensor(v).detach()) for k, v in terms.items() if k != "total"},
    }
    if counts is not None:
        metrics = distributed.sum_metrics(metrics, list(metrics), world, device)
    metrics.update({k: float(v) for k, v in grad_norms(model).items()})
    if check is not None:
        check(model, dense=batch["smooth"])
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    optimizer.step()
    weights = out.get("stream_weights")
    if weights is not None:  # [52, 2]: column 0 = mel stream, 1 = emotion stream
        w = weights.detach().float().cpu()
        metrics["stream/mel_weight_mouth"] = float(w[bs.MOUTH_INDICES, 0].mean())
        metrics["stream/mel_weight_expression"] = float(w[bs.EXPRESSION_INDICES, 0].mean())
    if out.get("alpha") is not None:
        metrics["smoothing/alpha"] = float(torch.as_tensor(out["alpha"]).detach().float().mean())
    return metrics
