"""The feature store under hostile manifests, concurrent runs, damage and truncated audio.

Real `koemorph extract` subprocesses, a real Dask LocalCluster, real openSMILE, Zarr on disk.
Concurrent runs are synchronised with the ``KOEMORPH_HOLD`` hook (:mod:`koemorph.io.hold`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from koemorph.config import load_config
from koemorph.data.cache import FeatureCache
from koemorph.data.manifest import build_manifest, load_manifest
from koemorph.data.store import GroupWriter, check_group, open_arrays, read_group_attrs, sidecar
from koemorph.errors import InputError
from koemorph.io.atomic import read_jsonl
from pipeline.extract import extract
from tests.test_extract import write_pair

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield cluster.scheduler_address
    cluster.close()


def truncate(wav: Path) -> None:
    """Keep the header (which still declares the whole length) and half of the samples."""
    data = wav.read_bytes()
    wav.write_bytes(data[: 44 + (len(data) - 44) // 2])


def make_data(tmp: Path, n: int, seconds: float = 2.0) -> Path:
    data = tmp / "data"
    for i in range(n):
        write_pair(data, f"train/s{i}_{i:02d}", seconds, seed=i)
    manifest = tmp / "m.jsonl"
    build_manifest(data, manifest, load_config(None).data)
    return manifest


def cli_extract(manifest: Path, store: Path, hold: str | None = None, **kw):
    env = {k: v for k, v in os.environ.items() if k != "KOEMORPH_HOLD"}
    env.update(PYTHONPATH=str(ROOT), NO_COLOR="1", COLUMNS="200")
    if hold:
        env["KOEMORPH_HOLD"] = hold
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
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(condition, what: str, seconds: float = 240):
    """Wait for a condition the code under test signals (a hook file), failing after a generous limit."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def assert_readable(store: Path, file_id: str) -> None:
    attrs = read_group_attrs(store, file_id)
    assert attrs is not None and check_group(store / file_id, attrs["arrays"]) == []
    arrays = open_arrays(store, file_id)
    assert sorted(arrays) == ["mel", "phones", "targets"]  # the default features
    for arr in arrays.values():
        assert arr[:].shape[0] == attrs["num_frames"]


def test_unsafe_ids_are_failures_and_write_nothing_outside(tmp_path, scheduler):
    manifest = make_data(tmp_path, 2)
    entries = read_jsonl(manifest)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    (tmp_path / "s" / "victim").mkdir(parents=True)
    (tmp_path / "s" / "victim" / "keep.txt").write_text("precious too")
    bad_ids = ["../../victim", "../victim", str(victim), "sub/x", "..", "_staging"]
    lines = entries + [{**entries[0], "id": bad} for bad in bad_ids]
    manifest.write_text("".join(json.dumps(e) + "\n" for e in lines))
    with pytest.raises(InputError, match=r"m\.jsonl:3: id '\.\./\.\./victim' is not a safe name"):
        load_manifest(manifest)

    store = tmp_path / "s" / "f.zarr"
    summary = extract(manifest, store, load_config(None), scheduler=scheduler)
    assert summary["ok files"] == 2 and summary["error files"] == len(bad_ids)
    failures = {r["id"]: r["error"] for r in read_jsonl(sidecar(store, "failures.jsonl"))}
    assert set(failures) == set(bad_ids)
    for line, bad in enumerate(bad_ids, start=3):
        assert f"m.jsonl:{line}: id {bad!r} is not a safe name" in failures[bad]
    assert (victim / "keep.txt").read_text() == "precious" and sorted(os.listdir(victim)) == ["keep.txt"]
    assert (tmp_path / "s" / "victim" / "keep.txt").read_text() == "precious too"
    assert sorted(os.listdir(tmp_path)) == sorted(["data", "m.jsonl", "m.problems.jsonl", "s", "victim"])
    for entry in entries:
        assert_readable(store, entry["id"])


def test_two_concurrent_extracts_keep_the_store_consistent(tmp_path):
    manifest = make_data(tmp_path, 6)
    store, holds = tmp_path / "f.zarr", tmp_path / "holds"
    holds.mkdir()
    first = cli_extract(manifest, store, hold=f"extract.published@{holds}")
    try:  # the first run has published groups and its workers are held mid-run
        wait_for(lambda: any(holds.glob("*.reached")), "the first run to publish a group")
        second = cli_extract(manifest, store)
        out, err = second.communicate(timeout=300)
        assert second.returncode != 0
        assert f"store in use by PID {first.pid}" in " ".join(err.split()), err
    finally:
        (holds / "extract.published.go").touch()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    results = read_jsonl(sidecar(store, "results.jsonl"))
    assert len(results) == 6 and {r["status"] for r in results} == {"ok"}
    for r in results:
        assert_readable(store, r["id"])

    again = cli_extract(manifest, store)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert {r["status"] for r in read_jsonl(sidecar(store, "results.jsonl"))} == {"cached"}


def test_a_damaged_group_is_named_by_train_and_recomputed_by_extract(tmp_path, scheduler):
    manifest = make_data(tmp_path, 3)
    store = tmp_path / "f.zarr"
    extract(manifest, store, load_config(None), scheduler=scheduler)
    damaged_id = "train__s1_01"
    (store / damaged_id / "mel" / "c" / "0" / "0").unlink()
    with pytest.raises(InputError, match=rf"{damaged_id}: damaged group: array 'mel' lacks chunk\(s\) \[0\]"):
        FeatureCache(store)
    phones_before = (store / damaged_id / "phones" / "c" / "0" / "0").read_bytes()

    summary = extract(manifest, store, load_config(None), scheduler=scheduler)
    assert summary["ok files"] == 1 and summary["cached files"] == 2
    by_id = {r["id"]: r for r in read_jsonl(sidecar(store, "results.jsonl"))}
    assert by_id[damaged_id]["computed"] == ["mel"]
    assert (store / damaged_id / "phones" / "c" / "0" / "0").read_bytes() == phones_before
    cache = FeatureCache(store)
    assert cache.load(damaged_id)["mel"].shape == (by_id[damaged_id]["num_frames"], 80)


def test_a_group_is_never_published_with_a_listed_array_missing(tmp_path):
    store = tmp_path / "s.zarr"
    with (
        pytest.raises(ValueError, match="not publishing an incomplete group.*'egemaps'"),
        GroupWriter(store, "a") as writer,
    ):
        writer.write("mel", np.zeros((10, 80), np.float32))
        writer.publish({"id": "a", "num_frames": 10, "arrays": ["egemaps", "mel"]})
    assert read_group_attrs(store, "a") is None and not (store / "a").exists()
    with pytest.raises(ValueError, match="not a safe name"):
        GroupWriter(store, "../a")


def test_truncated_audio_is_a_named_error_in_manifest_and_extract(tmp_path, scheduler):
    data = tmp_path / "data"
    for i in range(3):
        write_pair(data, f"train/s{i}_{i:02d}", 3.0, seed=i)
    truncate(data / "train/s0_00.wav")
    manifest = tmp_path / "m.jsonl"
    result = build_manifest(data, manifest, load_config(None).data)
    problems = {Path(p["path"]).name: p["problem"] for p in result.problems}
    assert problems["s0_00.wav"].startswith("file is truncated: its header declares 3.00 s")
    assert "holds 1.50 s" in problems["s0_00.wav"]
    assert len(result.entries) == 2

    truncate(data / "train/s1_01.wav")  # goes bad after the manifest was built
    summary = extract(manifest, tmp_path / "f.zarr", load_config(None), scheduler=scheduler)
    assert summary["ok files"] == 1 and summary["error files"] == 1
    (failure,) = read_jsonl(sidecar(tmp_path / "f.zarr", "failures.jsonl"))
    assert failure["id"] == "train__s1_01"
    assert "s1_01.wav: file is truncated: its header declares 3.00 s" in failure["error"]
