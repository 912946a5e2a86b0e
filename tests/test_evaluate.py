"""`koemorph evaluate` and the baselines: real demo corpus, real feature store, real MLflow on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cli.main import app
from koemorph import blendshapes as bs
from koemorph import grid
from koemorph.config import load_config
from koemorph.data.manifest import build_manifest
from koemorph.evaluation.baselines import RidgeBaseline, StoreMel, fit_ridge, mean_pose, stack_context
from koemorph.evaluation.evaluate import evaluate, find_pairs
from koemorph.evaluation.metrics import EvaluateConfig
from koemorph.features.mel import log_mel
from koemorph.io.audio import load_audio
from koemorph.io.tracks import read_track, write_jsonl_track

JAW, CLOSE = bs.INDEX["jawOpen"], bs.INDEX["mouthClose"]
FAST = EvaluateConfig(ridge_context=3, ridge_alphas=(1e-4, 1e-2, 1.0))
runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


# ---------------------------------------------------------------- ridge on a known linear target


def banded_audio(seconds: float, seed: int) -> np.ndarray:
    """Five partials with independent random loudness envelopes: mel bands move independently."""
    sr, rng = grid.SAMPLE_RATE, np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    knots = np.arange(0, seconds + 0.3, 0.15)
    out = 0.002 * rng.standard_normal(t.size)
    for f in (300, 700, 1500, 2800, 5000):
        out += 0.15 * np.interp(t, knots, rng.uniform(0, 1, knots.size) ** 2) * np.sin(2 * np.pi * f * t)
    return out.astype(np.float32)


def linear_targets(mel: np.ndarray) -> np.ndarray:
    """jawOpen and mouthClose are fixed linear functions of the mel (one of them 2 frames late)."""
    y = np.full((len(mel), 52), 0.1)
    y[:, JAW] = 0.5 + 0.012 * mel[:, 16] - 0.008 * mel[:, 52]  # bands on partials: dB around 0 ± 10
    late = np.vstack([mel[:1].repeat(2, 0), mel[:-2]])
    y[:, CLOSE] = 0.5 + 0.015 * (late[:, 35] + 2)
    return np.clip(y, 0, 1)


@pytest.fixture(scope="module")
def linear_store(tmp_path_factory):
    from pipeline.extract import extract

    tmp = tmp_path_factory.mktemp("linear")
    cfg = load_config(None, ["features.egemaps=false"])
    for i, (split, seconds) in enumerate(
        [("train", 12), ("train", 12), ("train", 10), ("val", 6), ("test", 6)]
    ):
        wav = tmp / "data" / split / f"s{i}_{i:03d}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, banded_audio(seconds, i), grid.SAMPLE_RATE, subtype="PCM_16")
        targets = linear_targets(log_mel(load_audio(wav), cfg.features))
        assert 0.02 < targets[:, JAW].mean() < 0.98
        write_jsonl_track(wav.with_suffix(".jsonl"), targets, 30)
    build_manifest(tmp / "data", tmp / "m.jsonl", cfg.data)
    summary = extract(tmp / "m.jsonl", tmp / "f.zarr", cfg, workers=1)
    assert summary["error files"] == 0
    return tmp


def test_ridge_beats_mean_pose_on_a_linear_target(linear_store):
    store = linear_store / "f.zarr"
    cache = linear_store / "ridge.npz"
    ridge = fit_ridge(store, FAST, cache=cache)
    assert ridge.chosen_by.startswith("val") and set(ridge.val_mse) == {"0.0001", "0.01", "1.0"}
    assert ridge.weights.shape == (7 * 80 + 1, 52)
    pose = mean_pose(store)
    wav = linear_store / "data" / "test" / "s4_004.wav"
    mel, source = StoreMel(store).mel(wav)
    assert source == "store"
    truth = read_track(wav.with_suffix(".jsonl")).values
    pred = ridge.predict(mel)
    assert pred.shape == truth.shape and pred.min() >= 0 and pred.max() <= 1
    for c in (JAW, CLOSE):
        ridge_mae = np.abs(pred[:, c] - truth[:, c]).mean()
        pose_mae = np.abs(pose[c] - truth[:, c]).mean()
        assert ridge_mae < 0.3 * pose_mae, (bs.ARKIT_NAMES[c], ridge_mae, pose_mae)
        assert np.corrcoef(pred[:, c], truth[:, c])[0, 1] > 0.95
    # saved once, loaded while the key holds; a different setting refits
    assert RidgeBaseline.load(cache).key == ridge.key
    again = fit_ridge(store, FAST, cache=cache)
    np.testing.assert_array_equal(again.weights, ridge.weights)
    other = fit_ridge(store, EvaluateConfig(ridge_context=2, ridge_alphas=(1e-2,)), cache=cache)
    assert other.weights.shape == (5 * 80 + 1, 52) and other.key != ridge.key


def test_mel_is_computed_when_the_audio_is_not_in_the_store(linear_store, tmp_path):
    wav = tmp_path / "new.wav"
    sf.write(wav, banded_audio(2.0, 99), grid.SAMPLE_RATE, subtype="PCM_16")
    mel, source = StoreMel(linear_store / "f.zarr").mel(wav)
    assert source == "computed" and mel.shape == (grid.num_frames(2.0), 80)


def test_stack_context_order_and_padding():
    z = np.arange(12, dtype=float).reshape(6, 2)
    rows = stack_context(z, np.array([0, 5]), 1)
    np.testing.assert_array_equal(rows[0], [0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(rows[1], [8, 9, 10, 11, 0, 0])


# ---------------------------------------------------------------- the demo corpus end to end


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    assert invoke("demo-data", tmp / "corpus", "--minutes", "0.5", "--workers", "1").exit_code == 0
    assert invoke("manifest", tmp / "corpus", "-o", tmp / "m.jsonl").exit_code == 0
    res = invoke(
        "extract",
        tmp / "m.jsonl",
        "--store",
        tmp / "s.zarr",
        "--workers",
        "1",
        "--set",
        "features.egemaps=false",
    )
    assert res.exit_code == 0, res.output
    return tmp


def perturbed_copy(src: Path, dst: Path, shift: int = 0, noise: float = 0.0, seed: int = 0) -> Path:
    """Copy every track under ``src`` to ``dst`` (same relative paths, JSONL, 30 fps), delayed by
    ``shift`` frames (first frame held) and with Gaussian noise."""
    rng = np.random.default_rng(seed)
    for path in sorted(src.rglob("*.jsonl")):
        values = read_track(path).values.astype(np.float64)
        if shift:
            values = np.vstack([values[:1].repeat(shift, 0), values[:-shift]])
        values = np.clip(values + noise * rng.standard_normal(values.shape), 0, 1)
        write_jsonl_track(dst / path.relative_to(src), values, 30)
    return dst


def test_truth_against_itself_is_perfect(demo):
    corpus = demo / "corpus"
    ev = evaluate(corpus, corpus, cfg=FAST)
    assert len(ev.truths) == 5 and not ev.failures
    assert any("no --store" in n for n in ev.notes)
    m = ev.summary(FAST)["model"]
    assert (
        m["all/mae"] == 0 and m["mouth/pearson"] == pytest.approx(1.0) and m["all/ccc"] == pytest.approx(1.0)
    )
    assert m["sync_lag_ms"] == 0 and m["lip_max_error"] == 0
    assert m["closure/recall"] == 1.0 and m["closure/bilabials"] > 10
    assert m["closure/false_closure_rate"] == 0.0 and m["closure/open_vowels"] > 10
    assert m["silence/frames"] > 0 and m["silence/mouth_mae"] == 0
    assert {r["silence_source"] for r in ev.rows} <= {"phones", "phones+rms"}


def test_shifted_copy_lags_by_100_ms(demo, tmp_path):
    corpus = demo / "corpus"
    pred = perturbed_copy(corpus, tmp_path / "late", shift=3)
    ev = evaluate(pred, corpus, cfg=FAST)
    assert [row["sync_lag_ms"] for row in ev.per_file["model"]] == pytest.approx([100.0] * 5)
    m = ev.summary(FAST)["model"]
    assert m["closure/timing_offset_ms"] == pytest.approx(100.0, abs=20)
    assert 0 < m["mouth/pearson"] < 0.99


def test_cli_end_to_end_with_baselines_missing_file_and_mlflow(demo, tmp_path):
    corpus = demo / "corpus"
    pred = perturbed_copy(corpus, tmp_path / "pred", shift=1, noise=0.03)
    (pred / "val").joinpath(next((corpus / "val").glob("*.jsonl")).name).unlink()  # one missing prediction
    out = tmp_path / "reports"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e", (tmp_path / "art").as_uri())).info.run_id
    res = invoke(
        "evaluate",
        pred,
        corpus,
        "--store",
        demo / "s.zarr",
        "--out",
        out,
        "--run",
        run_id,
        "--tracking-uri",
        uri,
        "--set",
        "evaluate.ridge_context=4",
    )
    assert res.exit_code == 0, res.output
    assert "mouth Pearson r" in res.output and "missing prediction" in res.output
    for name in (
        "metrics.json",
        "evaluation.json",
        "per_file.csv",
        "per_channel.csv",
        "per_channel_r.png",
        "curves_best.png",
        "curves_worst.png",
        "ridge.npz",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["files"] == 4 and metrics["failed_files"] == 1
    assert {"model", "ridge", "mean_pose"} <= set(metrics)
    assert (
        metrics["model"]["mouth/pearson"]
        > metrics["ridge"]["mouth/pearson"]
        > metrics["mean_pose"]["mouth/pearson"]
    )
    assert metrics["mean_pose"]["mouth/pearson"] == 0.0
    assert metrics["model"]["all/jitter_ratio"] > 1.5  # the noise
    per_file = pd.read_csv(out / "per_file.csv")
    assert len(per_file) == 5 and (per_file["status"] == "error").sum() == 1
    assert per_file.loc[per_file["status"] == "ok", "sync_lag_ms"].tolist() == pytest.approx(
        [33.333] * 4, abs=0.01
    )
    channels = pd.read_csv(out / "per_channel.csv")
    assert len(channels) == 52 and {"r_model", "r_ridge", "r_mean_pose", "mae_model"} <= set(channels)
    logged = client.get_run(run_id).data.metrics
    assert logged["eval/model/mouth/pearson"] == pytest.approx(metrics["model"]["mouth/pearson"])
    assert "eval/ridge/mouth/mae" in logged and logged["eval/files"] == 4
    assert {a.path for a in client.list_artifacts(run_id, "eval")} >= {
        "eval/metrics.json",
        "eval/per_file.csv",
    }
    assert client.get_run(run_id).info.status == "RUNNING"  # untouched
    # strict: the missing file makes it fail; the ridge is reused from OUT/ridge.npz
    res = invoke(
        "evaluate",
        pred,
        corpus,
        "--store",
        demo / "s.zarr",
        "--out",
        out,
        "--strict",
        "--set",
        "evaluate.ridge_context=4",
    )
    assert res.exit_code == 1 and "train files," not in res.output  # no "ridge: N train files, ..." fit line


def test_cli_without_store_and_nothing_scorable(demo, tmp_path):
    corpus = demo / "corpus"
    out = tmp_path / "r"
    res = invoke("evaluate", corpus / "test", corpus / "test", "--out", out)
    assert res.exit_code == 0 and "baselines skipped" in res.output
    assert set(json.loads((out / "metrics.json").read_text())) >= {"model", "files"}
    assert "ridge" not in json.loads((out / "metrics.json").read_text())
    empty = tmp_path / "empty"
    empty.mkdir()
    res = invoke("evaluate", empty, corpus / "test", "--out", tmp_path / "r2")
    assert res.exit_code == 1 and "missing prediction" in res.output
    assert invoke("evaluate", empty, corpus, "--set", "evaluate.nope=1").exit_code == 2


def test_pairing_and_unreadable_files(tmp_path):
    truth, pred = tmp_path / "t", tmp_path / "p"
    values = np.full((30, 52), 0.2)
    values[:, JAW] = np.linspace(0, 1, 30)
    write_jsonl_track(truth / "a" / "x.jsonl", values, 30)
    write_jsonl_track(truth / "a" / "y.jsonl", values, 30)
    write_jsonl_track(pred / "a" / "x.jsonl", values[:27], 30)  # 3 frames short: trimmed
    (pred / "a" / "y.jsonl").write_text('{"timestamp": 0, "blendshapes": [0.1]}\n')
    write_jsonl_track(pred / "a" / "z.jsonl", values, 30)  # no truth
    (pred / "render_manifest.jsonl").write_text("{}\n")
    pairs = {p.key: p for p in find_pairs(pred, truth)}
    assert set(pairs) == {"a/x", "a/y", "a/z"} and pairs["a/z"].truth is None
    ev = evaluate(pred, truth)
    rows = {r["id"]: r for r in ev.rows}
    assert (
        rows["a/x"]["status"] == "ok" and rows["a/x"]["frames"] == 27 and rows["a/x"]["trimmed_frames"] == 3
    )
    assert rows["a/y"]["status"] == "error" and "a/y.jsonl" in rows["a/y"]["error"]
    assert rows["a/z"]["status"] == "error" and "no truth" in rows["a/z"]["error"]
    assert rows["a/x"]["silence_source"] == "none" and "silence/frames" not in rows["a/x"]


def test_a_track_shorter_than_its_audio_is_trimmed_out_loud(tmp_path):
    truth, pred, out = tmp_path / "t", tmp_path / "p", tmp_path / "r"
    rng = np.random.default_rng(0)
    values = np.clip(0.5 + 0.2 * rng.standard_normal((150, 52)), 0, 1)
    write_jsonl_track(truth / "s" / "x.jsonl", values[:60], 30)  # 2 s of track ...
    sf.write(truth / "s" / "x.wav", 0.1 * np.sin(np.arange(5 * 16000) / 10), 16000)  # ... for 5 s of audio
    write_jsonl_track(pred / "s" / "x.jsonl", values, 30)  # a 5 s render
    write_jsonl_track(truth / "y.jsonl", values, 30)
    write_jsonl_track(pred / "y.jsonl", values, 30)  # same length: nothing to say
    res = invoke("evaluate", pred, truth, "--out", out)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "trimmed" in line and "s/x" in line]
    assert len(lines) == 1, res.output
    assert f"audio {truth / 's' / 'x.wav'} by 3.00 s (90 frames)" in lines[0]
    assert f"prediction {pred / 's' / 'x.jsonl'} by 3.00 s (90 frames)" in lines[0]
    assert "scored the first 2.00 s (60 frames)" in lines[0]
    report = json.loads((out / "evaluation.json").read_text())
    assert len(report["trimmed"]) == 1 and "x.wav by 3.00 s" in report["trimmed"][0]
    rows = pd.read_csv(out / "per_file.csv").set_index("id")
    assert rows.loc["s/x", "trimmed_s"] == 3.0 and rows.loc["y", "trimmed_s"] == 0.0


def test_evaluate_config_overrides():
    cfg = load_config(None, ["evaluate.ridge_alphas=[0.1, 1]", "evaluate.silence_db=30"]).evaluate
    assert cfg.ridge_alphas == (0.1, 1.0) and cfg.silence_db == 30.0
    with pytest.raises(ValueError):
        load_config(None, ["evaluate.silence=3"])
