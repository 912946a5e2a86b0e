"""The generated demo corpus: reproducible bytes, layout, voice splits and target sanity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from koemorph.blendshapes import INDEX, NUM_BLENDSHAPES
from koemorph.demo.corpus import generate_corpus
from koemorph.demo.espeak import strip_stress
from koemorph.demo.visemes import phone_viseme
from koemorph.demo.voices import make_voices, split_voices
from koemorph.grid import SAMPLE_RATE, num_frames_for_samples
from koemorph.io.atomic import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
MINUTES, SEED = 0.5, 3
SPLITS = ("train", "val", "test")


def _cli(out_dir: Path, workers: int, seed: int = SEED) -> None:
    """Generate in a fresh interpreter, as a user would."""
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "demo-data",
        str(out_dir),
        "--minutes",
        str(MINUTES),
        "--seed",
        str(seed),
        "--workers",
        str(workers),
        "--params",
        str(out_dir) + ".missing.yaml",
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=120)


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "a"
    _cli(out, workers=2)
    return out


def _files(root: Path):
    """(split, stem path without suffix) for every generated file."""
    return [(split, p.with_suffix("")) for split in SPLITS for p in sorted((root / split).glob("*.wav"))]


def _load(stem: Path):
    track = np.array([r["blendshapes"] for r in read_jsonl(stem.with_suffix(".jsonl"))])
    doc = json.loads(stem.with_suffix(".phones.json").read_text())
    return track, doc


def _mid_rows(root: Path, select) -> np.ndarray:
    """Track rows at the middle frame of every phone for which ``select(phone_entry)`` is true."""
    rows = []
    for _, stem in _files(root):
        track, doc = _load(stem)
        for p in doc["phones"]:
            if select(p):
                k = min(int(round((p["start"] + p["end"]) / 2 * 30)), len(track) - 1)
                rows.append(track[k])
    return np.array(rows)


# -- reproducibility -------------------------------------------------------------------------------


def test_same_seed_gives_same_bytes_for_any_worker_count(corpus, tmp_path):
    other = tmp_path / "b"
    _cli(other, workers=1)
    a, b = _all_bytes(corpus), _all_bytes(other)
    assert sorted(a) == sorted(b)
    assert len(a) >= 1 + 3 * 3  # corpus.json + at least one file triple per split
    different = [name for name in a if a[name] != b[name]]
    assert different == []


def test_other_seed_gives_other_data(corpus, tmp_path):
    summary = generate_corpus(tmp_path / "c", minutes=MINUTES, seed=SEED + 1, workers=2)
    assert summary["files"] >= 3
    wav_a = sorted(p.read_bytes() for p in corpus.rglob("*.wav"))
    wav_c = sorted(p.read_bytes() for p in (tmp_path / "c").rglob("*.wav"))
    assert not set(wav_a) & set(wav_c)


def test_rerun_with_same_settings_reuses_the_corpus(corpus):
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()}
    summary = generate_corpus(corpus, minutes=MINUTES, seed=SEED, workers=2)
    assert summary["reused"] is True
    assert summary["files"] == sum(1 for _ in corpus.rglob("*.wav"))
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()} == before


# -- layout ----------------------------------------------------------------------------------------


def test_files_are_paired_on_the_grid(corpus):
    meta = json.loads((corpus / "corpus.json").read_text())
    assert (meta["seed"], meta["minutes"]) == (SEED, MINUTES)
    assert meta["unknown_phones"] == []
    total = 0.0
    for _split, stem in _files(corpus):
        info = sf.info(str(stem.with_suffix(".wav")))
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert 3.5 <= info.duration <= 16.0
        total += info.duration
        text = stem.with_suffix(".jsonl").read_text()
        assert "-0.0" not in text and "NaN" not in text
        records = read_jsonl(stem.with_suffix(".jsonl"))
        assert len(records) == num_frames_for_samples(info.frames)
        assert [r["timestamp"] for r in records[:4]] == [0.0, 0.033333, 0.066667, 0.1]
        track, doc = _load(stem)
        assert track.shape == (len(records), NUM_BLENDSHAPES)
        assert track.min() >= 0.0 and track.max() <= 1.0
        assert doc["id"] == stem.name and stem.name.split("_")[0] == doc["voice"]
        phones = doc["phones"]
        assert phones[0]["start"] == 0.0 and phones[-1]["end"] == pytest.approx(info.duration, abs=1e-6)
        assert all(a["end"] == b["start"] for a, b in zip(phones, phones[1:]))
        assert all(p["end"] > p["start"] for p in phones)
        assert phones[0]["phone"] == "_" and phones[-1]["phone"] == "_"
    assert total == pytest.approx(meta["total_seconds"], abs=0.01)
    assert 0.8 * MINUTES * 60 < total < 1.6 * MINUTES * 60


def test_splits_are_by_voice_and_disjoint(corpus):
    meta = json.loads((corpus / "corpus.json").read_text())
    speakers = {
        split: {stem.name.split("_")[0] for s, stem in _files(corpus) if s == split} for split in SPLITS
    }
    for split in SPLITS:
        assert speakers[split], f"no files in {split}"
        assert speakers[split] <= set(meta["splits"][split]["voices"])
        assert len(meta["files"][split]) == meta["splits"][split]["files"]
    assert not speakers["train"] & speakers["val"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]
    for seed in range(5):
        split = split_voices(make_voices(seed), seed)
        slugs = [v.slug for s in SPLITS for v in split[s]]
        assert len(slugs) == len(set(slugs)) == 12
        assert [len(split[s]) for s in SPLITS] == [8, 2, 2]
        assert all(v.slug.isalnum() for v in split["train"])


def test_phone_names_map_to_visemes():
    assert strip_stress("'u:") == ("u:", True)
    assert strip_stress(",oU") == ("oU", False)
    assert phone_viseme("p") == ("closed", True)
    assert phone_viseme("aU") == (("ah", "oo"), True)
    assert phone_viseme("T") == ("dental", True)
    assert phone_viseme("qq")[1] is False


# -- target sanity ---------------------------------------------------------------------------------


def test_lips_close_inside_bilabials(corpus):
    rows = _mid_rows(corpus, lambda p: p["phone"] in ("p", "b", "m"))
    assert len(rows) >= 20
    aperture = rows[:, INDEX["jawOpen"]] - rows[:, INDEX["mouthClose"]]
    assert np.mean(aperture < 0.05) >= 0.85
    closure = rows[:, [INDEX["mouthClose"], INDEX["mouthPressLeft"], INDEX["mouthPressRight"]]].max(axis=1)
    assert np.mean(closure > 0.3) >= 0.8
    others = _mid_rows(corpus, lambda p: p["viseme"] in ("ah", "ae", "eh", "aw", "ah>ee", "ah>oo"))
    assert rows[:, INDEX["mouthClose"]].mean() > others[:, INDEX["mouthClose"]].mean() + 0.25


def test_open_vowels_open_the_jaw_more_than_bilabials(corpus):
    open_ = _mid_rows(corpus, lambda p: p["viseme"] in ("ah", "ae", "aw") or p["viseme"].startswith("ah>"))
    closed = _mid_rows(corpus, lambda p: p["viseme"] == "closed")
    assert len(open_) >= 5
    assert open_[:, INDEX["jawOpen"]].mean() > closed[:, INDEX["jawOpen"]].mean() + 0.1


def test_rounded_and_spread_vowels(corpus):
    round_ = _mid_rows(corpus, lambda p: p["viseme"] in ("oo", "uu", "w", "oh>oo"))
    spread = _mid_rows(corpus, lambda p: p["viseme"] in ("ee", "ih", "eh>ee"))
    assert len(round_) >= 5 and len(spread) >= 5
    assert round_[:, INDEX["mouthPucker"]].mean() > spread[:, INDEX["mouthPucker"]].mean() + 0.2
    assert spread[:, INDEX["mouthSmileLeft"]].mean() > round_[:, INDEX["mouthSmileLeft"]].mean() + 0.05


def test_mouth_rests_in_long_pauses(corpus):
    rows = _mid_rows(corpus, lambda p: p["phone"] == "_" and p["end"] - p["start"] >= 0.4)
    assert len(rows) >= 5
    assert rows[:, INDEX["jawOpen"]].max() < 0.08
    assert rows[:, INDEX["mouthPucker"]].max() < 0.15


def test_blinks_gaze_and_brows_exist(corpus):
    for _, stem in _files(corpus):
        track, _ = _load(stem)
        left, right = track[:, INDEX["eyeBlinkLeft"]], track[:, INDEX["eyeBlinkRight"]]
        np.testing.assert_array_equal(left, right)
        if len(track) > 5 * 30:
            assert left.max() > 0.5
            assert np.mean(left > 0.5) < 0.1  # blinks are brief
        gaze = track[:, [INDEX[n] for n in INDEX if n.startswith("eyeLook")]]
        assert gaze.max() > 0.02
        assert track[:, INDEX["browInnerUp"]].std() > 0.005
