"""The networks, losses, gradient diagnostics and whole-file inference.

``build_model(model_cfg, features_cfg, n_mels=80, n_egemaps=88)`` returns the network named by
``model_cfg.kind`` (``"dual_stream"`` or ``"simplified"``); ``n_egemaps=0`` builds a mel-only model
(eGeMAPS switched off); with ``features_cfg.phones`` its frame input also carries the 40 phone
shares after the mel bins (and with ``features_cfg.phones_text`` their source column). Its ``spans``
attribute (:class:`koemorph.model.windows.Spans`) gives the block geometry the data loader must produce.
"""

from __future__ import annotations

from torch import nn

from koemorph.config import FeaturesConfig, ModelConfig
from koemorph.features.phones import input_columns
from koemorph.model.windows import Spans, spans


def build_model(
    model_cfg: ModelConfig, features_cfg: FeaturesConfig, n_mels: int = 80, n_egemaps: int = 88
) -> nn.Module:
    """The network for ``model_cfg.kind``, its windows converted at ``features_cfg.fps``."""
    from koemorph.model.dual_stream import DualStreamModel
    from koemorph.model.simplified import SimplifiedModel

    geometry = spans(model_cfg, features_cfg)
    if not features_cfg.egemaps:
        n_egemaps = 0
    n_phones = input_columns(features_cfg)
    if model_cfg.kind == "dual_stream":
        return DualStreamModel(model_cfg, geometry, n_mels=n_mels, n_egemaps=n_egemaps, n_phones=n_phones)
    if model_cfg.kind == "simplified":
        return SimplifiedModel(model_cfg, geometry, n_mels=n_mels, n_phones=n_phones)
    raise ValueError(f"unknown model kind {model_cfg.kind!r}: choose 'dual_stream' or 'simplified'")


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["build_model", "count_parameters", "Spans", "spans"]
