"""Recognised words: an automatic transcript for a file that has none.

PocketSphinx (extra ``phones``) decodes a whole file with its bundled CMU en-us acoustic model,
its bundled general English trigram language model (``en-us.lm.bin``) and pronunciation
dictionary (``cmudict-en-us.dict``), in one utterance with batch cepstral mean normalisation; for a
model with adapted phone decoding, from the same cepstra fitted to the file's voice that its phones
are decoded from.
Nothing is downloaded. Its words rename the file's recognised phones exactly as a transcript's
do (:func:`koemorph.features.transcript.transcript_phone_features`): on speech the recogniser
understands, the dictionary's phones name the segments far better than phone recognition alone;
on a voice it does not (or random words, which the language model does not expect), the words are
wrong and so are their phones.

Confidence. The search's posterior probability of its hypothesis (from its best-path lattice),
as a log per recognised word, says whether the words fit the sound: it is high on clear speech the
recogniser understands and low on a voice it does not, on noisy audio and on word strings the
language model does not expect. Recognised words are used as a transcript only when it is at least
:data:`MIN_LOG_POSTERIOR`; otherwise the file keeps its recognised phones.

Search settings: the tree search alone (no second flat pass), at most 2000 active HMMs and 5
word exits per frame, which keeps decoding near 0.1 CPU s per audio second; half-bit dither from
a fixed seed as for the phones, so digital silence decodes as silence and the result is a pure
function of the samples.
"""

from __future__ import annotations

import math
import os
import threading
from typing import NamedTuple

import numpy as np

WORD_DECODER_SETTINGS = {"fwdflat": False, "maxhmmpf": 2000, "maxwpf": 5, "dither": True, "seed": 1}
MIN_LOG_POSTERIOR = -0.6  # natural log of the hypothesis' posterior, per word
SEARCH_VERSION = 2  # bump when the search or what it reads changes (2: the adapted cepstra)


class Recognised(NamedTuple):
    """``words``: lower case, single spaces ("" for none); ``log_posterior``: the natural log of the
    hypothesis' posterior probability divided by the number of words (None without words, or when
    the posterior underflows to 0)."""

    words: str
    log_posterior: float | None

    @property
    def confident(self) -> bool:
        """Whether the words are trusted as a transcript (log posterior >= MIN_LOG_POSTERIOR)."""
        return self.log_posterior is not None and self.log_posterior >= MIN_LOG_POSTERIOR


_local = threading.local()  # per thread: one decoder (loading the model and dictionary takes ~1 s)


def new_word_decoder():
    """A PocketSphinx word decoder on the bundled en-us model, language model and dictionary.
    ImportError naming the ``phones`` extra when ``pocketsphinx`` is not installed."""
    from koemorph.features.phones import pocketsphinx_model

    pocketsphinx, model = pocketsphinx_model("recognised words")
    return pocketsphinx.Decoder(
        hmm=os.path.join(model, "en-us"),
        lm=os.path.join(model, "en-us.lm.bin"),
        dict=os.path.join(model, "cmudict-en-us.dict"),
        logfn=os.devnull,
        **WORD_DECODER_SETTINGS,
    )


def recognise_words(samples: np.ndarray, adapted: bool = False) -> Recognised:
    """The words PocketSphinx hears in a whole file and their confidence (:class:`Recognised`).
    ``samples``: ``[N]`` float32 mono at 16 kHz. ``adapted``: search the cepstra fitted to the file's
    voice (:func:`koemorph.features.phones.adapted_cepstra`, shared with adapted phone decoding)
    instead of PocketSphinx's own front end. Fillers (silence, noise) are left out."""
    from koemorph.features.phones import adapted_cepstra, to_pcm16

    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return Recognised("", None)
    if not hasattr(_local, "decoder"):
        _local.decoder = new_word_decoder()
    dec = _local.decoder
    if adapted:
        ceps, _ = adapted_cepstra(np.frombuffer(to_pcm16(x), dtype="<i2"))
        if ceps is None:
            return Recognised("", None)
        dec.start_utt()
        dec.process_cep(np.ascontiguousarray(ceps).tobytes(), False, True)
    else:
        dec.reinit_feat()  # the front end's noise estimate would otherwise carry over from the last file
        dec.start_utt()
        dec.process_raw(to_pcm16(x), False, True)
    dec.end_utt()
    hyp = dec.hyp()
    words = hyp.hypstr.split() if hyp is not None else []
    if not words or not hyp.prob > 0.0:
        return Recognised(" ".join(words), None)
    return Recognised(" ".join(words), round(math.log(hyp.prob) / len(words), 4))


def hash_constants() -> dict:
    """What fixes :func:`recognise_words`' output and its use besides the samples and the phone
    decoding (whose hash holds the PocketSphinx version and the adaptation): for render's records."""
    return {
        "settings": dict(WORD_DECODER_SETTINGS),
        "min_log_posterior": MIN_LOG_POSTERIOR,
        "version": SEARCH_VERSION,
    }


__all__ = [
    "MIN_LOG_POSTERIOR",
    "WORD_DECODER_SETTINGS",
    "Recognised",
    "hash_constants",
    "new_word_decoder",
    "recognise_words",
]
