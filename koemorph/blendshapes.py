"""The registry of the 52 ARKit blendshapes: names, orders and groups.

Apple order (= Unreal ``EARFaceBlendShape`` 0-51) is koemorph's canonical order: every
``[T, 52]`` array in the project, on disk and in memory, uses it. Groups are derived from
names, never from index ranges (hard-coded ranges drift from the names they meant).
"""

from __future__ import annotations

ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft",
    "eyeLookDownLeft",
    "eyeLookInLeft",
    "eyeLookOutLeft",
    "eyeLookUpLeft",
    "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight",
    "eyeLookDownRight",
    "eyeLookInRight",
    "eyeLookOutRight",
    "eyeLookUpRight",
    "eyeSquintRight",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawRight",
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthLeft",
    "mouthRight",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "noseSneerLeft",
    "noseSneerRight",
    "tongueOut",
)
NUM_BLENDSHAPES = len(ARKIT_NAMES)
ORDER_NAME = "arkit52-apple"  # written into every output that carries a channel order

ALPHABETICAL_NAMES: tuple[str, ...] = tuple(sorted(ARKIT_NAMES))

_BY_LOWER = {name.lower(): name for name in ARKIT_NAMES}
INDEX = {name: i for i, name in enumerate(ARKIT_NAMES)}


def canonical_name(name: str) -> str | None:
    """The ARKit spelling of ``name`` matched case-insensitively (``JawOpen`` -> ``jawOpen``), else None."""
    return _BY_LOWER.get(name.strip().lower())


def index_of(name: str) -> int:
    """Apple-order index of a blendshape name (case-insensitive); KeyError if unknown."""
    canonical = canonical_name(name)
    if canonical is None:
        raise KeyError(f"unknown ARKit blendshape name {name!r}")
    return INDEX[canonical]


def indices(names) -> list[int]:
    """Apple-order indices of several names."""
    return [index_of(n) for n in names]


def _group(*prefixes: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(n for n in ARKIT_NAMES if n.startswith(prefixes) or n in extra)


MOUTH_NAMES = _group("jaw", "mouth", extra=("tongueOut",))  # 28: speech-driven lower face
EXPRESSION_NAMES = _group("eye", "brow", "cheek", "nose")  # 24: upper face and expression
MOUTH_INDICES = indices(MOUTH_NAMES)
EXPRESSION_INDICES = indices(EXPRESSION_NAMES)

# The lips of speech: jaw opening and the lip shapes that articulate sounds (not jaw/mouth sideways
# moves, frowns, dimples or the tongue). The benchmarks' "lip r" is pooled Pearson r over these.
LIP_NAMES = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthSmileLeft", "mouthSmileRight",
)  # fmt: skip
# Lips closed or pressed: the channels that carry bilabials (p, b, m).
CLOSURE_NAMES = ("mouthClose", "mouthPressLeft", "mouthPressRight", "mouthRollLower")
# Channels plotted and reported first: jaw, lips, smile, blink, brow.
KEY_NAMES = ("jawOpen", "mouthClose", "mouthPucker", "mouthSmileLeft", "eyeBlinkLeft", "browInnerUp")
# Upper-face dynamics (FDD analogue): excludes blinks and gaze, which are not speech-driven.
UPPER_FACE_NAMES = tuple(
    n for n in EXPRESSION_NAMES if n.startswith(("brow", "eyeSquint", "eyeWide", "cheekSquint"))
)

assert NUM_BLENDSHAPES == 52 and len(set(ARKIT_NAMES)) == 52
assert len(MOUTH_NAMES) == 28 and len(EXPRESSION_NAMES) == 24
assert set(MOUTH_NAMES).isdisjoint(EXPRESSION_NAMES)
assert len(LIP_NAMES) == 18 and set(LIP_NAMES) <= set(MOUTH_NAMES) and set(CLOSURE_NAMES) <= set(LIP_NAMES)
