"""Phones -> visemes -> ARKit mouth channels, with Cohen–Massaro style coarticulation.

Each viseme gives, per articulatory *group*, a target vector and a dominance ``(alpha, theta)``
(optionally a plateau fraction, default 0.5).
A phone's dominance over time ``t`` (seconds) is

    D(t) = alpha * exp(-theta_side * max(0, |t - c| - plateau))

with ``c`` the phone's centre, ``plateau`` a fraction of its half-width (0.9 for the closure
of bilabials: the lips stay shut for the whole segment), and ``theta_side`` smaller
before the centre (anticipatory coarticulation reaches further ahead than carry-over). Each
group's value at ``t`` is the dominance-weighted mean of all phones' targets, so bilabials
(very high closure dominance) close the lips fully while rounding (low dominance on most
consonants) spreads from ``oo``/``w`` onto neighbouring consonants, and pauses relax to rest.

Group values are then mapped to ARKit channels (by name, via :mod:`koemorph.blendshapes`)
with per-speaker style gains in :func:`mouth_track`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from koemorph.blendshapes import INDEX, NUM_BLENDSHAPES

# group -> width of its target vector
GROUPS = {
    "jaw": 1,  # jaw opening
    "round": 2,  # (pucker, funnel)
    "spread": 1,  # smile / stretch
    "close": 5,  # (close, press, rollLower, rollUpper, cheekPuff)
    "labdent": 1,  # lower lip under upper teeth (f, v)
    "tongue": 1,  # tongue between teeth (th)
}

_V, _C = 16.0, 25.0  # default decay rates (1/s) for vowels and consonants


def _v(jaw, spread=0.1, round_=(0.0, 0.0), a_jaw=1.0, a_round=0.6, a_spread=0.6, theta=_V):
    """A vowel: the lips and jaw are set by the vowel; no closure, no tuck, no tongue."""
    return {
        "jaw": ((jaw,), a_jaw, theta),
        "round": (round_, a_round if max(round_) == 0 else 1.0, theta),
        "spread": ((spread,), a_spread, theta),
        "close": ((0, 0, 0, 0, 0), 1.0, theta),
        "labdent": ((0,), 0.5, theta),
        "tongue": ((0,), 0.4, theta),
    }


def _c(jaw=0.14, a_jaw=0.6, **groups):
    """A consonant: low dominance on everything it does not control, so neighbours carry over."""
    spec = {
        "jaw": ((jaw,), a_jaw, _C),
        "round": ((0.0, 0.0), 0.04, _C),
        "spread": ((0.0,), 0.08, _C),
        "close": ((0, 0, 0, 0, 0), 0.8, _C),
        "labdent": ((0,), 0.5, _C),
        "tongue": ((0,), 0.4, _C),
    }
    spec.update(groups)
    return spec


VISEMES: dict[str, dict] = {
    "rest": {g: ((0.0,) * n, 2.0, 8.0) for g, n in GROUPS.items()}
    | {"close": ((0.1, 0.03, 0, 0, 0), 2.0, 8.0)},
    "closed": _c(0.03, 2.5, close=((1.0, 0.7, 0.4, 0.25, 0.0), 5.0, 45.0, 0.9), labdent=((0,), 0.6, _C)),
    "labiodental": _c(0.09, 1.0, labdent=((1.0,), 4.0, 40.0, 0.8), spread=((0.1,), 0.2, _C)),
    "dental": _c(0.16, 0.8, tongue=((1.0,), 3.0, 40.0, 0.7)),
    "postalveolar": _c(0.12, 0.6, round=((0.45, 0.75), 1.2, 16.0), spread=((0.0,), 0.4, _C)),
    "alveolar": _c(0.13, 0.6, spread=((0.15,), 0.1, _C)),
    "sibilant": _c(0.07, 0.7, spread=((0.35,), 0.25, _C)),
    "velar": _c(0.22, 0.35),
    "glottal": _c(0.2, 0.02, close=((0, 0, 0, 0, 0), 0.3, _C)),
    "r": _c(0.15, 0.3, round=((0.35, 0.4), 0.6, 14.0)),
    "w": _c(0.08, 0.7, round=((1.0, 0.4), 1.6, 16.0), spread=((0.0,), 0.8, _C)),
    "y": _c(0.12, 0.4, spread=((0.6,), 0.45, _C)),
    "ee": _v(0.16, 0.9, a_spread=0.9),
    "ih": _v(0.25, 0.55),
    "eh": _v(0.42, 0.45),
    "ae": _v(0.62, 0.4),
    "ah": _v(0.82, 0.08),
    "uh": _v(0.5, 0.12),
    "schwa": _v(0.3, 0.1, a_jaw=0.4, a_round=0.25, a_spread=0.25),
    "er": _v(0.3, 0.05, (0.3, 0.35)),
    "oh": _v(0.5, 0.0, (0.45, 0.85)),
    "aw": _v(0.64, 0.0, (0.3, 0.7)),
    "oo": _v(0.14, 0.0, (0.95, 0.45)),
    "uu": _v(0.22, 0.05, (0.6, 0.35)),
}

VOWEL_VISEMES = frozenset({"ee", "ih", "eh", "ae", "ah", "uh", "schwa", "er", "oh", "aw", "oo", "uu"})

# Bilabial closure vectors per phone: (close, press, rollLower, rollUpper, cheekPuff)
CLOSE_BY_PHONE = {
    "p": (1.0, 0.9, 0.45, 0.3, 0.12),
    "b": (1.0, 0.7, 0.35, 0.25, 0.06),
    "m": (1.0, 0.5, 0.3, 0.2, 0.0),
}

# espeak-ng English phoneme mnemonics (stress marks stripped) -> viseme or (viseme, viseme)
PHONE_VISEMES: dict[str, str | tuple[str, str]] = {
    "_": "rest",
    "p": "closed",
    "b": "closed",
    "m": "closed",
    "f": "labiodental",
    "v": "labiodental",
    "T": "dental",
    "D": "dental",
    "S": "postalveolar",
    "Z": "postalveolar",
    "tS": "postalveolar",
    "dZ": "postalveolar",
    "t": "alveolar",
    "d": "alveolar",
    "n": "alveolar",
    "l": "alveolar",
    "t[": "alveolar",
    "t#": "alveolar",
    "t2": "alveolar",
    "n-": "alveolar",
    "l/": "alveolar",
    "l^": "alveolar",
    "n^": "alveolar",
    ";": "alveolar",
    "s": "sibilant",
    "z": "sibilant",
    "k": "velar",
    "g": "velar",
    "N": "velar",
    "x": "velar",
    "h": "glottal",
    "?": "glottal",
    "r": "r",
    "r-": "r",
    "r/": "r",
    "w": "w",
    "w#": "w",
    "W": "w",
    "j": "y",
    "i:": "ee",
    "i": "ee",
    "I": "ih",
    "I2": "ih",
    "I#": "ih",
    "IR": "ih",
    "e": "eh",
    "E": "eh",
    "a": "ae",
    "&": "ae",
    "A:": "ah",
    "aa": "ah",
    "A@": "ah",
    "A": "ah",
    "V": "uh",
    "VR": "uh",
    "@": "schwa",
    "@2": "schwa",
    "@5": "schwa",
    "a#": "schwa",
    "3": "schwa",
    "@L": "schwa",
    "3:": "er",
    "0": "aw",
    "O:": "aw",
    "O": "aw",
    "O2": "aw",
    "O@": "aw",
    "o@": "oh",
    "o": "oh",
    "u:": "oo",
    "U": "uu",
    "U@": ("uu", "schwa"),
    "aI": ("ah", "ee"),
    "aI2": ("ah", "ee"),
    "aI@": ("ah", "schwa"),
    "aI3": ("ah", "schwa"),
    "aU": ("ah", "oo"),
    "eI": ("eh", "ee"),
    "oU": ("oh", "oo"),
    "OI": ("aw", "ee"),
    "i@": ("ee", "schwa"),
    "i@3": ("ee", "schwa"),
    "e@": ("eh", "schwa"),
}
STOPS = frozenset({"p", "b", "t", "d", "k", "g", "tS", "dZ", "t[", "t#", "t2"})


def phone_viseme(phone: str) -> tuple[str | tuple[str, str], bool]:
    """Viseme(s) of an espeak phone name, and whether the name was known (else a fallback)."""
    if phone in PHONE_VISEMES:
        return PHONE_VISEMES[phone], True
    trimmed = phone.rstrip("#[23456;/-^")
    if trimmed in PHONE_VISEMES:
        return PHONE_VISEMES[trimmed], True
    if phone[:2] in PHONE_VISEMES:
        return PHONE_VISEMES[phone[:2]], False
    return PHONE_VISEMES.get(phone[:1], "schwa"), False


def viseme_label(v: str | tuple[str, str]) -> str:
    """``"ah"`` or ``"ah>ee"`` for a diphthong."""
    return v if isinstance(v, str) else f"{v[0]}>{v[1]}"


@dataclass(frozen=True)
class Style:
    """A speaker's articulation style (all gains are multipliers around 1)."""

    jaw_gain: float = 1.0
    lip_gain: float = 1.0  # rounding
    smile_gain: float = 1.0
    smile_base: float = 0.0  # resting smile
    close_gain: float = 1.0
    lead_s: float = 0.04  # lips move this long before the sound
    asym: float = 0.0  # left/right asymmetry, -0.1..0.1

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Style:
        return cls(
            jaw_gain=float(rng.uniform(0.8, 1.2)),
            lip_gain=float(rng.uniform(0.8, 1.2)),
            smile_gain=float(rng.uniform(0.7, 1.2)),
            smile_base=float(rng.uniform(0.0, 0.1)),
            close_gain=float(rng.uniform(0.9, 1.05)),
            lead_s=float(rng.uniform(0.02, 0.06)),
            asym=float(rng.uniform(-0.08, 0.08)),
        )


def _keys(phones: list[tuple[str, float, float, bool]]):
    """Phone segments -> coarticulation keys ``(centre s, half-width s, viseme, phone, stressed)``.

    Diphthongs become two keys, one per half.
    """
    keys = []
    for name, start, end, stressed in phones:
        vis, _ = phone_viseme(name)
        parts = [vis] if isinstance(vis, str) else list(vis)
        width = (end - start) / len(parts)
        for j, part in enumerate(parts):
            s = start + j * width
            keys.append((s + width / 2, width / 2, part, name, stressed))
    return keys


def group_tracks(phones, times: np.ndarray, lead_s: float = 0.0) -> dict[str, np.ndarray]:
    """Coarticulated group values at ``times`` (seconds): ``{group: [T, width]}`` in [0, 1].

    ``phones`` is a list of ``(name, start_s, end_s, stressed)`` covering the whole file
    (pauses included); the visual keys are shifted ``lead_s`` earlier than the sound.
    """
    keys = _keys(phones)
    centre = np.array([k[0] for k in keys]) - lead_s
    half = np.array([k[1] for k in keys])
    dist = times[:, None] - centre[None, :]  # [T, K]
    before = dist < 0  # the frame is before the key: anticipation, slower decay
    out = {}
    for group, width in GROUPS.items():
        specs = [VISEMES[k[2]][group] for k in keys]
        alpha = np.array([s[1] for s in specs])
        theta = np.array([s[2] for s in specs])
        target = np.array([s[0] for s in specs], dtype=np.float64).reshape(len(keys), width)
        plateau = half * np.array([s[3] if len(s) > 3 else 0.5 for s in specs])
        excess = np.maximum(np.abs(dist) - plateau[None, :], 0.0)
        if group == "close":
            for i, k in enumerate(keys):
                if k[3] in CLOSE_BY_PHONE:
                    target[i] = CLOSE_BY_PHONE[k[3]]
        if group == "jaw":  # stressed vowels open wider, unstressed ones less
            is_vowel = np.array([k[2] in VOWEL_VISEMES for k in keys])
            stress = np.array([k[4] for k in keys])
            target[:, 0] *= np.where(is_vowel, np.where(stress, 1.12, 0.9), 1.0)
        theta_tk = np.where(before, 0.7 * theta[None, :], theta[None, :])
        dom = alpha[None, :] * np.exp(-theta_tk * excess)  # [T, K]
        dom_sum = dom.sum(axis=1, keepdims=True) + 1e-3  # a faint pull towards rest (0)
        out[group] = np.clip(dom @ target / dom_sum, 0.0, 1.0)
    return out


def _set(track: np.ndarray, name: str, values) -> None:
    track[:, INDEX[name]] = values


def mouth_track(phones, times: np.ndarray, style: Style) -> np.ndarray:
    """The speech-driven lower face: ``[T, 52]`` in Apple order, zeros outside mouth/jaw/cheek.

    ``times`` are the grid frame times (seconds). Values are clipped to [0, 1].
    """
    g = group_tracks(phones, times, style.lead_s)
    jaw = g["jaw"][:, 0]
    pucker, funnel = g["round"][:, 0], g["round"][:, 1]
    spread = g["spread"][:, 0]
    close, press, roll_lo, roll_up, puff = (g["close"][:, i] for i in range(5))
    tuck, tongue = g["labdent"][:, 0], g["tongue"][:, 0]
    left, right = 1.0 + style.asym, 1.0 - style.asym

    track = np.zeros((len(times), NUM_BLENDSHAPES))
    jaw_open = style.jaw_gain * jaw
    _set(track, "jawOpen", jaw_open)
    _set(track, "mouthClose", 0.75 * style.close_gain * close)
    _set(track, "mouthPressLeft", 0.7 * press * left)
    _set(track, "mouthPressRight", 0.7 * press * right)
    _set(track, "mouthRollLower", 0.55 * roll_lo + 0.6 * tuck)
    _set(track, "mouthRollUpper", 0.45 * roll_up)
    _set(track, "cheekPuff", puff)
    _set(track, "mouthPucker", style.lip_gain * pucker * (1.0 - 0.5 * spread))
    _set(track, "mouthFunnel", style.lip_gain * funnel * (1.0 - 0.3 * close))
    smile = style.smile_gain * 0.5 * spread + style.smile_base
    _set(track, "mouthSmileLeft", smile * left)
    _set(track, "mouthSmileRight", smile * right)
    _set(track, "mouthStretchLeft", 0.3 * spread * left)
    _set(track, "mouthStretchRight", 0.3 * spread * right)
    _set(track, "mouthDimpleLeft", 0.12 * spread + 0.1 * press)
    _set(track, "mouthDimpleRight", 0.12 * spread + 0.1 * press)
    _set(track, "mouthLowerDownLeft", 0.4 * jaw_open * left + 0.1 * spread)
    _set(track, "mouthLowerDownRight", 0.4 * jaw_open * right + 0.1 * spread)
    _set(track, "mouthUpperUpLeft", 0.35 * tuck + 0.12 * spread)
    _set(track, "mouthUpperUpRight", 0.35 * tuck + 0.12 * spread)
    _set(track, "mouthShrugLower", 0.3 * press + 0.15 * tuck)
    _set(track, "mouthShrugUpper", 0.2 * press)
    _set(track, "noseSneerLeft", 0.08 * tuck)
    _set(track, "noseSneerRight", 0.08 * tuck)
    _set(track, "tongueOut", 0.45 * tongue)
    return np.clip(track, 0.0, 1.0)
