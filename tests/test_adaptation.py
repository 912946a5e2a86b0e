"""Adapted phone decoding: koemorph's copy of PocketSphinx's front end and the per-file transform."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from koemorph.config import FeaturesConfig
from koemorph.features import adaptation as ad
from koemorph.features import phones as ph
from koemorph.features import sphinx_frontend as fe
from tests.test_phones import check_rows, needs_pocketsphinx, speak

SENTENCE = "Bob bought a big map, and my mom sat by the pool with a pink umbrella."


def model_dir() -> str:
    return os.path.join(ph.pocketsphinx_model("tests")[1], "en-us")


@needs_pocketsphinx
def test_front_end_decodes_as_pocketsphinx_does_without_noise_removal(tmp_path):
    """The cepstra computed here, fed to ``process_cep``, give the phones ``process_raw`` gives on the
    same samples when the model's noise removal is off (its ``feat.params`` fixes it, so a copy is
    edited): the filterbank, window, scale and lifter are PocketSphinx's."""
    import pocketsphinx

    x, _ = speak(SENTENCE, "en-us+f3")
    copy = tmp_path / "en-us"
    shutil.copytree(model_dir(), copy)
    params = (copy / "feat.params").read_text().replace("-remove_noise yes", "-remove_noise no")
    (copy / "feat.params").write_text(params)
    model = ph.pocketsphinx_model("tests")[1]
    settings = {**ph.DECODER_SETTINGS, "dither": False}
    settings.pop("seed")
    dec = pocketsphinx.Decoder(
        hmm=str(copy), allphone=os.path.join(model, "en-us-phone.lm.bin"), logfn=os.devnull, **settings
    )
    assert dec.config["remove_noise"] is False
    pcm = ph.to_pcm16(x)
    dec.start_utt()
    dec.process_raw(pcm, False, True)
    dec.end_utt()
    raw = ph.frame_labels(ph.best_segments(dec), dec.n_frames())
    ceps = fe.cepstra(np.frombuffer(pcm, dtype="<i2"))
    assert 0 <= len(raw) - len(ceps) <= 2  # PocketSphinx zero-pads the end to about N / 160 frames
    mine = ph.frame_labels(ph._decode_cepstra(dec, ceps), len(raw))
    agree = (mine == raw).mean()
    assert agree > 0.9, f"own front end and PocketSphinx's agree on {agree:.0%} of frames"
    scaled = ph.frame_labels(ph._decode_cepstra(dec, ceps * 0.8), len(raw))
    assert (scaled == raw).mean() < agree - 0.1  # the check sees a wrong scale


def test_front_end_shapes_and_model_check(tmp_path):
    assert fe.cepstra(np.zeros(409, dtype=np.int16)).shape == (0, 13)
    rng = np.random.default_rng(0)
    ceps = fe.cepstra((rng.standard_normal(16000) * 3000).astype(np.int16))
    assert ceps.shape == (1 + (16000 - 410) // 160, 13) and ceps.dtype == np.float32
    silent = fe.cepstra(np.zeros(16000, dtype=np.int16))
    assert np.ptp(silent, axis=0).max() > 0.1  # dithered: digital silence is not one constant cepstrum
    views = fe.dynamic(ceps)
    assert views.shape == (3, len(ceps), 13)
    np.testing.assert_allclose(views[0].mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(views[1][10], views[0][12] - views[0][8])
    (tmp_path / "feat.params").write_text("-lowerf 130\n-upperf 8000\n-nfilt 25\n")
    with pytest.raises(ValueError, match=r"feat\.params.*upperf"):
        fe.check_model(str(tmp_path))


def log_likelihood(A: np.ndarray, views: np.ndarray, books: np.ndarray, model) -> float:
    """Mean per frame of the transformed views' log likelihood under their codebooks, plus the
    Jacobian (three streams): the quantity the transform maximises."""
    means, inv_var, log_det = model
    y = np.einsum("ij,stj->sti", A, views)
    total = 3 * len(books) * np.log(abs(np.linalg.det(A)))
    for s in range(3):
        diff = y[s][:, None, :] - means[books, s]
        loglik = -0.5 * ((diff**2 * inv_var[books, s]).sum(-1) + log_det[books, s])
        top = loglik.max(1)
        total += (top + np.log(np.exp(loglik - top[:, None]).mean(1))).sum()
    return total / len(books)


@needs_pocketsphinx
def test_transform_raises_the_likelihood_and_undoes_a_linear_distortion(monkeypatch):
    """The estimated transform makes the file likelier under the first decode's codebooks than no
    transform, and, run to convergence, gives cepstra distorted by a known linear map (nearly) that
    map's inverse on top."""
    x, _ = speak(SENTENCE, "en-us+m3")
    model = ad.codebooks(model_dir())
    assert model[0].shape == (42, 3, 128, 13) and model[2].shape == (42, 3, 128)
    ceps = fe.cepstra(np.frombuffer(ph.to_pcm16(x), dtype="<i2")).astype(np.float64)
    segments, _ = ph.decode_segments(x)
    books = ad.codebook_of(segments, len(ceps))
    assert set(np.unique(books)) <= set(range(42)) and (books == ad.BASE_PHONES.index("SIL")).any()
    A = ad.estimate_transform(ceps, books, model)
    views = fe.dynamic(ceps)
    gain = log_likelihood(A, views, books, model) - log_likelihood(np.eye(13), views, books, model)
    assert gain > 1.0, f"log likelihood per frame rose by {gain:.2f} nats"
    monkeypatch.setattr(ad, "EM_ITERATIONS", 10)
    A = ad.estimate_transform(ceps, books, model)
    distortion = np.diag(np.linspace(0.6, 1.2, 13))
    B = ad.estimate_transform(ceps @ distortion.T, books, model)
    np.testing.assert_allclose(B @ distortion, A, atol=0.1 * np.abs(A).max())
    assert np.array_equal(ad.estimate_transform(ceps[:80], books[:80], model), np.eye(13))  # < 1 s of phones


@needs_pocketsphinx
def test_adapted_decoding_is_a_pure_function_and_finds_other_phones():
    x, _ = speak(SENTENCE, "en-us+f3")
    y, _ = speak("The quick brown fox jumps over the lazy dog.", "en-us+m3")
    cfg = FeaturesConfig(phones_decoding="adapted")
    rows = ph.phone_features(x, cfg)
    check_rows(rows)
    ph.phone_features(y, cfg)
    ph._local.__dict__.clear()
    np.testing.assert_array_equal(ph.phone_features(x, cfg), rows)
    whole = ph.phone_features(x, FeaturesConfig(phones_decoding="whole"))
    assert rows.shape == whole.shape and (rows.argmax(1) != whole.argmax(1)).any()


def test_adapted_decoding_is_unwarped_and_hashed_apart():
    from koemorph.config import ConfigError, DataConfig, load_config
    from koemorph.data.extract import array_hashes

    with pytest.raises(ConfigError, match=r"features\.phones_warps.*adapted decoding"):
        load_config(None, overrides=["features.phones_decoding=adapted", "features.phones_warps=[0.9,1.1]"])
    hashes = {
        how: array_hashes(FeaturesConfig(phones_decoding=how), DataConfig())
        for how in ("whole", "adapted", "live")
    }
    assert len({h["phones"] for h in hashes.values()}) == 3
    assert hashes["adapted"]["phones_text"] != hashes["whole"]["phones_text"]


@needs_pocketsphinx
def test_a_long_files_first_decode_on_its_own_decoder_gives_the_same_phones(monkeypatch):
    """Files over ``FRESH_FIRST_PASS_FRAMES`` decode first on a decoder freed afterwards (memory); with
    the threshold lowered, a sentence decodes to exactly the phones of the thread's cached decoder."""
    x, _ = speak(SENTENCE, "en-us+m3")
    pcm = np.frombuffer(ph.to_pcm16(x), dtype="<i2")
    cached = ph.adapted_segments(ph._batch_decoder(1.0), pcm)
    monkeypatch.setattr(ph, "FRESH_FIRST_PASS_FRAMES", 10)
    ph._local.__dict__.pop("adapted")  # the thread's last adapted cepstra, else no decode at all
    fresh = ph.adapted_segments(ph._batch_decoder(1.0), pcm)
    assert fresh == cached and len(cached[0]) > 10
