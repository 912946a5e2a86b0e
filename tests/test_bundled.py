"""The models shipped in the package: small, mel and phones only, with a card naming their data;
what `koemorph render` (whole-file phones) and `koemorph stream` (live phones) use when no model is
named, and the stream's frames are exactly what render writes with that model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from koemorph.inference import bundled

pytest.importorskip("pocketsphinx")


@pytest.mark.parametrize("name", sorted(bundled.BUNDLED))
def test_the_bundled_models_are_small_and_free_of_egemaps(name):
    path = bundled.BUNDLED[name]
    assert path.is_file() and sum(p.stat().st_size for p in bundled.BUNDLED.values()) < 15e6
    card = bundled.describe(path)
    live = name == bundled.LIVE_NAME
    want = ["log-mel", "phones (live)"] if live else ["log-mel", "phones (adapted)", bundled.TRANSCRIPT_INPUT]
    assert card["inputs"] == want
    from koemorph.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    assert not ckpt["config"]["features"]["egemaps"] and "egemaps" not in ckpt["stats"]
    assert "optimizer" not in ckpt and ckpt["card"] == card
    assert ckpt["stats"]["level"]["files"] == card["training"]["files"]  # render matches input levels to them


def test_a_card_names_adapted_and_warped_decoding():
    from koemorph.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(bundled.BUNDLED["default"])
    features = ckpt["config"]["features"]
    assert bundled._summary(ckpt, "x")["inputs"][1] == "phones (adapted)"
    features["phones_decoding"] = "whole"
    assert bundled._summary(ckpt, "x")["inputs"][1] == "phones"
    features["phones_warps"] = [0.9, 1.1]
    assert bundled._summary(ckpt, "x")["inputs"][1] == "phones (warps 0.9, 1.1)"


@pytest.mark.parametrize("name", sorted(bundled.BUNDLED))
def test_each_is_what_its_recipe_trains(name):
    """``params/<name>-model.yaml`` (which ``make <name>-model`` runs) gives the config the shipped
    checkpoint was trained with (the MLflow address and the render section aside: neither shapes
    the model): a changed default that the recipe does not pin would make the recipe train
    another model."""
    from koemorph.config import load_config
    from koemorph.config.load import to_dict
    from koemorph.training.checkpoint import load_checkpoint

    recipe = Path(__file__).resolve().parent.parent / "params" / f"{name}-model.yaml"
    want = to_dict(load_config(recipe))
    got = load_checkpoint(bundled.BUNDLED[name])["config"]
    want["train"].pop("tracking_uri"), got["train"].pop("tracking_uri")
    want.pop("render"), got.pop("render")
    assert got == want


@pytest.mark.parametrize("name", sorted(bundled.BUNDLED))
def test_their_cards_name_every_voice_and_the_held_out_scores(name):
    card = bundled.describe(bundled.BUNDLED[name])
    voices = card["data"]["voices"]
    assert {v["engine"] for v in voices} == {"espeak", "flite", "festival"} == set(card["data"]["engines"])
    assert all(v["voice"] and v["synth_voice"] and v["files"] > 0 for v in voices)
    assert sum(v["files"] for v in voices) == card["training"]["files"]
    folds = card["held_out_engines"]
    assert sorted(f["held out"] for f in folds) == ["espeak", "festival", "flite"]
    assert all(0 < f["model"]["lip r"] <= 1 and "closure recall" in f["model"] for f in folds)
    assert "MIT" in card["licence"]


@pytest.mark.parametrize("name", sorted(bundled.BUNDLED))
def test_their_cards_hold_the_scores_published_beside_them(name):
    published = Path(__file__).resolve().parent.parent / "docs" / f"{name}-model-scores.json"
    folds = {f["engine"]: f["methods"] for f in json.loads(published.read_text())}
    card = bundled.describe(bundled.BUNDLED[name])["held_out_engines"]
    assert {f["held out"] for f in card} == set(folds)
    for fold in card:
        for method, scores in fold.items():
            if method != "held out":
                assert scores == folds[fold["held out"]][method], (name, fold["held out"], method)


def test_render_and_model_info_use_it_when_no_model_is_named(tmp_path):
    from cli.main import app
    from koemorph.io.audio import sha256_file

    t = np.arange(32000) / 16000
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in (1, 2, 3)) * (np.sin(2 * np.pi * 3 * t) > 0)
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in/take.wav", (0.2 * voice).astype(np.float32), 16000)
    runner = CliRunner()
    result = runner.invoke(
        app, ["render", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out/render_manifest.jsonl").read_text().splitlines()[0])
    assert record["status"] == "ok" and record["frames"] == 60
    assert record["model_sha256"] == sha256_file(bundled.DEFAULT_CHECKPOINT)
    info = runner.invoke(app, ["model-info"])
    voice_names = [v["voice"] for v in bundled.describe(bundled.DEFAULT_CHECKPOINT)["data"]["voices"]]
    assert info.exit_code == 0 and all(name in info.output for name in voice_names)
    assert "held-out engines" in info.output


def test_stream_uses_the_live_model_and_gives_exactly_what_render_writes_with_it(tmp_path):
    from cli.main import app
    from koemorph.io.tracks import read_track
    from tests.test_phones import speak

    x = speak("Bob met a maple man by the pool.")[0]
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in/take.wav", x, 16000, subtype="FLOAT")
    runner = CliRunner()
    args = ["render", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "0"]
    result = runner.invoke(app, [*args, "--model", bundled.LIVE_NAME])
    assert result.exit_code == 0, result.output
    want = read_track(tmp_path / "out/take.jsonl").values
    streamed = runner.invoke(app, ["stream", str(tmp_path / "in/take.wav"), "--chunk-s", "0.033"])
    assert streamed.exit_code == 0, streamed.output
    rows = [json.loads(line) for line in streamed.stdout.splitlines() if line.startswith("{")]
    got = np.array([r["blendshapes"] for r in rows], dtype=np.float64)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
