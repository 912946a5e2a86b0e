"""Features of a file to render or score: read from a feature store when it holds the same audio
with the same feature settings, else computed with the training extractors.

All arrays are on the time grid (frame ``k`` at ``k / fps`` s, 16 kHz audio): log-mel
``[T, n_mels]`` (dB re full scale), eGeMAPS ``[T, 88]`` and phone shares ``[T, 40]``,
``T = num_frames_for_samples(N, fps)``.
A store group is used only when its audio sha256, frame count and per-array config hashes (those of
:func:`koemorph.data.extract.array_hashes` for the wanted feature settings) all match.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from koemorph import grid


def store_index(store: str | Path, features: dict) -> dict[str, str]:
    """``{audio_sha256: group id}`` of complete store groups whose mel (and eGeMAPS, if used) hashes
    match the checkpoint's feature config (the store's results: :func:`koemorph.data.store.read_results`)."""
    from koemorph.data.store import read_results

    records = read_results(store)
    want = _checkpoint_hashes(features)
    return {
        r.audio_sha256: r.id
        for r in records
        if r.status != "error" and all((r.hashes or {}).get(k) == v for k, v in want.items())
    }


def _wanted_hashes(features) -> dict:
    """The feature-cache hashes (:func:`koemorph.data.extract.array_hashes`) of the arrays a model
    with ``features`` (a FeaturesConfig) reads: mel, and eGeMAPS and phones when it uses them."""
    from koemorph.config import DataConfig
    from koemorph.data.extract import array_hashes

    hashes = array_hashes(features, DataConfig())
    return {k: hashes[k] for k in ("mel", "egemaps", "phones") if hashes.get(k) is not None}


def _checkpoint_hashes(features: dict) -> dict:
    """:func:`_wanted_hashes` of a checkpoint's feature config (a FeaturesConfig as a dict)."""
    from koemorph.config import FeaturesConfig, load_section

    return _wanted_hashes(load_section(FeaturesConfig, features, "features"))


def render_hashes(features: dict, match_level: bool) -> dict[str, str]:
    """What makes a rendered file's features besides its audio and the model, per source of its
    phones' names: ``{"audio": ..., "transcript": ..., "recognised": ...}`` (phones as recognised,
    renamed with a transcript, renamed with recognised words), short hashes of the feature-cache
    hashes of the checkpoint's ``features`` (a FeaturesConfig dict), the level matching's constants
    when ``match_level`` (``render.match_level``), the renaming's constants and the word search's.
    Render records the file's; a different value renders it again."""
    from koemorph.features.level import hash_constants as level
    from koemorph.features.transcript import hash_constants as renaming
    from koemorph.features.words import hash_constants as search
    from koemorph.io.digest import short_hash

    hashes = _checkpoint_hashes(features) | ({"level": level()} if match_level else {})
    told = {**hashes, "renaming": renaming()}
    return {
        "audio": short_hash(hashes),
        "transcript": short_hash(told),
        "recognised": short_hash({**told, "words": search()}),
    }


def stored_features(store, group, audio_sha256, cfg, use_ege, n_frames):
    """``(mel, egemaps or None, first_valid, phones or None)`` raw from a store group, or None if it does
    not match (another audio sha256, another frame count, or arrays made with other feature settings
    ``cfg``). Phones are read when ``cfg.phones``."""
    from koemorph.data.store import open_arrays, read_group_attrs

    attrs = read_group_attrs(store, group)
    want = _wanted_hashes(cfg)
    if not use_ege:
        want.pop("egemaps", None)
    if not attrs or attrs.get("audio_sha256") != audio_sha256 or attrs.get("num_frames") != n_frames:
        return None
    if any((attrs.get("hashes") or {}).get(k) != v for k, v in want.items()):
        return None
    arrays = open_arrays(store, group)
    if any(k not in arrays for k in want):
        return None
    ege = arrays["egemaps"][:] if use_ege else None
    first = int(arrays["egemaps"].attrs.get("first_valid_frame", 0)) if use_ege else n_frames
    phones = np.asarray(arrays["phones"][:], np.float32) if "phones" in want else None
    return np.asarray(arrays["mel"][:], np.float32), ege, first, phones


def file_features(samples: np.ndarray, audio_sha256: str, meta: dict, job) -> tuple[dict, str]:
    """Normalised features of one file at the model's fps: ``({"mel", "egemaps", "mel_pad",
    "unknown_words", "recognised", "gain_db"}, source)``
    (:func:`koemorph.features.normalise.normalise_features`: with phones, ``mel`` is the frame input).

    ``job`` is a :class:`koemorph.inference.render.RenderJob`. ``source`` is ``"store:<group>"``
    when read from ``job.store`` (same audio sha256 and feature hashes, same frame count), else
    ``"computed"``. With ``job.transcript`` (phone models only), the phones are the recognised ones
    relabelled with its words (:func:`koemorph.features.transcript.transcript_phone_features`),
    whatever the store holds (source column 1 for a model with ``features.phones_text``), and
    ``unknown_words`` lists the words it left out (else None). Without a transcript but with
    ``job.recognise_words``, the words PocketSphinx recognises
    (:func:`koemorph.features.words.recognise_words`) serve as one when they are confident, and
    ``recognised`` holds them and their confidence (else None). With ``job.match_level``, an input
    whose speech level lies outside the model's training levels is first scaled to them
    (:func:`_matched_level`; ``gain_db``, 0 when not), and its features are computed.
    """
    from koemorph.features.normalise import normalise_features

    cfg = meta["config"].features
    use_ege = bool(cfg.egemaps and "egemaps" in meta["stats"])
    n_frames = grid.num_frames_for_samples(samples.size, cfg.fps)
    cached = None
    if job.store and job.store_group:
        cached = stored_features(job.store, job.store_group, audio_sha256, cfg, use_ege, n_frames)
    samples, gain, mel = _matched_level(samples, cfg, meta, job, cached)
    if gain == 0.0 and cached is not None:
        (mel, ege, first, phones), source = cached, f"store:{job.store_group}"
    else:
        mel, ege, first, phones = _computed(samples, cfg, use_ege, not job.transcript, mel)
        source = "computed"
    unknown, heard = None, None
    if cfg.phones and (job.transcript or job.recognise_words):
        phones, unknown, heard = _renamed_phones(samples, cfg, job, phones)
    from_text = unknown is not None
    out = normalise_features(mel, ege, first, meta["stats"], cfg, phones, from_text)
    return out | {"unknown_words": unknown, "recognised": heard, "gain_db": gain}, source


def _matched_level(samples: np.ndarray, cfg, meta: dict, job, cached) -> tuple:
    """``(samples, gain_db, mel)``: the input scaled to the levels the model trained on when
    ``job.match_level`` and its speech level lies outside them
    (:func:`koemorph.features.level.matching_gain_db`), else as it is (gain 0). ``mel`` is the
    log-mel ``[T, n_mels]`` dB of the returned samples (from ``cached`` when given), or None when
    they were scaled."""
    from koemorph.features.level import gain_factor, matching_gain_db, speech_level_db
    from koemorph.features.registry import FEATURES

    mel = cached[0] if cached is not None else FEATURES["mel"].compute(samples, cfg)[0]
    if not job.match_level:
        return samples, 0.0, mel
    gain = round(matching_gain_db(speech_level_db(mel), meta["stats"].get("level")), 2)
    if gain == 0.0:
        return samples, 0.0, mel
    return (samples * gain_factor(gain)).astype(np.float32), gain, None


def _renamed_phones(samples: np.ndarray, cfg, job, recognised: np.ndarray | None) -> tuple:
    """``(phones [T, P], unknown words or None, heard or None)``: the recognised phones renamed with
    ``job.transcript``'s words, else with the words recognised in ``samples`` (``heard``,
    :class:`koemorph.features.words.Recognised`) when they are confident; otherwise the file's
    ``recognised`` phones as they are, and ``unknown`` is None (not a transcript's)."""
    from koemorph.features.transcript import read_transcript, transcript_phone_features
    from koemorph.features.words import recognise_words

    heard = None
    if job.transcript:
        text = read_transcript(job.transcript)
    else:
        heard = recognise_words(samples, adapted=cfg.phones_decoding == "adapted")
        if not heard.confident:
            return recognised, None, heard
        text = heard.words
    phones, unknown = transcript_phone_features(samples, cfg, text)
    return phones, unknown, heard


def _computed(samples: np.ndarray, cfg, use_ege: bool, with_phones: bool, mel=None) -> tuple:
    """``(mel, egemaps or None, first_valid, phones or None)`` raw, from the registered extractors
    (``mel``: the samples' log-mel when already computed)."""
    from koemorph.features.registry import FEATURES

    n_frames = grid.num_frames_for_samples(samples.size, cfg.fps)
    ege, first, phones = None, n_frames, None
    if mel is None:
        mel, _ = FEATURES["mel"].compute(samples, cfg)
    if use_ege:
        ege, attrs = FEATURES["egemaps"].compute(samples, cfg)
        first = attrs["first_valid_frame"]
    if cfg.phones and with_phones:
        phones, _ = FEATURES["phones"].compute(samples, cfg)
    return mel, ege, first, phones


def raw_mel(store, group, samples: np.ndarray, audio_sha256: str, cfg) -> tuple[np.ndarray, str]:
    """Log-mel ``[T, n_mels]`` float32 (dB, not normalised) of ``samples`` (16 kHz) at ``cfg.fps``:
    ``(mel, "store")`` from ``group`` of ``store`` when :func:`stored_features` accepts it (``group``
    None: not looked up), else ``(mel, "computed")`` with :func:`koemorph.features.mel.log_mel`."""
    from koemorph.features.mel import log_mel

    n_frames = grid.num_frames_for_samples(samples.size, cfg.fps)
    if group is not None:
        try:
            cached = stored_features(store, group, audio_sha256, cfg, False, n_frames)
        except (OSError, ValueError, KeyError):
            cached = None
        if cached is not None:
            return cached[0], "store"
    return log_mel(samples, cfg), "computed"
