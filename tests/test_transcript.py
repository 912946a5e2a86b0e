"""Transcripts: words to CMU phones, and recognised segments relabelled with them (real PocketSphinx
on espeak speech). ``koemorph render`` with ``NAME.txt`` beside ``NAME.wav``: tests/test_phone_model.py."""

from __future__ import annotations

import numpy as np
import pytest

from koemorph.config import FeaturesConfig
from koemorph.errors import InputError
from koemorph.features import transcript as tr

pytest.importorskip("pocketsphinx")


def labels(segments) -> list[str]:
    return [s[0] for s in segments]


def test_words_become_dictionary_phones_and_unknown_words_are_named():
    phones, unknown = tr.transcript_phones("Bob’s map, 2nd Zyxw! Churchs 12?")
    said = [*tr.pronounce("bob"), "Z", *tr.pronounce("map"), *tr.pronounce("church"), "Z"]
    assert phones == said + [*tr.pronounce("twelve")]
    assert tr.pronounce("bob") == ("B", "AA", "B") and tr.pronounce("map") == ("M", "AE", "P")
    assert unknown == ["2nd", "zyxw"]
    assert tr.transcript_phones("") == ([], [])


@pytest.mark.parametrize(
    ("digits", "words"),
    [
        ("0", "zero"),
        ("13", "thirteen"),
        ("40", "forty"),
        ("42", "forty two"),
        ("105", "one hundred five"),
        ("2024", "two thousand twenty four"),
        ("3000000017", "three billion seventeen"),
        ("007", "zero zero seven"),
    ],
)
def test_numbers_in_digits_are_read_as_words(digits, words):
    assert " ".join(tr.number_words(digits)) == words
    assert all(tr.pronounce(w) for w in words.split())


def test_matched_segments_take_the_transcript_names_and_keep_their_frames():
    heard = [("SIL", 0, 9), ("HH", 10, 14), ("IY", 15, 20), ("TH", 21, 25), ("SIL", 26, 40)]
    assert tr.relabel(heard, ["K", "IY", "P"]) == [
        ("SIL", 0, 9),
        ("K", 10, 14),
        ("IY", 15, 20),
        ("P", 21, 25),
        ("SIL", 26, 40),
    ]


def test_unheard_phones_share_a_neighbours_time_and_extra_sounds_keep_their_label():
    heard = [("SIL", 0, 9), ("AH", 10, 29), ("SIL", 30, 35)]
    out = tr.relabel(heard, ["B", "AH", "M"])
    assert labels(out) == ["SIL", "B", "AH", "M", "SIL"]
    assert [s[1:] for s in out[1:4]] == [(10, 16), (17, 22), (23, 29)]
    extra = [("SIL", 0, 4), ("M", 5, 9), ("AA", 10, 19), ("S", 20, 24), ("SIL", 25, 30)]
    assert labels(tr.relabel(extra, ["M", "AA"])) == ["SIL", "M", "AA", "S", "SIL"]
    assert tr.relabel(extra, []) == extra and tr.relabel([], ["M"]) == []


def test_relabelling_covers_the_same_frames_and_a_long_file_aligns_in_its_band():
    rng = np.random.default_rng(0)
    names = [p for p in tr.PHONE_INDEX if p != "SIL"]
    truth = [names[k] for k in rng.integers(0, len(names), 6000)]
    edges = np.cumsum(rng.integers(2, 12, len(truth) + 1))
    heard = [(p, int(a), int(b) - 1) for p, a, b in zip(truth, edges[:-1], edges[1:], strict=True)]
    garbled = [
        (names[(names.index(p) + 1) % len(names)] if k % 3 == 0 else p, a, b)
        for k, (p, a, b) in enumerate(heard)
    ]
    out = tr.relabel(garbled, truth)
    assert out == heard  # every third label wrong, the transcript puts each back in place
    frames = [f for _, a, b in out for f in range(a, b + 1)]
    assert frames == list(range(heard[0][1], heard[-1][2] + 1))


def test_an_unreadable_transcript_is_named(tmp_path):
    bad = tmp_path / "take.txt"
    bad.write_bytes(b"\xff\xfe caf\xe9")
    with pytest.raises(InputError, match=r"take\.txt: the transcript is not UTF-8 text"):
        tr.read_transcript(bad)
    with pytest.raises(InputError, match=r"gone\.txt: cannot read the transcript"):
        tr.read_transcript(tmp_path / "gone.txt")
    (tmp_path / "bom.txt").write_bytes("\ufeffBob".encode())
    assert tr.read_transcript(tmp_path / "bom.txt") == "Bob"


@pytest.mark.parametrize(
    ("text", "voice"), [("Paul put the pie by the bench", "en-us"), ("Bob bought a map", "en+f1")]
)
def test_a_transcript_names_the_bilabials_the_recogniser_missed(text, voice):
    """Voices and words where one PocketSphinx decode finds at most one of five espeak bilabials: with
    the transcript there is a P/B/M row within ±50 ms of each, and none further than 150 ms from one
    (the segments keep the recogniser's times: a "b" whose closure it heard as silence is named on
    the sound after it)."""
    from koemorph.features.phones import phone_features
    from tests.test_phones import BILABIAL, speak

    x, phones = speak(text, voice)
    cfg = FeaturesConfig(fps=30, phones_decoding="whole")
    heard = phone_features(x, cfg)
    told, unknown = tr.transcript_phone_features(x, cfg, text)
    assert told.shape == heard.shape and np.allclose(told.sum(1), 1.0) and unknown == []
    t = np.arange(len(told)) / 30
    truth = [(s, e) for name, s, e in phones if name in ("p", "b", "m")]

    def found(rows, slack):
        bilabial = rows[:, BILABIAL].sum(1) > 0.5
        near = [bool((bilabial & (t >= s - slack) & (t <= e + slack)).any()) for s, e in truth]
        stray = [
            k for k in np.flatnonzero(bilabial) if not any(s - 0.15 <= t[k] <= e + 0.15 for s, e in truth)
        ]
        return sum(near), stray

    assert len(truth) == 5 and found(heard, 0.05)[0] <= 1
    n, stray = found(told, 0.05)
    assert n == 5 and not stray, (n, t[stray])


def test_with_several_warps_each_decode_is_renamed_and_the_rows_averaged():
    from koemorph.features import phones as ph
    from koemorph.features.phones import phone_features
    from tests.test_phones import speak, whole_at

    text = "Bob bought a map"
    x, _ = speak(text, "en+f1")
    one = {w: tr.transcript_phone_features(x, whole_at(w), text)[0] for w in (0.9, 1.1)}
    both, unknown = tr.transcript_phone_features(x, whole_at(0.9, 1.1), text)
    assert unknown == [] and not np.array_equal(one[0.9], one[1.1])
    np.testing.assert_allclose(both, (one[0.9] + one[1.1]) / 2, atol=1e-6)
    heard = phone_features(x, whole_at(0.9, 1.1))
    told = [ph.PHONE_INDEX[p] for p in ("B", "AA", "T", "M", "AE", "P")]  # "Bob bought a map"
    assert both[:, told].sum() > heard[:, told].sum()  # each decode renamed with the words
