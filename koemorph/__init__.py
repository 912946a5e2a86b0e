"""koemorph: speech audio to the 52 ARKit blendshapes."""

__version__ = "0.1.0"
