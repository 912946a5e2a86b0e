"""Previews of blendshape tracks as faces: :mod:`~koemorph.preview.geometry` (shapes from the 52
values), :mod:`~koemorph.preview.page` (the self-contained HTML page), :mod:`~koemorph.preview.video`
(MP4), :mod:`~koemorph.preview.build` (``koemorph preview`` for files and folders)."""
