"""`koemorph manifest`: pairing, validation, splits and problems, through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from cli.main import app
from koemorph import grid
from koemorph.config import DataConfig
from koemorph.data.manifest import build_manifest, hash_split, load_manifest, make_id
from koemorph.io.tracks import write_beat_json, write_jsonl_track, write_livelink_csv
from tests.conftest import tone

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def pair(root, rel, seconds=1.0, writer=write_jsonl_track, fps=30, track_seconds=None, sr=16_000):
    wav = root / f"{rel}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, tone(seconds, sr=sr), sr)
    n = grid.num_frames(track_seconds or seconds, fps)
    suffix = {write_jsonl_track: ".jsonl", write_livelink_csv: ".csv", write_beat_json: ".json"}[writer]
    writer(root / f"{rel}{suffix}", np.full((n, 52), 0.25, np.float32), fps)
    return wav


def test_folder_splits_formats_and_problems(tmp_path):
    data = tmp_path / "data"
    pair(data, "train/alice_001")
    pair(data, "train/sub dir/bob_001", writer=write_livelink_csv, fps=60, seconds=1.5)
    pair(data, "val/carol_001", writer=write_beat_json, sr=44_100)
    pair(data, "test/dave_001")
    pair(data, "train/short_001", seconds=3.0, track_seconds=1.0)  # track 2 s short
    (data / "train/lonely.wav").write_bytes((data / "train/alice_001.wav").read_bytes())  # no track
    write_jsonl_track(data / "train/orphan.jsonl", np.zeros((3, 52)), 30)  # no audio
    (data / "train/broken_001.wav").write_bytes(b"not audio")
    write_jsonl_track(data / "train/broken_001.jsonl", np.zeros((30, 52)), 30)
    (data / "train/alice_001.phones.json").write_text("{}")  # a sidecar, not a track
    out = tmp_path / "manifests" / "m.jsonl"

    result = CliRunner().invoke(app, ["manifest", str(data), "-o", str(out)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "4 problem(s)" in result.output and "short_001.jsonl" in result.output

    entries = {e.id: e for e in load_manifest(out)}
    assert set(entries) == {
        "train__alice_001",
        f"train__sub-dir__bob_001-{make_id('train/sub dir/bob_001')[-6:]}",
        "val__carol_001",
        "test__dave_001",
    }
    bob = next(e for e in entries.values() if e.speaker == "bob")
    assert bob.split == "train" and bob.track_fps == 60.0 and bob.duration == 1.5
    assert entries["val__carol_001"].sample_rate == 44_100 and entries["val__carol_001"].split == "val"
    assert all(len(e.audio_sha256) == 64 and len(e.track_sha256) == 64 for e in entries.values())
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert raw[0]["audio_path"].startswith("../data/")  # relative to the manifest's folder

    problems = {
        p["path"].split("/")[-1]: p["problem"]
        for p in map(json.loads, (tmp_path / "manifests" / "m.problems.jsonl").read_text().splitlines())
    }
    assert "shorter" in problems["short_001.jsonl"]
    assert "no blendshape track" in problems["lonely.wav"]
    assert "no audio" in problems["orphan.jsonl"]
    assert "cannot read" in problems["broken_001.wav"]

    strict = CliRunner().invoke(app, ["manifest", str(data), "-o", str(out), "--strict"], env=ENV)
    assert strict.exit_code == 1


def test_hash_split_keeps_speakers_together_and_is_seeded(tmp_path):
    data = tmp_path / "flat"
    for speaker in range(20):
        for take in range(3):
            pair(data, f"spk{speaker:02d}_{take}", seconds=0.5)
    cfg = DataConfig(split_ratios=(0.6, 0.2, 0.2), split_seed=1)
    entries = build_manifest(data, tmp_path / "m.jsonl", cfg).entries
    by_speaker = {}
    for e in entries:
        by_speaker.setdefault(e.speaker, set()).add(e.split)
    assert len(by_speaker) == 20 and all(len(s) == 1 for s in by_speaker.values())
    assert {next(iter(s)) for s in by_speaker.values()} == {"train", "val", "test"}
    again = build_manifest(data, tmp_path / "m2.jsonl", cfg).entries
    assert [e.split for e in again] == [e.split for e in entries]
    other = [hash_split(f"spk{i:02d}", 2, (0.6, 0.2, 0.2)) for i in range(20)]
    assert other != [next(iter(by_speaker[f"spk{i:02d}"])) for i in range(20)]


def test_ids_are_path_safe_and_distinct():
    assert make_id("train/a b/x") != make_id("train/a-b/x")
    assert make_id("ünï/cödé").isascii()
    assert make_id("train/speaker_001") == "train__speaker_001"
    assert not make_id("__weird/x").startswith("__")


def test_an_empty_or_unusable_folder_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / ".hidden.wav").write_bytes(b"")
    result = CliRunner().invoke(app, ["manifest", str(empty), "-o", str(tmp_path / "m.jsonl")], env=ENV)
    assert result.exit_code == 1
    assert f"{empty}: no audio files (.wav .flac .ogg) with blendshape tracks found" in " ".join(
        result.output.split()
    )

    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    (bad / "train/broken_001.wav").write_bytes(b"not audio")
    write_jsonl_track(bad / "train/broken_001.jsonl", np.zeros((30, 52)), 30)
    result = CliRunner().invoke(app, ["manifest", str(bad), "-o", str(tmp_path / "m.jsonl")], env=ENV)
    assert result.exit_code == 1
    assert f"{bad}: no usable audio + track pairs (1 problem(s)" in " ".join(result.output.split())
