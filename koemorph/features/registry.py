"""The feature registry: every per-file feature the store caches, registered once.

A :class:`Feature` names its store array, the ``FeaturesConfig`` fields its values depend on
(the array's config hash covers exactly these), its width ``D`` and its extractor: a pure
function ``compute(samples, cfg) -> (values [T, D] float32, attrs)`` of 16 kHz mono samples ``[N]``
in [-1, 1], with one row per grid frame (``T = grid.num_frames_for_samples(N, cfg.fps)``) and
``attrs`` a JSON-able dict of extra outputs kept as the array's attributes
(e.g. eGeMAPS's ``first_valid_frame``; the store's feature statistics skip the rows before it).

``koemorph extract`` hashes, computes and stores every enabled feature through this registry,
and ``koemorph render`` computes its features through it. :func:`register` adds one (as
``lhotse``'s ``register_extractor`` does); the built-ins are ``mel``, ``egemaps`` and ``phones``
(:mod:`koemorph.features.phones`, off unless ``features.phones``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from koemorph.config import ADDED_KEYS, FeaturesConfig


@dataclass(frozen=True)
class Feature:
    name: str  # the store array and the key in results/stats
    fields: dict[str, str]  # hash key -> FeaturesConfig field: what the values depend on
    dim: Callable[[FeaturesConfig], int]  # D of the [T, D] output
    compute: Callable[[np.ndarray, FeaturesConfig], tuple[np.ndarray, dict]]
    enabled: Callable[[FeaturesConfig], bool] = lambda cfg: True
    constants: Callable[[FeaturesConfig], dict] = lambda cfg: {}  # what else fixes them (settings, versions)
    # hash key -> the value a field added later had before it existed (``ADDED_KEYS``): left out of
    # the hash at that value, so that the arrays extracted before the field stay valid
    added: dict = field(default_factory=dict)

    def config_values(self, cfg: FeaturesConfig) -> dict:
        """``{hash key: value}`` of the fields and constants this feature depends on (hashed with the
        grid by extract)."""
        values = {key: getattr(cfg, name) for key, name in self.fields.items()}
        kept = {key: v for key, v in values.items() if key not in self.added or _plain(v) != self.added[key]}
        return {**kept, **self.constants(cfg)}


def _plain(value):
    """A config value as its JSON form compares (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


FEATURES: dict[str, Feature] = {}


def register(feature: Feature) -> Feature:
    """Add ``feature`` (a name registered twice is an error)."""
    if feature.name in FEATURES:
        raise ValueError(f"feature {feature.name!r} is already registered")
    FEATURES[feature.name] = feature
    return feature


def enabled(cfg: FeaturesConfig) -> list[Feature]:
    """The registered features ``cfg`` switches on, in registration order."""
    return [f for f in FEATURES.values() if f.enabled(cfg)]


def first_valid(attrs: dict | None) -> int:
    """First row of a feature's output that holds real values (its ``first_valid_frame`` attr, else 0)."""
    return int((attrs or {}).get("first_valid_frame", 0))


def _mel(samples: np.ndarray, cfg: FeaturesConfig) -> tuple[np.ndarray, dict]:
    from koemorph.features.mel import log_mel

    return log_mel(samples, cfg).astype(np.float32), {}


def _egemaps(samples: np.ndarray, cfg: FeaturesConfig) -> tuple[np.ndarray, dict]:
    from koemorph.features.egemaps import egemaps
    from koemorph.features.normalise import first_valid_frame

    aligned, _, ends = egemaps(samples, cfg)
    first = first_valid_frame(len(aligned), len(ends), cfg)
    attrs = {"first_valid_frame": first, "window_step_s": cfg.egemaps_step_s, "windows": len(ends)}
    return aligned.astype(np.float32), attrs


def _phones(samples: np.ndarray, cfg: FeaturesConfig) -> tuple[np.ndarray, dict]:
    from koemorph.features.phones import phone_features

    return phone_features(samples, cfg), {}


def _phone_constants(cfg: FeaturesConfig) -> dict:
    from koemorph.features.phones import hash_constants

    return hash_constants(cfg.phones_decoding)


register(
    Feature(
        "mel",
        {"n_mels": "n_mels", "n_fft": "n_fft", "fmin": "fmin", "fmax": "fmax", "db_floor": "db_floor"},
        lambda cfg: cfg.n_mels,
        _mel,
    )
)
register(
    Feature(
        "egemaps",
        {"context": "egemaps_context_s", "step": "egemaps_step_s", "guard": "egemaps_guard_s"},
        lambda cfg: 88,
        _egemaps,
        enabled=lambda cfg: bool(cfg.egemaps),
    )
)
register(
    Feature(
        "phones",
        {"decoding": "phones_decoding", "warps": "phones_warps"},
        lambda cfg: 40,  # koemorph.features.phones.NUM_PHONES (a test checks they agree)
        _phones,
        enabled=lambda cfg: bool(cfg.phones),
        constants=_phone_constants,
        added={"warps": ADDED_KEYS[("features", "phones_warps")]},
    )
)
