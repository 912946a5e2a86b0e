"""The model shipped in the package: small, mel and phones only, with a card naming its data, and
what `koemorph render` uses when no model is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from koemorph.inference import bundled

pytest.importorskip("pocketsphinx")


def test_the_bundled_model_is_small_and_free_of_egemaps():
    path = bundled.DEFAULT_CHECKPOINT
    assert path.is_file() and path.stat().st_size < 15e6
    card = bundled.describe(path)
    assert card["inputs"] == ["log-mel", "phones"]
    from koemorph.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    assert not ckpt["config"]["features"]["egemaps"] and "egemaps" not in ckpt["stats"]
    assert "optimizer" not in ckpt and ckpt["card"] == card


def test_its_card_names_every_voice_and_the_held_out_scores():
    card = bundled.describe(bundled.DEFAULT_CHECKPOINT)
    voices = card["data"]["voices"]
    assert {v["engine"] for v in voices} == {"espeak", "flite", "festival"} == set(card["data"]["engines"])
    assert all(v["voice"] and v["synth_voice"] and v["files"] > 0 for v in voices)
    assert sum(v["files"] for v in voices) == card["training"]["files"]
    folds = card["held_out_engines"]
    assert sorted(f["held out"] for f in folds) == ["espeak", "festival", "flite"]
    assert all(0 < f["model"]["lip r"] <= 1 and "closure recall" in f["model"] for f in folds)
    assert "MIT" in card["licence"]


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
