"""The demo speakers: espeak-ng accents x voice variants, flite and festival voices x prosody
variants, each with speech and face style, and the train/val/test split by voice. Everything
here is a pure function of the seed.

Voice slugs have no ``_`` and are unique across engines (espeak ``usm3``, ``rpannie``; flite
``fl-slt1``; festival ``fe-kal2``), so a file id ``<slug>_<nnnn>`` gives the speaker both as
"text before the first ``_``" and through ``DataConfig.speaker_pattern``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from koemorph.demo.visemes import Style

# (espeak-ng voice name, slug prefix)
ACCENTS = (
    ("en-us", "us"),
    ("en", "gb"),
    ("en-gb-x-rp", "rp"),
    ("en-029", "car"),
    ("en-gb-scotland", "sc"),
    ("en-us-nyc", "ny"),
)
MALE_VARIANTS = tuple(f"m{i}" for i in range(1, 9))
# No f2/f3/f5: their "breath" noise makes espeak-ng's output differ between runs.
FEMALE_VARIANTS = ("f1", "f4", "Annie", "anika", "belinda", "steph", "aunty", "Andrea")


@dataclass(frozen=True)
class Voice:
    """One demo speaker: espeak settings plus articulation/face style."""

    slug: str
    synth_voice: str  # the engine's voice: espeak "en-us+f3", flite "slt", festival "kal_diphone"
    gender: str  # "m" or "f"
    rate: int  # words per minute
    pitch: int  # 0-100
    pitch_range: int  # 0-100
    brow_gain: float
    style: Style
    engine: str = "espeak"  # "espeak" | "flite" | "festival"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["style"] = {k: round(v, 4) for k, v in d["style"].items()}
        d["brow_gain"] = round(d["brow_gain"], 4)
        return d


def make_voices(seed: int) -> list[Voice]:
    """12 voices: each accent once male and once female, variants drawn without repeats where possible."""
    rng = np.random.default_rng([seed, 101])
    males = list(rng.permutation(MALE_VARIANTS))
    females = list(rng.permutation(FEMALE_VARIANTS))
    voices = []
    for i, (accent, prefix) in enumerate(ACCENTS):
        for gender, pool in (("m", males), ("f", females)):
            variant = str(pool[i % len(pool)])
            low, high = (28, 55) if gender == "m" else (45, 78)
            voices.append(
                Voice(
                    slug=f"{prefix}{variant.lower()}",
                    synth_voice=f"{accent}+{variant}",
                    gender=gender,
                    rate=int(rng.integers(145, 196)),
                    pitch=int(rng.integers(low, high)),
                    pitch_range=int(rng.integers(35, 91)),
                    brow_gain=float(rng.uniform(0.5, 1.1)),
                    style=Style.sample(rng),
                )
            )
    return voices


def split_voices(voices: list[Voice], seed: int) -> dict[str, list[Voice]]:
    """Voices per split, disjoint: val and test get one male and one female each, train the rest."""
    rng = np.random.default_rng([seed, 102])
    males = [voices[i] for i in rng.permutation([i for i, v in enumerate(voices) if v.gender == "m"])]
    females = [voices[i] for i in rng.permutation([i for i, v in enumerate(voices) if v.gender == "f"])]
    return {
        "val": [males[0], females[0]],
        "test": [males[1], females[1]],
        "train": sorted(males[2:] + females[2:], key=lambda v: v.slug),
    }


# engine -> (engine voice, slug stem, gender); slugs get the engine prefix and a variant number
BINARY_VOICES = {
    "flite": (("kal16", "kal", "m"), ("awb", "awb", "m"), ("rms", "rms", "m"), ("slt", "slt", "f")),
    "festival": (
        ("kal_diphone", "kal", "m"),
        ("ked_diphone", "ked", "m"),
        ("cmu_us_slt_arctic_hts", "slt", "f"),
    ),
}
SLUG_PREFIX = {"flite": "fl-", "festival": "fe-"}
VARIANTS = 2  # prosody/face variants per flite or festival voice


def make_engine_voices(engine: str, seed: int) -> list[Voice]:
    """The voices of ``engine``: espeak's :func:`make_voices`, else each voice of BINARY_VOICES in
    VARIANTS seeded variants (rate, pitch, pitch range, face style), slugs ``<prefix><stem><k>``.
    flite uses rate, pitch and pitch range; festival only the rate (its voices keep their own pitch)."""
    if engine == "espeak":
        return make_voices(seed)
    rng = np.random.default_rng([seed, 103, sum(map(ord, engine))])
    voices = []
    for synth_voice, stem, gender in BINARY_VOICES[engine]:
        for k in range(1, VARIANTS + 1):
            voices.append(
                Voice(
                    slug=f"{SLUG_PREFIX[engine]}{stem}{k}",
                    synth_voice=synth_voice,
                    gender=gender,
                    rate=int(rng.integers(145, 196)),
                    pitch=int(rng.integers(20, 81)),
                    pitch_range=int(rng.integers(35, 91)),
                    brow_gain=float(rng.uniform(0.5, 1.1)),
                    style=Style.sample(rng),
                    engine=engine,
                )
            )
    return voices


def split_engine_voices(engine: str, seed: int) -> dict[str, list[Voice]]:
    """Voices of ``engine`` per split, disjoint: espeak's :func:`split_voices`; for flite and festival
    all variants of one base voice go to val, all of another to test, the rest to train (so a
    held-out speaker is never heard in training under another variant)."""
    voices = make_engine_voices(engine, seed)
    if engine == "espeak":
        return split_voices(voices, seed)
    bases = [b[0] for b in BINARY_VOICES[engine]]
    order = [
        bases[i] for i in np.random.default_rng([seed, 104, sum(map(ord, engine))]).permutation(len(bases))
    ]
    return {
        "val": [v for v in voices if v.synth_voice == order[0]],
        "test": [v for v in voices if v.synth_voice == order[1]],
        "train": sorted((v for v in voices if v.synth_voice not in order[:2]), key=lambda v: v.slug),
    }
