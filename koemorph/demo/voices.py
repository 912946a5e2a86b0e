"""The demo speakers: espeak-ng accents x voice variants, with speech and face style, and the
train/val/test split by voice. Everything here is a pure function of the seed.

Voice slugs are alphanumeric (``usm3``, ``rpannie``), so a file id ``<slug>_<nnnn>`` gives the
speaker both as "text before the first ``_``" and through ``DataConfig.speaker_pattern``.
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
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Voice:
    """One demo speaker: espeak settings plus articulation/face style."""

    slug: str
    espeak: str  # e.g. "en-us+f3"
    gender: str  # "m" or "f"
    rate: int  # words per minute
    pitch: int  # 0-100
    pitch_range: int  # 0-100
    brow_gain: float
    style: Style

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
                    espeak=f"{accent}+{variant}",
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
