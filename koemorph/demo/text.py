"""A small seeded English sentence grammar for the demo corpus.

The vocabulary (a few hundred words) is chosen to cover every mouth-shape class often:
bilabials (p, b, m), rounded vowels and w (oo, oh, w), spread vowels (ee), open vowels (ah),
labiodentals (f, v), dentals (th), postalveolars (sh, ch, j). Sentences have 3-15 words.

Everything is driven by a :class:`random.Random` passed in by the caller, so the same seed
gives the same text on every platform (the stdlib Mersenne Twister is specified exactly).
"""

from __future__ import annotations

import random

NAMES = (
    "Bob",
    "Pam",
    "Mia",
    "Ben",
    "Paul",
    "Molly",
    "Bruce",
    "Sue",
    "Ruth",
    "Theo",
    "Fiona",
    "Vic",
    "Sharon",
    "Charlie",
    "Joe",
    "Owen",
    "Maya",
    "Pete",
    "Eve",
    "Martha",
    "Victor",
    "Beth",
    "Mohammed",
    "June",
    "Rose",
    "Phil",
    "Wendy",
    "Noah",
    "Abby",
    "Jim",
)

ADJECTIVES = (
    "big",
    "blue",
    "bright",
    "brown",
    "pale",
    "pink",
    "purple",
    "smooth",
    "moody",
    "cool",
    "huge",
    "soft",
    "rough",
    "warm",
    "wet",
    "sweet",
    "cheap",
    "deep",
    "green",
    "clean",
    "mean",
    "sharp",
    "short",
    "fresh",
    "foolish",
    "famous",
    "thick",
    "thin",
    "wide",
    "calm",
    "dark",
    "large",
    "smart",
    "old",
    "gold",
    "slow",
    "low",
    "round",
    "proud",
    "loud",
    "woolly",
    "vivid",
    "heavy",
    "happy",
    "bumpy",
    "empty",
    "humble",
    "noble",
    "simple",
    "open",
    "frozen",
    "shiny",
    "cheerful",
    "brave",
    "quiet",
    "modern",
    "bitter",
    "silver",
    "yellow",
    "orange",
    "hollow",
    "narrow",
    "tiny",
    "sleepy",
)

NOUNS = (
    "boat",
    "book",
    "boot",
    "moon",
    "spoon",
    "balloon",
    "map",
    "mop",
    "pump",
    "lamp",
    "stamp",
    "bomb",
    "mob",
    "baby",
    "puppy",
    "bubble",
    "apple",
    "maple",
    "plum",
    "pumpkin",
    "bee",
    "tree",
    "sheep",
    "cheese",
    "key",
    "beach",
    "peach",
    "seed",
    "street",
    "queen",
    "father",
    "farmer",
    "mother",
    "brother",
    "feather",
    "fish",
    "wave",
    "van",
    "violin",
    "view",
    "glove",
    "oven",
    "valley",
    "thumb",
    "thread",
    "path",
    "bath",
    "moth",
    "tooth",
    "teeth",
    "shoe",
    "shop",
    "ship",
    "sheet",
    "chair",
    "cheek",
    "church",
    "chip",
    "watch",
    "judge",
    "bridge",
    "jar",
    "garden",
    "car",
    "star",
    "heart",
    "market",
    "guitar",
    "palm",
    "harp",
    "ocean",
    "goat",
    "road",
    "stone",
    "phone",
    "window",
    "pillow",
    "yellow",
    "rope",
    "soap",
    "coat",
    "ball",
    "wall",
    "door",
    "floor",
    "horse",
    "dog",
    "clock",
    "rock",
    "box",
    "pot",
    "lobster",
    "room",
    "school",
    "pool",
    "roof",
    "wood",
    "wolf",
    "woman",
    "worm",
    "water",
    "wagon",
    "wheel",
    "whale",
    "machine",
    "mouse",
    "house",
    "cloud",
    "mountain",
    "fountain",
    "owl",
    "tower",
    "cow",
    "boy",
    "toy",
    "coin",
    "voice",
    "kite",
    "pie",
    "bike",
    "mirror",
    "table",
    "paper",
    "people",
    "problem",
    "movie",
    "memory",
    "museum",
    "umbrella",
    "bottle",
    "butter",
    "bread",
    "broom",
    "berry",
    "bamboo",
    "robot",
    "monkey",
    "panther",
    "zebra",
)

# (base form, past tense)
VERBS_T = (
    ("move", "moved"),
    ("push", "pushed"),
    ("pull", "pulled"),
    ("grab", "grabbed"),
    ("drop", "dropped"),
    ("keep", "kept"),
    ("find", "found"),
    ("bring", "brought"),
    ("buy", "bought"),
    ("build", "built"),
    ("paint", "painted"),
    ("wash", "washed"),
    ("watch", "watched"),
    ("fetch", "fetched"),
    ("choose", "chose"),
    ("throw", "threw"),
    ("fix", "fixed"),
    ("fill", "filled"),
    ("feed", "fed"),
    ("shove", "shoved"),
    ("open", "opened"),
    ("borrow", "borrowed"),
    ("remove", "removed"),
    ("polish", "polished"),
    ("smash", "smashed"),
    ("cover", "covered"),
    ("weigh", "weighed"),
    ("measure", "measured"),
    ("wrap", "wrapped"),
    ("bump", "bumped"),
    ("mop", "mopped"),
    ("sweep", "swept"),
    ("sell", "sold"),
    ("steal", "stole"),
    ("teach", "taught"),
    ("catch", "caught"),
    ("approve", "approved"),
    ("admire", "admired"),
    ("bake", "baked"),
    ("boil", "boiled"),
)

VERBS_I = (
    ("moved", "move"),
    ("smiled", "smile"),
    ("laughed", "laugh"),
    ("waved", "wave"),
    ("jumped", "jump"),
    ("bounced", "bounce"),
    ("swam", "swim"),
    ("breathed", "breathe"),
    ("shouted", "shout"),
    ("whispered", "whisper"),
    ("mumbled", "mumble"),
    ("played", "play"),
    ("paused", "pause"),
    ("vanished", "vanish"),
    ("floated", "float"),
    ("roamed", "roam"),
    ("yawned", "yawn"),
    ("cheered", "cheer"),
    ("sneezed", "sneeze"),
    ("slept", "sleep"),
    ("wobbled", "wobble"),
)

ADVERBS = (
    "slowly",
    "boldly",
    "happily",
    "smoothly",
    "freely",
    "softly",
    "quietly",
    "proudly",
    "calmly",
    "often",
    "very well",
    "at home",
    "all day",
    "by the pool",
    "with a smile",
    "on Monday",
    "at dawn",
    "in the morning",
    "on purpose",
    "somehow",
    "anyway",
    "above the roof",
    "both ways",
)

PREPOSITIONS = (
    "by",
    "beside",
    "behind",
    "below",
    "above",
    "among",
    "past",
    "from",
    "with",
    "without",
    "over",
    "under",
    "near",
    "beyond",
    "through",
    "toward",
    "inside",
    "upon",
    "off",
    "between the",
    "onto",
)

DETERMINERS = (
    "the",
    "the",
    "a",
    "my",
    "your",
    "both",
    "some",
    "that",
    "this",
    "those",
    "every",
    "our",
    "her",
)
NUMBERS = ("two", "three", "four", "five", "nine", "twelve", "many", "fifty", "seven", "several")
MODALS = ("will", "may", "must", "should", "would", "could", "might", "can")
CONJUNCTIONS = ("and", "but", "because", "so", "while", "when", "before", "although")
INTERJECTIONS = ("oh", "wow", "oops", "hmm", "ahh", "well", "yes", "boo", "whoa", "phew")
MIN_WORDS, MAX_WORDS = 3, 15


def _noun_phrase(rng: random.Random) -> list[str]:
    r = rng.random()
    if r < 0.15:
        return [rng.choice(NAMES)]
    if r < 0.25:
        return [rng.choice(NUMBERS), rng.choice(ADJECTIVES), rng.choice(NOUNS) + "s"]
    words = [rng.choice(DETERMINERS)]
    if rng.random() < 0.6:
        words.append(rng.choice(ADJECTIVES))
    if rng.random() < 0.15:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return words


def _prep_phrase(rng: random.Random) -> list[str]:
    prep = rng.choice(PREPOSITIONS).split()
    np_ = _noun_phrase(rng)
    if prep[-1] == "the" and np_[0] in DETERMINERS:
        np_ = np_[1:]
    return prep + np_


def _clause(rng: random.Random) -> list[str]:
    kind = rng.randrange(7)
    subj = _noun_phrase(rng)
    if kind == 0:  # transitive, past
        out = subj + [rng.choice(VERBS_T)[1]] + _noun_phrase(rng)
    elif kind == 1:  # intransitive + adverb
        out = subj + [rng.choice(VERBS_I)[0]] + rng.choice(ADVERBS).split()
    elif kind == 2:  # modal + base form
        out = subj + [rng.choice(MODALS), rng.choice(VERBS_T)[0]] + _noun_phrase(rng)
    elif kind == 3:  # copula
        out = subj + [rng.choice(("was", "is", "seemed", "looked", "became"))]
        out += [rng.choice(ADJECTIVES)] + (["and", rng.choice(ADJECTIVES)] if rng.random() < 0.5 else [])
    elif kind == 4:  # imperative
        out = [rng.choice(VERBS_T)[0]] + _noun_phrase(rng)
    elif kind == 5:  # there is
        out = [
            "there",
            rng.choice(("was", "is")),
        ] + _noun_phrase(rng)
    else:  # intransitive base with modal
        out = subj + [rng.choice(MODALS), rng.choice(VERBS_I)[1]]
    if rng.random() < 0.45:
        out += _prep_phrase(rng)
    return out


def sentence(rng: random.Random) -> str:
    """One sentence of MIN_WORDS..MAX_WORDS words, capitalised, with final punctuation."""
    while True:
        words = _clause(rng)
        if rng.random() < 0.3:
            words += [rng.choice(CONJUNCTIONS)] + _clause(rng)
        if rng.random() < 0.1:
            words = [rng.choice(INTERJECTIONS) + ","] + words
        n = sum(len(w.split()) for w in words)
        if MIN_WORDS <= n <= MAX_WORDS:
            break
    mark = (
        "?"
        if words[0] in ("will", "may", "can") or rng.random() < 0.1
        else ("!" if rng.random() < 0.08 else ".")
    )
    if rng.random() < 0.15 and len(words) > 6:  # a mid-sentence comma: a short pause
        words[len(words) // 2] += ","
    text = " ".join(words)
    return text[0].upper() + text[1:] + mark


def utterance(rng: random.Random, n_words: int) -> str:
    """Sentences joined until at least ``n_words`` words (at least one sentence)."""
    parts: list[str] = []
    count = 0
    while count < n_words or not parts:
        s = sentence(rng)
        parts.append(s)
        count += len(s.split())
    return " ".join(parts)
