"""The generated demo corpus (``koemorph demo-data``): espeak-ng speech paired with ARKit tracks.

Modules: :mod:`.espeak` (ctypes synthesis with phone events), :mod:`.text` (seeded grammar),
:mod:`.visemes` (phones -> coarticulated mouth channels), :mod:`.face` (blinks, gaze, brows),
:mod:`.voices` (speakers and voice splits), :mod:`.render` (one file), :mod:`.corpus` (the whole
corpus, sharded over fresh processes). Entry point: :func:`koemorph.demo.corpus.generate_corpus`.
"""
