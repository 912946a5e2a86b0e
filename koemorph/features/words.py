"""Recognised words: an automatic transcript for a file that has none.

PocketSphinx (extra ``phones``) decodes a whole file with its bundled CMU en-us acoustic model,
its bundled general English trigram language model (``en-us.lm.bin``) and pronunciation
dictionary (``cmudict-en-us.dict``), in one utterance with batch cepstral mean normalisation.
Nothing is downloaded. Its words rename the file's recognised phones exactly as a transcript's
do (:func:`koemorph.features.transcript.transcript_phone_features`): on speech the recogniser
understands, the dictionary's phones name the segments far better than phone recognition alone;
on a voice it does not (or random words, which the language model does not expect), the words are
wrong and so are their phones.

Search settings: the tree search alone (no second flat pass), at most 2000 active HMMs and 5
word exits per frame, which keeps decoding near 0.1 CPU s per audio second; half-bit dither from
a fixed seed as for the phones, so digital silence decodes as silence and the result is a pure
function of the samples.
"""

from __future__ import annotations

import os
import threading

import numpy as np

WORD_DECODER_SETTINGS = {"fwdflat": False, "maxhmmpf": 2000, "maxwpf": 5, "dither": True, "seed": 1}

_local = threading.local()  # per thread: one decoder (loading the model and dictionary takes ~1 s)


def new_word_decoder():
    """A PocketSphinx word decoder on the bundled en-us model, language model and dictionary.

    Raises ImportError naming the ``phones`` extra when ``pocketsphinx`` is not installed.
    """
    try:
        import pocketsphinx
    except ImportError as exc:
        raise ImportError(
            "recognising words needs the optional 'pocketsphinx' package: pip install 'koemorph[phones]'"
        ) from exc
    model = os.path.join(pocketsphinx.get_model_path(), "en-us")
    return pocketsphinx.Decoder(
        hmm=os.path.join(model, "en-us"),
        lm=os.path.join(model, "en-us.lm.bin"),
        dict=os.path.join(model, "cmudict-en-us.dict"),
        cmn="batch",
        logfn=os.devnull,
        **WORD_DECODER_SETTINGS,
    )


def recognise_words(samples: np.ndarray) -> str:
    """The words PocketSphinx hears in a whole file, lower case, separated by single spaces ("" for
    none). ``samples``: ``[N]`` float32 mono at 16 kHz. Fillers (silence, noise) are left out."""
    from koemorph.features.phones import to_pcm16

    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return ""
    if not hasattr(_local, "decoder"):
        _local.decoder = new_word_decoder()
    dec = _local.decoder
    dec.reinit_feat()  # the front end's noise estimate would otherwise carry over from the last file
    dec.start_utt()
    dec.process_raw(to_pcm16(x), False, True)
    dec.end_utt()
    hyp = dec.hyp()
    return " ".join(hyp.hypstr.split()) if hyp is not None else ""


__all__ = ["WORD_DECODER_SETTINGS", "new_word_decoder", "recognise_words"]
