"""The face drawn by ``koemorph preview``: shapes computed from the 52 ARKit values, frame by frame.

One definition for both renderers: :func:`face_frames` turns a track ``[T, 52]`` (Apple order, grid
frame ``k`` at ``k / fps`` s) into ``[T, STRIDE]`` numbers laid out by :data:`LAYOUT`; the HTML page
(:mod:`koemorph.preview.page`) carries these numbers as data and its script only sets SVG attributes
from them, and the MP4 writer (:mod:`koemorph.preview.video`) fills the same polygons with Pillow.

Coordinates are pixels of a ``WIDTH x HEIGHT`` face, x to the viewer's right, y down; the face
looks at the viewer, so the subject's left side is on the viewer's right. Shapes (drawn in this
order): ``face`` outline (jaw drop and sideways, cheek puff), ``cheek_*`` (squint raises, puff
grows), ``nose`` (sneer lifts the nostrils), ``eye_*`` lids (blink, squint, wide), ``iris_*`` (gaze
in/out/up/down, clipped by the lids), ``brow_*`` (inner up, outer up, down), ``mouth`` (the opening
between the inner lip lines: jaw open minus mouth close, upper up, lower down, funnel, press),
``lip_upper`` / ``lip_lower`` (thickness: roll, press, pucker, funnel, shrug; corners: smile, frown,
stretch, dimple, pucker; position: mouth left/right, jaw), ``tongue`` (out).
"""

from __future__ import annotations

import numpy as np

from koemorph import blendshapes as bs

WIDTH, HEIGHT = 300, 360
CX = WIDTH / 2
LIP_POINTS = 9  # points along each lip line, corner to corner

# (name, kind, points); a circle is one point plus a radius (3 numbers)
LAYOUT = (
    ("face", "polygon", 24),
    ("cheek_r", "circle", 1),
    ("cheek_l", "circle", 1),
    ("nose", "polyline", 4),
    ("eye_r", "polygon", 12),
    ("eye_l", "polygon", 12),
    ("iris_r", "circle", 1),
    ("iris_l", "circle", 1),
    ("brow_r", "polyline", 3),
    ("brow_l", "polyline", 3),
    ("mouth", "polygon", 2 * LIP_POINTS - 2),
    ("lip_upper", "polygon", 2 * LIP_POINTS - 2),
    ("lip_lower", "polygon", 2 * LIP_POINTS - 2),
    ("tongue", "circle", 1),
)
STYLE = {
    "face": {"fill": "#f1c9a5", "stroke": "#8a5a3c", "width": 2},
    "cheek_r": {"fill": "#e8907f", "opacity": 0.35},
    "cheek_l": {"fill": "#e8907f", "opacity": 0.35},
    "nose": {"stroke": "#8a5a3c", "width": 2},
    "eye_r": {"fill": "#ffffff", "stroke": "#3b2a20", "width": 2},
    "eye_l": {"fill": "#ffffff", "stroke": "#3b2a20", "width": 2},
    "iris_r": {"fill": "#3d6e8f", "clip": "eye_r"},
    "iris_l": {"fill": "#3d6e8f", "clip": "eye_l"},
    "brow_r": {"stroke": "#4a3020", "width": 6},
    "brow_l": {"stroke": "#4a3020", "width": 6},
    "mouth": {"fill": "#4a1414"},
    "lip_upper": {"fill": "#c0605a", "stroke": "#8a3a36", "width": 1},
    "lip_lower": {"fill": "#c86a62", "stroke": "#8a3a36", "width": 1},
    "tongue": {"fill": "#e07a80"},
}
SIZES = [n * 3 if kind == "circle" else n * 2 for _, kind, n in LAYOUT]
OFFSETS = dict(zip([name for name, _, _ in LAYOUT], np.cumsum([0, *SIZES[:-1]]).tolist()))
STRIDE = int(sum(SIZES))
# indices of the upper and lower inner-lip centre points within the ``mouth`` polygon
MOUTH_UPPER_CENTRE, MOUTH_LOWER_CENTRE = LIP_POINTS // 2, LIP_POINTS + (LIP_POINTS - 2) // 2


class _Channels:
    """``values [T, 52]`` by name: ``c.jawOpen`` is ``[T, 1]`` float64 (a column, to broadcast)."""

    def __init__(self, values: np.ndarray):
        self.v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)

    def __getattr__(self, name: str) -> np.ndarray:
        return self.v[:, bs.INDEX[name], None]

    def const(self, value: float) -> np.ndarray:
        """``[T, 1]`` filled with ``value``."""
        return np.full((len(self.v), 1), float(value))


def _points(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[T, K]`` x and y -> ``[T, 2K]`` interleaved."""
    x, y = np.broadcast_arrays(x, y)
    return np.stack([x, y], -1).reshape(x.shape[0], -1)


def _face(c: _Channels) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, 24, endpoint=False)[None]
    sin, cos = np.sin(theta), np.cos(theta)
    jaw = np.clip((sin - 0.25) / 0.75, 0, 1)  # 1 at the chin, 0 above the mouth
    cheek = np.clip(1 - np.abs(sin - 0.35) / 0.35, 0, 1) * np.abs(cos)  # the sides, mouth height
    x = CX + 110 * cos + (c.jawLeft - c.jawRight) * 12 * jaw + np.sign(cos) * c.cheekPuff * 14 * cheek
    y = 165 + 140 * sin + c.jawOpen * 28 * jaw
    return _points(x, y)


def _cheeks(c: _Channels) -> list[np.ndarray]:
    out = []
    for side, squint in ((-1, c.cheekSquintRight), (1, c.cheekSquintLeft)):
        out.append(np.hstack([c.const(CX + side * 62), 222 - 9 * squint, 15 + 9 * c.cheekPuff]))
    return out


def _nose(c: _Channels) -> np.ndarray:
    x = np.array([[CX, CX - 13, CX, CX + 13]])
    y = np.hstack([c.const(150), 204 - 6 * c.noseSneerRight, c.const(211), 204 - 6 * c.noseSneerLeft])
    return _points(x, y)


def _eye(c: _Channels, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Lid polygon ``[T, 24]`` and iris circle ``[T, 3]`` of one eye (``side`` -1: subject's right,
    drawn on the viewer's left; +1: subject's left)."""
    s = "Right" if side < 0 else "Left"
    ch = lambda name: getattr(c, name + s)  # noqa: E731
    cx, cy, half = CX + side * 45, 150.0, 24.0
    openness = (1 - 0.97 * ch("eyeBlink")) * (1 + 0.4 * ch("eyeWide") - 0.3 * ch("eyeSquint"))
    u_top = np.linspace(-1, 1, 7)[None]  # corner to corner along the upper lid
    u_low = np.linspace(1, -1, 7)[None, 1:-1]  # back along the lower lid, corners excluded
    top = cy - 13 * openness * (1 - u_top**2) - 1
    low = cy + 8 * openness * (1 - ch("eyeSquint") * 0.35) * (1 - u_low**2)
    lids = _points(np.hstack([cx + half * u_top, cx + half * u_low]), np.hstack([top, low]))
    out_minus_in = ch("eyeLookOut") - ch("eyeLookIn")  # outward = away from the nose
    gx = cx + side * 11 * out_minus_in
    gy = cy - 2 + 7 * (ch("eyeLookDown") - ch("eyeLookUp"))
    return lids, np.hstack([gx, gy, c.const(9)])


def _brow(c: _Channels, side: int) -> np.ndarray:
    s = "Right" if side < 0 else "Left"
    inner, outer, down = c.browInnerUp, getattr(c, "browOuterUp" + s), getattr(c, "browDown" + s)
    x = np.hstack([CX + side * (18 - 4 * down), c.const(CX + side * 42), c.const(CX + side * 66)])
    y = np.hstack(
        [118 - 15 * inner + 9 * down, 113 - 7 * (inner + outer) + 7 * down, 119 - 15 * outer + 4 * down]
    )
    return _points(x, y)


def _mouth(c: _Channels) -> dict[str, np.ndarray]:
    """Inner opening, upper and lower lip polygons (``[T, 32]`` each) and the tongue ``[T, 3]``."""
    avg = lambda name: (getattr(c, name + "Left") + getattr(c, name + "Right")) / 2  # noqa: E731
    press, pucker, funnel = avg("mouthPress"), c.mouthPucker, c.mouthFunnel
    cx = CX + (c.mouthLeft - c.mouthRight) * 14 + (c.jawLeft - c.jawRight) * 6
    cy = 262 + 14 * c.jawOpen
    corners = []  # (x, y lift) of the viewer-left (subject's right) and viewer-right corners
    for side, s in ((-1, "Right"), (1, "Left")):
        stretch, smile = getattr(c, "mouthStretch" + s), getattr(c, "mouthSmile" + s)
        half = 34 * (1 + 0.3 * stretch + 0.2 * smile + 0.1 * getattr(c, "mouthDimple" + s))
        half = half * (1 - 0.4 * pucker - 0.25 * funnel)
        corners.append((cx + side * half, 8 * getattr(c, "mouthFrown" + s) - 9 * smile))
    u = np.linspace(-1, 1, LIP_POINTS)[None]
    x = corners[0][0] + (corners[1][0] - corners[0][0]) * (u + 1) / 2
    base = cy + np.where(u < 0, corners[0][1], corners[1][1]) * u**2  # smiles curve up towards the corners
    profile = (1 - u**2) ** (0.75 - 0.45 * funnel)
    apart = 42 * np.clip(c.jawOpen - c.mouthClose, 0, 1) * (1 - 0.6 * press)
    up = 0.25 * apart + 7 * avg("mouthUpperUp") + 2.5 * funnel
    down = 0.75 * apart + 7 * avg("mouthLowerDown") + 2.5 * funnel
    inner_up, inner_low = base - up * profile, base + down * profile
    fuller = (1 + 0.5 * pucker + 0.3 * funnel) * (1 - 0.3 * press)
    t_up = 7 * (1 - 0.7 * c.mouthRollUpper) * fuller
    t_low = 9 * (1 - 0.7 * c.mouthRollLower) * fuller + 2 * c.mouthShrugLower
    shape = 0.35 + 0.65 * np.sqrt(profile)
    outer_up = inner_up - t_up * shape - 2 * c.mouthShrugUpper * profile
    outer_low = inner_low + t_low * shape
    back = slice(LIP_POINTS - 2, 0, -1)  # interior points, reversed
    polygon = lambda a, b: _points(np.hstack([x, x[:, back]]), np.hstack([a, b[:, back]]))  # noqa: E731
    centre = LIP_POINTS // 2
    tongue = np.hstack([cx, inner_low[:, centre : centre + 1] + 12 * c.tongueOut - 3, 12 * c.tongueOut])
    return {
        "mouth": polygon(inner_up, inner_low),
        "lip_upper": polygon(outer_up, inner_up),
        "lip_lower": polygon(outer_low, inner_low),
        "tongue": tongue,
    }


def face_frames(values) -> np.ndarray:
    """``values`` ``[T, 52]`` (Apple order, clipped to [0, 1]) -> ``[T, STRIDE]`` float32 shape numbers
    in :data:`LAYOUT` order (polygon / polyline: ``x0, y0, x1, y1, ...``; circle: ``cx, cy, r``), pixels."""
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or values.shape[1] != bs.NUM_BLENDSHAPES:
        raise ValueError(f"expected [T, 52] blendshape values, got {values.shape}")
    c = _Channels(values)
    eye_r, iris_r = _eye(c, -1)
    eye_l, iris_l = _eye(c, 1)
    parts = {
        "face": _face(c),
        "nose": _nose(c),
        "eye_r": eye_r,
        "eye_l": eye_l,
        "iris_r": iris_r,
        "iris_l": iris_l,
        "brow_r": _brow(c, -1),
        "brow_l": _brow(c, 1),
        **dict(zip(("cheek_r", "cheek_l"), _cheeks(c))),
        **_mouth(c),
    }
    out = np.concatenate([parts[name] for name, _, _ in LAYOUT], axis=1)
    assert out.shape == (len(values), STRIDE), out.shape
    return out.astype(np.float32)


def shape(frame: np.ndarray, name: str) -> np.ndarray:
    """One shape of one frame (``[STRIDE]``): ``[K, 2]`` points, or ``[3]`` (cx, cy, r) for a circle."""
    kind, n = next((k, n) for s, k, n in LAYOUT if s == name)
    start = OFFSETS[name]
    if kind == "circle":
        return np.asarray(frame[start : start + 3])
    return np.asarray(frame[start : start + 2 * n]).reshape(n, 2)


def mouth_opening(frame: np.ndarray) -> float:
    """Pixels between the inner lip lines at the mouth's centre, for one frame ``[STRIDE]``."""
    pts = shape(frame, "mouth")
    return float(pts[MOUTH_LOWER_CENTRE, 1] - pts[MOUTH_UPPER_CENTRE, 1])


__all__ = ["HEIGHT", "LAYOUT", "STRIDE", "STYLE", "WIDTH", "face_frames", "mouth_opening", "shape"]
