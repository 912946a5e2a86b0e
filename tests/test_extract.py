"""`koemorph extract`: real openSMILE, real Zarr on disk, a real Dask LocalCluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from koemorph import grid
from koemorph.config import load_config
from koemorph.data.manifest import build_manifest
from koemorph.data.store import STAGING, open_arrays, read_group_attrs, sidecar
from koemorph.features.mel import log_mel
from koemorph.io.atomic import read_jsonl
from koemorph.io.audio import load_audio
from koemorph.io.tracks import write_jsonl_track
from pipeline.extract import extract
from tests.conftest import tone


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield cluster.scheduler_address
    cluster.close()


def write_pair(root: Path, rel: str, seconds: float, fps: int = 30, seed: int = 0, track_seconds=None):
    wav = root / f"{rel}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, tone(seconds, freq=150 + 40 * seed, seed=seed), grid.SAMPLE_RATE, subtype="PCM_16")
    n = grid.num_frames(track_seconds or seconds, fps)
    values = np.random.default_rng(seed).uniform(0, 1, (n, 52)).astype(np.float32)
    write_jsonl_track(root / f"{rel}.jsonl", values, fps)
    return wav


@pytest.fixture
def dataset(tmp_path):
    data = tmp_path / "data"
    for i, (split, seconds) in enumerate([("train", 4.0), ("train", 2.5), ("val", 3.0), ("test", 1.2)]):
        write_pair(data, f"{split}/spk{i}_{i:03d}", seconds, seed=i)
    manifest = tmp_path / "m.jsonl"
    cfg = load_config(None)
    build_manifest(data, manifest, cfg.data)
    return tmp_path, manifest


MEL_EGEMAPS = ["features.egemaps=true", "features.phones=false"]  # these tests follow eGeMAPS' arrays


def run(manifest, store, scheduler, *overrides):
    return extract(manifest, store, load_config(None, [*MEL_EGEMAPS, *overrides]), scheduler=scheduler)


@pytest.mark.parametrize("fps", [30, 60])
def test_arrays_share_the_grid(dataset, scheduler, fps):
    tmp, manifest = dataset
    store = tmp / f"f{fps}.zarr"
    summary = run(manifest, store, scheduler, f"features.fps={fps}")
    assert summary["ok files"] == 4 and summary["error files"] == 0
    for rec in read_jsonl(sidecar(store, "results.jsonl")):
        arrays = open_arrays(store, rec["id"])
        audio = load_audio(tmp / "data" / rec["split"] / f"{rec['id'].split('__')[1]}.wav")
        n = grid.num_frames_for_samples(len(audio), fps)
        assert rec["num_frames"] == n
        assert arrays["mel"].shape == (n, 80)
        assert arrays["egemaps"].shape == (n, 88)
        assert arrays["targets"].shape == (n, 52)
        cfg = load_config(None, [f"features.fps={fps}"]).features
        np.testing.assert_allclose(arrays["mel"][:], log_mel(audio, cfg), rtol=0, atol=1e-4)
        attrs = read_group_attrs(store, rec["id"])
        assert attrs["fps"] == fps and attrs["schema_version"] >= 1 and len(attrs["audio_sha256"]) == 64
        assert set(attrs["hashes"]) == {"mel", "egemaps", "targets"}


def test_rerun_skips_and_config_change_invalidates_exactly(dataset, scheduler):
    tmp, manifest = dataset
    store = tmp / "f.zarr"
    run(manifest, store, scheduler)
    mel_chunk = next((store / "train__spk0_000" / "mel").rglob("c/*"))
    before = mel_chunk.stat().st_mtime_ns

    again = run(manifest, store, scheduler)
    assert again["cached files"] == 4 and again["ok files"] == 0

    changed = run(manifest, store, scheduler, "features.egemaps_step_s=0.5")
    assert changed["ok files"] == 4
    results = read_jsonl(sidecar(store, "results.jsonl"))
    assert all(r["computed"] == ["egemaps"] for r in results)
    assert mel_chunk.stat().st_mtime_ns == before  # mel carried over, not recomputed

    off = run(manifest, store, scheduler, "features.egemaps_step_s=0.5", "features.egemaps=false")
    assert off["ok files"] == 4
    assert "egemaps" not in open_arrays(store, "train__spk0_000")

    mel = run(manifest, store, scheduler, "features.fmin=60", "features.egemaps=false")
    assert all(r["computed"] == ["mel"] for r in read_jsonl(sidecar(store, "results.jsonl")))
    assert mel["ok files"] == 4


def test_stats_come_from_the_train_split_only(dataset, scheduler):
    tmp, manifest = dataset
    store = tmp / "f.zarr"
    run(manifest, store, scheduler)
    stats = json.loads(sidecar(store, "stats.json").read_text())
    assert stats["ids"] == ["train__spk0_000", "train__spk1_001"]
    mel = np.concatenate([open_arrays(store, i)["mel"][:] for i in stats["ids"]]).astype(np.float64)
    np.testing.assert_allclose(stats["mel"]["mean"], mel.mean(0), atol=1e-4)
    np.testing.assert_allclose(stats["mel"]["std"], mel.std(0), rtol=1e-3, atol=1e-4)
    assert stats["mel"]["frames"] == len(mel) and len(stats["egemaps"]["mean"]) == 88


def test_bad_inputs_become_failure_records(tmp_path, scheduler):
    data = tmp_path / "data"
    good = [write_pair(data, f"train/ok{i}_{i}", 2.0, seed=i) for i in range(2)]
    write_pair(data, "train/short_0", 3.0, track_seconds=1.0)  # track 2 s shorter than the audio
    write_pair(data, "train/corrupt_0", 2.0)
    write_pair(data, "train/nan_0", 2.0)
    write_pair(data, "train/wide_0", 2.0)
    write_pair(data, "train/empty_0", 2.0)
    write_pair(data, "train/range_0", 2.0)
    write_pair(data, "train/backwards_0", 2.0)
    write_pair(data, "train/stereo44k_0", 2.0)
    sf.write(data / "train/stereo44k_0.wav", np.stack([tone(2.0, 44_100)] * 2, 1), 44_100)
    manifest = tmp_path / "m.jsonl"
    build_manifest(data, manifest, load_config(None).data, include_audio_only=True)
    # the manifest was right when built; now files go bad under it
    (data / "train/corrupt_0.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    sf.write(data / "train/nan_0.wav", np.full(32000, np.nan, np.float32), 16000, subtype="FLOAT")
    lines = (data / "train/wide_0.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    row["blendshapes"] = row["blendshapes"][:51]
    lines[3] = json.dumps(row)
    (data / "train/wide_0.jsonl").write_text("\n".join(lines) + "\n")
    (data / "train/empty_0.wav").write_bytes(b"")
    for name, edit in (
        ("range_0", lambda r: r.update(blendshapes=[1.5] * 52)),
        ("backwards_0", lambda r: r.update(timestamp=0.0)),
    ):
        path = data / f"train/{name}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        edit(rows[5])
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    entries = read_jsonl(manifest)
    short = json.loads(json.dumps(entries[0]))  # the manifest rejected the short track; force it in
    short.update(
        id="train__short_0", audio_path="data/train/short_0.wav", track_path="data/train/short_0.jsonl"
    )
    from koemorph.io.audio import sha256_file

    short["audio_sha256"] = sha256_file(data / "train/short_0.wav")
    (manifest).write_text("".join(json.dumps(e) + "\n" for e in [*entries, short]))

    summary = run(manifest, tmp_path / "f.zarr", scheduler)
    failures = {r["id"]: r["error"] for r in read_jsonl(sidecar(tmp_path / "f.zarr", "failures.jsonl"))}
    assert set(failures) == {
        "train__corrupt_0",
        "train__nan_0",
        "train__wide_0",
        "train__short_0",
        "train__empty_0",
        "train__range_0",
        "train__backwards_0",
    }
    assert "corrupt_0.wav" in failures["train__corrupt_0"]
    assert "empty_0.wav" in failures["train__empty_0"] and "empty" in failures["train__empty_0"]
    assert "range_0.jsonl:6" in failures["train__range_0"]
    assert "backwards_0.jsonl:6" in failures["train__backwards_0"]
    assert "wide_0.jsonl:4" in failures["train__wide_0"] and "51" in failures["train__wide_0"]
    assert "shorter" in failures["train__short_0"]
    assert summary["ok files"] == 3  # ok0, ok1 and the stereo 44.1 kHz file
    assert len(good) == 2


def test_killed_run_leaves_only_complete_groups(tmp_path):
    """Kill -9 the driver and its workers while each of the 2 workers is held (KOEMORPH_HOLD) right
    after publishing its first group: exactly 2 groups are in place, both complete, and a re-run
    keeps them and computes the other 10."""
    data = tmp_path / "data"
    for i in range(12):
        write_pair(data, f"train/s{i}_{i:02d}", 6.0, seed=i)
    manifest = tmp_path / "m.jsonl"
    build_manifest(data, manifest, load_config(None).data)
    store, holds = tmp_path / "f.zarr", tmp_path / "holds"
    holds.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "extract",
        str(manifest),
        "--store",
        str(store),
        "--workers",
        "2",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "KOEMORPH_HOLD": f"extract.published@{holds}",
    }
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300  # a limit for a hung run, not the kill point
    while len(list(holds.glob("*.reached"))) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "workers never reached the hold"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and both held workers
    proc.wait()
    held = sorted(p.read_text() for p in holds.glob("*.reached"))
    done = sorted(p.parent.name for p in store.glob("*/zarr.json"))
    assert done == held and len(done) == 2
    chunks = {}
    for file_id in done:  # anything in place is complete and readable
        attrs = read_group_attrs(store, file_id)
        assert attrs is not None
        assert open_arrays(store, file_id)["mel"][:].shape == (attrs["num_frames"], 80)
        chunks[file_id] = {p: p.stat().st_mtime_ns for p in (store / file_id).rglob("c/*/0")}
    summary = extract(manifest, store, load_config(None), workers=2)
    assert summary["cached files"] == 2 and summary["ok files"] == 10
    for file_id, stamps in chunks.items():  # the finished groups were not recomputed
        assert {p: p.stat().st_mtime_ns for p in (store / file_id).rglob("c/*/0")} == stamps
    assert not (store / STAGING).exists() or not any((store / STAGING).iterdir())
