"""Recognised words (``render.recognise_words``): PocketSphinx's word search with its bundled en-us
language model and dictionary, as an automatic transcript."""

from __future__ import annotations

import difflib

import numpy as np
import pytest
import soxr

from koemorph import grid
from koemorph.config import FeaturesConfig
from koemorph.demo.engines import EngineMissing, check_engines

pytest.importorskip("pocketsphinx")

SAID = "Please remember to buy milk and bread on your way home."
MISTAKE = "I made a big mistake and I am sorry."


def flite(text: str) -> np.ndarray:
    """flite's slt voice saying ``text``: ``[N]`` float32 at 16 kHz with 0.3 s of silence each side."""
    from koemorph.demo.binaries import flite_synth

    try:
        check_engines(["flite"])
    except EngineMissing as exc:
        pytest.skip(str(exc))
    samples, rate, _ = flite_synth("slt", text, 175, 50, 50)
    x = soxr.resample(samples.astype(np.float64) / 32768.0, rate, grid.SAMPLE_RATE).astype(np.float32)
    pad = np.zeros(grid.num_samples(0.3), np.float32)
    return np.concatenate([pad, x, pad])


@pytest.mark.parametrize("adapted", [False, True])
def test_a_clear_voice_is_heard_word_for_word_and_silence_as_nothing(adapted):
    from koemorph.features.words import MIN_LOG_POSTERIOR, Recognised, recognise_words

    heard = recognise_words(flite(SAID), adapted).words
    said = SAID.lower().rstrip(".").split()
    same = sum(b.size for b in difflib.SequenceMatcher(a=said, b=heard.split()).get_matching_blocks())
    assert same >= len(said) - 2, heard
    assert heard == heard.lower() and "  " not in heard and "<" not in heard
    exact = recognise_words(flite(MISTAKE), adapted)
    assert exact.words == MISTAKE.lower().rstrip(".") and exact.confident
    assert 0.0 > exact.log_posterior >= MIN_LOG_POSTERIOR
    assert not Recognised("", None).confident
    for nothing in (np.zeros(grid.SAMPLE_RATE, np.float32), np.zeros(0, np.float32)):
        assert recognise_words(nothing, adapted) == Recognised("", None)


@pytest.mark.parametrize("adapted", [False, True])
def test_words_that_do_not_fit_the_sound_are_mostly_not_confident(adapted):
    """espeak's formant voice, which PocketSphinx mishears, is not confident; of six bursts of
    speech-like noise at most two are (the search does find confident words in some noise)."""
    from koemorph.demo.synth import speechlike
    from koemorph.features.words import recognise_words
    from tests.test_phones import speak

    x, _ = speak("I would like a cup of tea with a little bit of milk.", "en-us")
    heard = recognise_words(x, adapted)
    assert heard.words and not heard.confident, heard
    noise = [recognise_words(speechlike(3.0, seed=seed).astype(np.float32), adapted) for seed in range(6)]
    assert all(n.words for n in noise) and sum(n.confident for n in noise) <= 2, noise


def test_the_adapted_search_hears_a_voice_the_front_end_mishears():
    """espeak's voice: the cepstra fitted to it give more of the sentence's words than PocketSphinx's
    own front end does (neither is confident of them)."""
    from koemorph.features.words import recognise_words
    from tests.test_phones import speak

    said = "I would like a cup of tea with a little bit of milk."
    x, _ = speak(said, "en-us")

    def right(heard: str) -> int:
        m = difflib.SequenceMatcher(a=said.lower().rstrip(".").split(), b=heard.split())
        return sum(b.size for b in m.get_matching_blocks())

    front_end, adapted = recognise_words(x).words, recognise_words(x, adapted=True).words
    assert right(adapted) >= right(front_end) + 3, (front_end, adapted)


def test_words_are_a_pure_function_of_the_samples():
    """The front end is reset per file: a file decoded after another gives the same words; adapted,
    the words of the cepstra the thread kept are those of the cepstra computed afresh."""
    from koemorph.features import phones
    from koemorph.features.words import recognise_words

    x, other = flite(SAID), flite("Bob met Pam by the blue moon.") * 0.3
    for adapted in (False, True):
        first = recognise_words(x, adapted)
        recognise_words(other, adapted)
        assert recognise_words(x, adapted) == first and first.log_posterior is not None
        phones._local.__dict__.pop("adapted", None)
        assert recognise_words(x, adapted) == first


def test_recognised_words_name_the_bilabials_phone_recognition_missed():
    """ "I made a big mistake and I am sorry": one phone decode alone names none of its four
    bilabials (made, big, mistake, am) P/B/M; renamed with the recognised words, the phones have
    P/B/M rows exactly where the true transcript's renaming puts them."""
    from koemorph.features.phones import phone_features
    from koemorph.features.transcript import transcript_phone_features
    from koemorph.features.words import recognise_words
    from tests.test_phones import BILABIAL

    x, cfg = flite(MISTAKE), FeaturesConfig(fps=30, phones_decoding="whole")

    def bilabial(rows: np.ndarray) -> np.ndarray:
        return rows[:, BILABIAL].sum(1) > 0.5

    told = bilabial(transcript_phone_features(x, cfg, MISTAKE)[0])
    onsets = np.flatnonzero(np.diff(told.astype(int)) == 1) + 1
    assert len(onsets) == 4
    assert not bilabial(phone_features(x, cfg))[onsets].any()
    assert np.array_equal(bilabial(transcript_phone_features(x, cfg, recognise_words(x).words)[0]), told)
