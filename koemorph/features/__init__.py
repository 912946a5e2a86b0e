"""Pure per-file feature extractors: ``f(samples [N] float32 @ 16 kHz, FeaturesConfig) -> [T, D]``.

Every output has one row per grid frame (see :mod:`koemorph.grid`). No file I/O happens here;
the ``koemorph extract`` pipeline reads audio, calls these and writes the cache.

* :func:`log_mel`: ``[T, n_mels]`` float32 dB, fixed reference.
* :func:`egemaps`: causal 20 s / 0.3 s eGeMAPSv02 functionals, ``[T, 88]`` aligned plus the native
  windows (needs the optional, research-licensed ``opensmile`` package; imported lazily).
"""

from koemorph.features.egemaps import EGEMAPS_DIM, egemaps, egemaps_feature_names, egemaps_per_window
from koemorph.features.mel import log_mel

__all__ = ["EGEMAPS_DIM", "egemaps", "egemaps_feature_names", "egemaps_per_window", "log_mel"]
