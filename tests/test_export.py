"""ONNX export: onnxruntime on the exported block graph equals PyTorch within 1e-4, file by file and
through `koemorph render --runtime onnx`, with eGeMAPS on and off; the CLI and its metadata."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxruntime) is not installed")

from cli.main import app
from koemorph import blendshapes as bs
from koemorph import grid
from koemorph.demo.synth import speechlike
from koemorph.inference.export import export_checkpoint, load_onnx, predict_file_onnx
from koemorph.inference.render import RenderJob, file_features
from koemorph.io.tracks import read_track
from koemorph.model.infer import predict_file
from koemorph.training.checkpoint import load_model
from pipeline.render import render
from tests.checkpointkit import random_checkpoint

CASES = {
    "dual_egemaps": ["features.egemaps=true"],
    "dual_mel_only": ["features.egemaps=false"],
    "simplified_unsmoothed": ["features.egemaps=false", "model.kind=simplified", "model.smoothing=false"],
}
TOL = 1e-4


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    audio = root / "in"
    audio.mkdir()
    for i, seconds in enumerate((40.0, 3.0)):  # 1200 frames: three blocks of 512; and one short block
        sf.write(audio / f"spk{i}.wav", speechlike(seconds, seed=i), grid.SAMPLE_RATE, subtype="PCM_16")
    train = speechlike(30.0, seed=7)
    ckpts = {name: random_checkpoint(root / f"{name}.pt", extra, train) for name, extra in CASES.items()}
    return root, audio, ckpts


@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_equals_pytorch_on_speechlike_audio(env, case):
    root, audio, ckpts = env
    onnx_path = export_checkpoint(ckpts[case], root / f"{case}.onnx")
    session = load_onnx(onnx_path)
    model, meta = load_model(ckpts[case])
    assert session.meta["egemaps"] == (case == "dual_egemaps")
    assert ("egemaps" in [i.name for i in session.session.get_inputs()]) == (case == "dual_egemaps")
    samples = sf.read(audio / "spk0.wav", dtype="float32")[0]
    job = RenderJob("", "", "", "", "jsonl", 30, {}, {}, None, 0.0)
    feats, _ = file_features(samples, "", meta, job)
    args = (feats["mel"], feats["egemaps"], 30)
    torch_out = predict_file(model, *args, chunk=512, pad_mel=feats["mel_pad"])
    onnx_out = predict_file_onnx(session, *args, chunk=512, pad_mel=feats["mel_pad"])
    assert torch_out.shape == onnx_out.shape == (grid.num_frames_for_samples(samples.size, 30), 52)
    assert (
        np.ptp(torch_out[:, bs.INDEX["jawOpen"]]) > 0.05
    )  # the outputs move: the comparison means something
    np.testing.assert_allclose(onnx_out, torch_out, atol=TOL, rtol=0)
    # any block length runs on the one graph (dynamic axes), with the state carried
    odd = predict_file_onnx(session, *args, chunk=97, pad_mel=feats["mel_pad"])
    np.testing.assert_allclose(odd, torch_out, atol=TOL, rtol=0)


def test_export_metadata_and_cli(env):
    root, _, ckpts = env
    out = root / "cli" / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(ckpts["dual_egemaps"]), "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    meta = load_onnx(out).meta
    assert meta["channels"] == list(bs.ARKIT_NAMES)
    assert meta["fps"] == 30 and meta["spans"]["context"] == 30 and meta["spans"]["emotion_context"] == 60
    assert meta["features"]["egemaps"] is True and len(meta["stats"]["egemaps"]["mean"]) == 88
    assert len(meta["pad_mel"]) == 80 and meta["smoothing"] is True
    missing = CliRunner().invoke(app, ["export", str(root / "nope.pt"), "--onnx", str(out)])
    assert missing.exit_code == 2 and "nope.pt: no such checkpoint" in missing.output


@pytest.mark.parametrize("case", ["dual_egemaps", "dual_mel_only"])
def test_render_runtime_onnx_equals_torch(env, case):
    root, audio, ckpts = env
    outs = {}
    for runtime in ("torch", "onnx"):
        out = root / f"render-{case}-{runtime}"
        summary = render(audio, out, str(ckpts[case]), workers=0, runtime=runtime)
        assert summary["ok files"] == 2, summary
        outs[runtime] = {p.name: read_track(p).values for p in sorted(out.glob("spk*.jsonl"))}
    assert sorted(outs["onnx"]) == ["spk0.jsonl", "spk1.jsonl"]
    for name, values in outs["torch"].items():
        np.testing.assert_allclose(outs["onnx"][name], values, atol=TOL, rtol=0)


def test_render_cli_rejects_unknown_runtime(env):
    root, audio, ckpts = env
    result = CliRunner().invoke(
        app,
        [
            "render",
            str(audio),
            "--model",
            str(ckpts["dual_mel_only"]),
            "-o",
            str(root / "r"),
            "--runtime",
            "tf",
        ],
    )
    assert result.exit_code == 2 and "unknown runtime 'tf'" in result.output


def test_unexportable_option_is_named(tmp_path):
    from koemorph.config import load_config
    from koemorph.inference.export import export_model
    from koemorph.model import build_model
    from tests.checkpointkit import SMALL

    cfg = load_config(None, [*SMALL, "model.band_overlap=2", "features.egemaps=false"])
    model = build_model(cfg.model, cfg.features)
    meta = {
        "config": cfg,
        "stats": {"mel": {"mean": [0.0] * 80, "std": [1.0] * 80}},
        "fps": 30,
        "sha256": None,
    }
    with pytest.raises(ValueError, match="model.band_overlap > 0 cannot be exported"):
        export_model(model, meta, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
