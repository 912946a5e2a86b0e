"""Pure per-file feature extractors: ``f(samples [N] float32 @ 16 kHz, FeaturesConfig) -> [T, D]``.

Every output has one row per grid frame (see :mod:`koemorph.grid`). No file I/O happens here;
the ``koemorph extract`` pipeline reads audio, calls these and writes the cache.

* :func:`koemorph.features.mel.log_mel`: ``[T, n_mels]`` float32 dB, fixed reference.
* :func:`koemorph.features.egemaps.egemaps`: causal 20 s / 0.3 s eGeMAPSv02 functionals, ``[T, 88]``
  aligned plus the native windows (needs the optional, research-licensed ``opensmile`` package).
* :func:`koemorph.demo.synth.speechlike`: synthetic test audio.

Nothing is re-exported here, so ``import koemorph.features`` stays cheap and the submodule
``koemorph.features.egemaps`` is not shadowed by its function of the same name.
"""
