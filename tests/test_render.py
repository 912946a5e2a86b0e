"""`koemorph render` on a generated tree: mirroring, bad files, frame counts, fps, formats, skipping,
post-processing, store reuse, MLflow URIs, and equality with the training feature path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from koemorph import blendshapes as bs
from koemorph import grid
from koemorph.config import load_config
from koemorph.inference.postprocess import RenderConfig, clamp, parse_clamp, silence_weight, smooth
from koemorph.inference.render import MANIFEST_NAME
from koemorph.io.audio import load_audio
from koemorph.io.tracks import read_track
from koemorph.model import build_model
from koemorph.training.checkpoint import load_model
from pipeline.render import render
from tests.checkpointkit import SMALL, save_untrained, widen
from tests.storekit import build_store

GOOD = {"a/b/spk0 take.wav": 3.0, "ünï/コエ.wav": 2.0, "top.flac": 1.5, "short.wav": 0.25}
BAD = ("bad/corrupt.wav", "bad/empty.wav", "bad/nan.wav")


def make_checkpoint(path: Path, stats: dict, seed: int = 0) -> Path:
    """A small untrained model, widened so that its outputs move, with the store's feature stats."""
    cfg = load_config(None, SMALL)
    torch.manual_seed(seed)
    model = widen(build_model(cfg.model, cfg.features))
    return save_untrained(path, model, cfg, {k: stats[k] for k in ("mel", "egemaps")})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    store = build_store(root, [("train", 3.0), ("train", 2.0)], egemaps=True)
    stats = json.loads((root / "features.stats.json").read_text())
    ckpt = make_checkpoint(root / "model.pt", stats)
    src = root / "data" / "train" / "spk0_000.wav"
    audio, sr = sf.read(src, dtype="float32")
    tree = root / "in"
    for rel, seconds in GOOD.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        n = int(seconds * sr)
        sf.write(tree / rel, np.resize(audio, n), sr, format="FLAC" if rel.endswith(".flac") else "WAV")
    (tree / "bad").mkdir()
    (tree / "bad/corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (tree / "bad/empty.wav").write_bytes(b"")
    nan = np.resize(audio, sr).astype(np.float32)
    nan[100] = np.nan
    sf.write(tree / "bad/nan.wav", nan, sr, subtype="FLOAT")
    return {"root": root, "store": store, "stats": stats, "ckpt": ckpt, "tree": tree, "data": root / "data"}


def manifest(out: Path) -> dict[str, dict]:
    return {json.loads(x)["input"]: json.loads(x) for x in (out / MANIFEST_NAME).read_text().splitlines()}


def values_of(path: Path, fps: int = 30) -> np.ndarray:
    return read_track(path, fps=fps if path.suffix == ".csv" else None).values


def test_cli_renders_tree_with_dask_and_records_failures(env, tmp_path):
    from cli.main import app

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["render", str(env["tree"]), "--model", str(env["ckpt"]), "-o", str(out), "--workers", "1"]
    )
    assert result.exit_code == 1, result.output  # bad files fail the run, the others are kept
    rows = manifest(out)
    assert sorted(rows) == sorted(list(GOOD) + list(BAD))
    for rel, seconds in GOOD.items():
        r = rows[rel]
        assert r["status"] == "ok" and r["error"] is None, r
        track = read_track(out / Path(rel).with_suffix(".jsonl"))
        n = grid.num_frames(seconds, 30)
        assert r["frames"] == n == track.n_frames and r["fps"] == 30 and r["format"] == "jsonl"
        assert np.array_equal(track.times, np.round(np.arange(n) / 30, 6))
        assert r["model_id"] == r["model_sha256"][:16] and len(r["audio_sha256"]) == 64
    for rel in BAD:
        assert rows[rel]["status"] == "error" and Path(rel).name in rows[rel]["error"], rows[rel]
        assert not (out / Path(rel).with_suffix(".jsonl")).exists()
    assert "NaN" in rows["bad/nan.wav"]["error"] and "empty" in rows["bad/empty.wav"]["error"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    assert "failed:" in result.output and "corrupt.wav" in result.output


def test_rendered_values_are_predict_file_on_training_features(env, tmp_path):
    from koemorph.data.cache import FeatureCache
    from koemorph.model.infer import predict_file

    out_a, out_b = tmp_path / "computed", tmp_path / "stored"
    render(env["data"], out_a, str(env["ckpt"]), workers=0)
    render(env["data"], out_b, str(env["ckpt"]), workers=0, store=env["store"])
    model, meta = load_model(env["ckpt"])
    cache = FeatureCache(env["store"])
    for fid, rel in (("train__spk0_000", "train/spk0_000"), ("train__spk1_001", "train/spk1_001")):
        f = cache.load(fid)
        want = predict_file(model, f["mel"], f["egemaps"], 30, pad_mel=cache.mel_pad)
        stored = values_of(out_b / f"{rel}.jsonl")
        assert stored.shape == want.shape and np.abs(stored - want).max() <= 1e-6  # JSONL keeps 6 decimals
        assert manifest(out_b)[f"{rel}.wav"]["features"] == f"store:{fid}"
        assert manifest(out_a)[f"{rel}.wav"]["features"] == "computed"
        # recomputed features differ from the cached ones only by BLAS threading noise (~4e-6 dB)
        assert np.abs(values_of(out_a / f"{rel}.jsonl") - stored).max() <= 2e-5
    assert np.ptp(want, axis=0).max() > 0.01  # the model's output moves: the comparison means something


def test_skip_if_unchanged_and_rerender_on_changes(env, tmp_path):
    tree = tmp_path / "in"
    shutil.copytree(env["tree"], tree, ignore=shutil.ignore_patterns("bad"))
    out = tmp_path / "out"
    first = render(tree, out, str(env["ckpt"]), workers=0)
    assert first["ok files"] == len(GOOD) and first["error files"] == 0
    outputs = sorted(p for p in out.rglob("*.jsonl") if p.name != MANIFEST_NAME)
    mtimes = {p: p.stat().st_mtime_ns for p in outputs}
    again = render(tree, out, str(env["ckpt"]), workers=0)
    assert again["skipped files"] == len(GOOD) and again["ok files"] == 0
    assert {p: p.stat().st_mtime_ns for p in outputs} == mtimes
    assert all(r["status"] == "skipped" and r["frames"] for r in manifest(out).values())

    (out / "top.jsonl").unlink()  # a missing output is rendered again
    sf.write(tree / "a/b/spk0 take.wav", np.zeros(8000, np.float32), 16000)  # changed audio
    third = render(tree, out, str(env["ckpt"]), workers=0)
    assert third["ok files"] == 2 and third["skipped files"] == len(GOOD) - 2

    fourth = render(tree, out, str(env["ckpt"]), workers=0, post=RenderConfig(smooth_mouth_s=0.2))
    assert fourth["ok files"] == len(GOOD)  # a post-processing setting changed
    other = make_checkpoint(tmp_path / "other.pt", env["stats"], seed=1)
    fifth = render(tree, out, str(other), workers=0, post=RenderConfig(smooth_mouth_s=0.2))
    assert fifth["ok files"] == len(GOOD)  # the model changed
    assert fifth["model"] != first["model"]


def test_outputs_of_an_older_feature_pipeline_are_rendered_again(env, tmp_path):
    """A manifest line without ``features_hash`` (written before it was recorded) or with another one
    (another extractor or word search version) does not skip its file."""
    tree = tmp_path / "in"
    shutil.copytree(env["tree"], tree, ignore=shutil.ignore_patterns("bad"))
    out = tmp_path / "out"
    render(tree, out, str(env["ckpt"]), workers=0)
    lines = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    assert all(r["features_hash"] for r in lines)
    older = [{k: v for k, v in r.items() if k != "features_hash"} for r in lines]
    older[0]["features_hash"] = "0" * len(lines[0]["features_hash"])
    (out / MANIFEST_NAME).write_text("".join(json.dumps(r) + "\n" for r in older))
    again = render(tree, out, str(env["ckpt"]), workers=0)
    assert again["ok files"] == len(GOOD) and again["skipped files"] == 0
    assert render(tree, out, str(env["ckpt"]), workers=0)["skipped files"] == len(GOOD)


def test_quiet_inputs_are_counted_in_the_summary(env, tmp_path):
    """Each record holds its input's peak level; files peaking below QUIET_PEAK_DBFS are counted."""
    from koemorph.inference.manifest import QUIET_PEAK_DBFS

    tree = tmp_path / "in"
    shutil.copytree(env["tree"], tree, ignore=shutil.ignore_patterns("bad"))
    loud = load_audio(tree / "a/b/spk0 take.wav")
    sf.write(tree / "quiet.wav", loud * 0.01, 16000, subtype="FLOAT")  # 40 dB quieter
    sf.write(tree / "silent.wav", np.zeros(8000, np.float32), 16000)
    summary = render(tree, tmp_path / "out", str(env["ckpt"]), workers=0)
    records = manifest(tmp_path / "out")
    peak = 20 * np.log10(np.abs(loud).max())
    assert records["a/b/spk0 take.wav"]["peak_dbfs"] == pytest.approx(peak, abs=0.06)
    assert records["quiet.wav"]["peak_dbfs"] == pytest.approx(peak - 40, abs=0.06)
    assert peak - 40 < QUIET_PEAK_DBFS < peak
    assert records["silent.wav"]["peak_dbfs"] is None
    quiet = [k for k, r in records.items() if r["peak_dbfs"] is not None and r["peak_dbfs"] < QUIET_PEAK_DBFS]
    assert summary[f"quiet files (peak below {QUIET_PEAK_DBFS:g} dBFS: normalise them)"] == len(quiet)


def test_model_is_loaded_once_per_process(env, tmp_path, monkeypatch):
    """Every file a process renders uses the model it loaded first (a Dask worker is such a process)."""
    import koemorph.inference.models
    import koemorph.training.checkpoint

    loads = []
    load_model = koemorph.training.checkpoint.load_model
    monkeypatch.setattr(
        koemorph.training.checkpoint, "load_model", lambda path: (loads.append(path), load_model(path))[1]
    )
    monkeypatch.setattr(koemorph.inference.models, "_MODELS", {})
    summary = render(env["tree"], tmp_path / "out", str(env["ckpt"]), workers=0)
    assert summary["ok files"] == len(GOOD) and loads == [str(env["ckpt"])]


def test_sixty_fps_and_formats(env, tmp_path):
    tree = tmp_path / "in"
    shutil.copytree(env["tree"], tree, ignore=shutil.ignore_patterns("bad"))
    base = tmp_path / "jsonl30"
    render(tree, base, str(env["ckpt"]), workers=0)
    render(tree, tmp_path / "jsonl60", str(env["ckpt"]), workers=0, fps=60)
    for fmt in ("livelink-csv", "beat-json"):
        render(tree, tmp_path / fmt, str(env["ckpt"]), workers=0, fmt=fmt)
    for rel, seconds in GOOD.items():
        v30 = values_of(base / Path(rel).with_suffix(".jsonl"))
        t60 = read_track(tmp_path / "jsonl60" / Path(rel).with_suffix(".jsonl"))
        n60 = grid.num_frames(seconds, 60)
        assert t60.n_frames == n60 and np.array_equal(t60.times, np.round(np.arange(n60) / 60, 6))
        assert np.abs(t60.values[::2][: len(v30)] - v30[: len(t60.values[::2])]).max() <= 1e-6  # same times
        mid = (v30[:-1] + v30[1:]) / 2  # odd 60 fps frames: halfway between 30 fps frames
        assert np.abs(t60.values[1::2][: len(mid)] - mid[: len(t60.values[1::2])]).max() <= 2e-6
        for fmt, suffix in (("livelink-csv", ".csv"), ("beat-json", ".json")):
            other = values_of(tmp_path / fmt / Path(rel).with_suffix(suffix))
            assert other.shape == v30.shape and np.abs(other - v30).max() <= 1e-6, fmt
    assert manifest(tmp_path / "jsonl60")["top.flac"]["fps"] == 60


def test_postprocess_functions_do_what_they_say():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30
    base = 0.5 + 0.3 * np.sin(2 * np.pi * 1.0 * t)[:, None] * np.ones(52)
    noisy = np.clip(base + 0.05 * rng.standard_normal((300, 52)), 0, 1).astype(np.float32)
    out = smooth(noisy, 30, RenderConfig(smooth_mouth_s=0.2))
    mouth, face = bs.MOUTH_INDICES, bs.EXPRESSION_INDICES

    def jitter(x):  # mean |second difference|
        return np.abs(np.diff(x, 2, axis=0)).mean()

    assert jitter(out[:, mouth]) < 0.3 * jitter(noisy[:, mouth])
    assert np.array_equal(out[:, face], noisy[:, face])  # upper face untouched
    assert (
        np.abs(out[:, mouth] - base[:, mouth]).mean() < 0.6 * np.abs(noisy[:, mouth] - base[:, mouth]).mean()
    )
    clean = smooth(base.astype(np.float32), 30, RenderConfig(smooth_mouth_s=0.2))
    assert np.abs(clean - base).max() < 0.01  # the 1 Hz motion itself is kept: no lag, no flattening
    both = smooth(noisy, 30, RenderConfig(smooth_mouth_s=0.1, smooth_face_s=0.4))
    assert jitter(both[:, face]) < 0.5 * jitter(both[:, mouth])  # the upper face smoothed more

    sr = grid.SAMPLE_RATE  # 1 s tone, 1 s digital silence, 1 s tone
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)
    audio = np.concatenate([tone, np.zeros(sr), tone]).astype(np.float32)
    w = silence_weight(audio, 90, 30, RenderConfig(rest_pose=True))
    assert w[45] == 1.0 and w[:28].max() == 0.0 and w[62:].max() == 0.0 and 0 < w[31] < 1
    assert np.all(np.diff(w[30:46]) >= 0)  # eased in, no jump
    short = np.concatenate([tone, np.zeros(sr // 10), tone]).astype(np.float32)  # a 0.1 s stop: kept
    assert silence_weight(short, 63, 30, RenderConfig(rest_pose=True)).max() == 0.0

    ranges = parse_clamp(["eyeBlinkLeft=0:0.1", "mouthClose=0:jawOpen"])
    assert ranges == {"eyeBlinkLeft": [0.0, 0.1], "mouthClose": [0.0, "jawOpen"]}
    c = clamp(noisy, ranges)
    assert c[:, bs.INDEX["eyeBlinkLeft"]].max() <= 0.1
    assert np.all(c[:, bs.INDEX["mouthClose"]] <= c[:, bs.INDEX["jawOpen"]])
    with pytest.raises(KeyError):
        RenderConfig(clamp={"mouthClosed": [0, 1]})


def test_postprocess_end_to_end_is_recorded(env, tmp_path):
    tree = tmp_path / "in"
    sr = grid.SAMPLE_RATE
    audio, _ = sf.read(env["data"] / "train" / "spk0_000.wav", dtype="float32")
    tree.mkdir()
    sf.write(
        tree / "pause.wav", np.concatenate([audio[: 2 * sr], np.zeros(2 * sr, np.float32), audio[:sr]]), sr
    )
    plain, post = tmp_path / "plain", tmp_path / "post"
    render(tree, plain, str(env["ckpt"]), workers=0)
    cfg = RenderConfig(rest_pose=True, clamp={"mouthClose": [0, "jawOpen"], "eyeBlinkLeft": [0, 0.05]})
    render(tree, post, str(env["ckpt"]), workers=0, post=cfg)
    a, b = values_of(plain / "pause.jsonl"), values_of(post / "pause.jsonl")
    assert manifest(post)["pause.wav"]["postprocess"] == cfg.to_dict()
    assert b[90:105, bs.MOUTH_INDICES].max() <= 1e-6 < a[90:105, bs.MOUTH_INDICES].max()  # rest in the pause
    speech = silence_weight(load_audio(tree / "pause.wav"), len(a), 30, cfg) == 0
    assert speech[:50].sum() > 10 and not speech[70:110].any()
    cols = [i for i in bs.MOUTH_INDICES if i != bs.INDEX["mouthClose"]]  # mouthClose is clamped below
    assert np.abs(b[speech][:, cols] - a[speech][:, cols]).max() <= 1e-6  # speech kept as it was
    assert b[:, bs.INDEX["eyeBlinkLeft"]].max() <= 0.05
    assert np.all(b[:, bs.INDEX["mouthClose"]] <= b[:, bs.INDEX["jawOpen"]] + 1e-6)


def test_mlflow_model_uri(env, tmp_path, monkeypatch):
    from koemorph.training.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "render-test")
    tracker.log_artifact(env["ckpt"], "checkpoints")
    monkeypatch.chdir(tmp_path)
    tree = tmp_path / "in"
    tree.mkdir()
    shutil.copy(env["tree"] / "top.flac", tree / "top.flac")
    summary = render(
        tree, tmp_path / "out", f"runs:/{tracker.run_id}/checkpoints/model.pt", workers=0, tracking_uri=uri
    )
    assert summary["ok files"] == 1 and summary["model"] == tracker.run_id
    row = manifest(tmp_path / "out")["top.flac"]
    assert row["model_id"] == tracker.run_id and row["model_sha256"] == manifest_sha(env["ckpt"])


def manifest_sha(path: Path) -> str:
    from koemorph.io.audio import sha256_file

    return sha256_file(path)


def test_collisions_and_unknown_format(env, tmp_path):
    tree = tmp_path / "in"
    tree.mkdir()
    shutil.copy(env["tree"] / "top.flac", tree / "x.flac")
    shutil.copy(env["tree"] / "short.wav", tree / "x.wav")
    shutil.copy(env["tree"] / "short.wav", tree / ".hidden.wav")
    summary = render(tree, tmp_path / "out", str(env["ckpt"]), workers=0)
    assert summary["error files"] == 2 and all("x.jsonl" in e for e in summary["errors"])
    assert not (tmp_path / "out" / "x.jsonl").exists() and ".hidden.wav" not in manifest(tmp_path / "out")
    with pytest.raises(ValueError):
        render(tree, tmp_path / "out2", str(env["ckpt"]), workers=0, fmt="npy")


def test_inputs_outside_the_training_levels_are_scaled_to_them(env, tmp_path):
    """A model that records its training levels renders a quiet input as the same input scaled to
    their median (sample for sample), leaves inputs within them, silent ones and steady noise alone, and
    ``render.match_level`` false turns it off (and renders every file again)."""
    from koemorph.features.level import speech_level_db
    from koemorph.features.mel import log_mel
    from koemorph.training.checkpoint import load_checkpoint

    loud = load_audio(env["tree"] / "a/b/spk0 take.wav")
    level = speech_level_db(log_mel(loud, load_config(None, SMALL).features))
    ckpt = load_checkpoint(env["ckpt"])
    ckpt["stats"]["level"] = {"low": level - 3, "median": level + 1, "high": level + 3, "files": 2}
    torch.save(ckpt, tmp_path / "levels.pt")
    tree = tmp_path / "in"
    tree.mkdir()
    sf.write(tree / "loud.wav", loud, 16000, subtype="FLOAT")
    sf.write(tree / "quiet.wav", loud * np.float32(0.03), 16000, subtype="FLOAT")
    sf.write(tree / "silent.wav", np.zeros(8000, np.float32), 16000)
    hiss = np.random.default_rng(0).normal(0, 1e-3, 16000).astype(np.float32)  # room tone, no speech
    sf.write(tree / "hiss.wav", hiss, 16000, subtype="FLOAT")
    summary = render(tree, tmp_path / "out", str(tmp_path / "levels.pt"), workers=0)
    records = manifest(tmp_path / "out")
    assert [records[k]["gain_db"] for k in ("loud.wav", "silent.wav", "hiss.wav")] == [0.0] * 3
    gain = records["quiet.wav"]["gain_db"]
    assert gain == pytest.approx(1 - 20 * np.log10(0.03), abs=0.02)
    assert summary["files scaled to the training levels"] == 1

    scaled = tmp_path / "scaled"
    scaled.mkdir()
    quiet = load_audio(tree / "quiet.wav")
    sf.write(scaled / "quiet.wav", quiet * np.float32(10.0 ** (gain / 20.0)), 16000, subtype="FLOAT")
    off = RenderConfig(match_level=False)
    render(scaled, tmp_path / "want", str(tmp_path / "levels.pt"), workers=0, post=off)
    want = values_of(tmp_path / "want/quiet.jsonl")
    assert np.array_equal(values_of(tmp_path / "out/quiet.jsonl"), want)
    assert np.abs(values_of(tmp_path / "out/loud.jsonl") - want).max() > 1e-3  # not the same level

    again = render(tree, tmp_path / "out", str(tmp_path / "levels.pt"), workers=0, post=off)
    assert again["ok files"] == 4 and "files scaled to the training levels" not in again
    assert all(r["gain_db"] == 0.0 for r in manifest(tmp_path / "out").values())
