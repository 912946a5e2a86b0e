"""Demo speech engines (espeak-ng, flite, festival): phone timings, visemes, reproducible bytes,
the engine split of the manifest, and the error for an engine that is not installed.

flite and festival are Debian packages (``apt-get install flite festival festvox-kallpc16k
festvox-kdlpc16k festvox-us-slt-hts``); tests that need them skip with that reason where they
are absent (CI installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from koemorph.config import DataConfig
from koemorph.data.manifest import build_manifest, load_manifest
from koemorph.demo.engines import EngineMissing, check_engines, parse_engines, synthesise
from koemorph.demo.visemes import phone_viseme
from koemorph.demo.voices import make_engine_voices, split_engine_voices
from koemorph.io.tracks import write_jsonl_track
from tests.conftest import tone

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "apt-get install flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
TEXT = "Bob met Pam by the blue moon, and a cat sat on the map."


def _installed(engine: str) -> bool:
    try:
        check_engines([engine])
    except EngineMissing:
        return False
    return True


def need(engine: str):
    return pytest.mark.skipif(not _installed(engine), reason=f"{engine} not installed here ({INSTALL})")


BINARIES = [pytest.param(e, marks=need(e)) for e in ("flite", "festival")]
ALL = [pytest.param("espeak", marks=need("espeak")), *BINARIES]


@pytest.mark.parametrize("engine", ALL)
def test_every_voice_gives_phones_that_tile_the_audio_and_map_to_visemes(engine):
    bases = {}
    for voice in make_engine_voices(engine, 0):
        bases.setdefault(voice.synth_voice, voice)
    for voice in list(bases.values())[:4]:
        samples, rate, phones = synthesise(voice, TEXT, rand_seed=7)
        assert samples.dtype == np.int16 and len(samples) > 0.8 * rate, voice.slug
        assert phones[-1].end == len(samples) and phones[0].start < 0.5 * rate
        assert all(a.end == b.start for a, b in zip(phones, phones[1:])), voice.slug
        assert all(p.end > p.start for p in phones)
        unknown = {p.name for p in phones if not phone_viseme(p.name)[1]}
        assert not unknown, (voice.slug, unknown)
        visemes = [phone_viseme(p.name)[0] for p in phones]
        assert [p.name for p in phones if p.name in "pbm"].count("b") >= 2, voice.slug  # Bob, by, blue
        assert sum(v == "closed" for v in visemes) >= 7 and "ae" in visemes and "rest" in visemes
        speech = np.abs(samples.astype(np.float64))
        for p in phones:
            if phone_viseme(p.name)[0] in ("ae", "ah") and p.end - p.start > 0.04 * rate:
                assert speech[p.start : p.end].max() > 300, (voice.slug, p)  # vowels are audible


@pytest.fixture(scope="module")
def binary_corpus(tmp_path_factory):
    engines = [e for e in ("flite", "festival") if _installed(e)]
    if not engines:
        pytest.skip(f"neither flite nor festival installed here ({INSTALL})")
    out = tmp_path_factory.mktemp("engines")
    for name, workers in (("a", 1), ("b", 2)):
        cmd = [sys.executable, "-m", "cli.main", "demo-data", str(out / name), "--minutes", "0.25"]
        cmd += ["--seed", "5", "--engines", ",".join(["espeak", *engines]), "--workers", str(workers)]
        cmd += ["--params", str(out / "missing.yaml")]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    return out, engines


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_for_every_engine(binary_corpus):
    out, engines = binary_corpus
    a, b = _all_bytes(out / "a"), _all_bytes(out / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    meta = json.loads(a["corpus.json"])
    assert meta["engines"] == ["espeak", *engines]
    made = {o["engine"] for o in meta["origin"].values()}
    assert made == {"espeak", *engines}


def test_engine_and_voice_recorded_and_ids_unique_across_engines(binary_corpus):
    out, _ = binary_corpus
    meta = json.loads((out / "a" / "corpus.json").read_text())
    for split, ids in meta["files"].items():
        for file_id in ids:
            doc = json.loads((out / "a" / split / f"{file_id}.phones.json").read_text())
            origin = meta["origin"][file_id]
            assert (doc["engine"], doc["voice"]) == (origin["engine"], origin["voice"])
            assert (
                file_id.startswith(doc["voice"] + "_")
                and meta["voices"][doc["voice"]]["engine"] == doc["engine"]
            )
            if doc["engine"] != "espeak":
                assert doc["voice"].startswith({"flite": "fl-", "festival": "fe-"}[doc["engine"]])
                assert all(seg.get("source") for seg in doc["phones"][1:-1])
            audio = sf.info(out / "a" / split / f"{file_id}.wav")
            assert doc["phones"][0]["start"] == 0 and abs(doc["phones"][-1]["end"] - audio.duration) < 1e-3
    assert meta["unknown_phones"] == []


def test_targets_close_the_lips_on_bilabials_and_open_the_jaw_on_open_vowels(binary_corpus):
    out, engines = binary_corpus
    from koemorph.blendshapes import INDEX
    from koemorph.io.atomic import read_jsonl

    for engine in engines:
        closed, open_ = [], []
        for doc_path in sorted(
            (out / "a").glob(f"*/{ {'flite': 'fl', 'festival': 'fe'}[engine] }-*.phones.json")
        ):
            doc = json.loads(doc_path.read_text())
            stem = doc_path.with_name(doc_path.name.removesuffix(".phones.json"))
            track = np.array([r["blendshapes"] for r in read_jsonl(stem.with_suffix(".jsonl"))])
            for seg in doc["phones"]:
                k = min(int(round((seg["start"] + seg["end"]) / 2 * 30)), len(track) - 1)
                if seg["phone"] in ("p", "b", "m"):
                    closed.append(track[k])
                elif seg["viseme"] in ("ah", "ae", "aw"):
                    open_.append(track[k])
        closed, open_ = np.array(closed), np.array(open_)
        assert len(closed) >= 5 and len(open_) >= 5, engine
        aperture = closed[:, INDEX["jawOpen"]] - closed[:, INDEX["mouthClose"]]
        assert np.mean(aperture < 0.05) >= 0.85, engine
        assert open_[:, INDEX["jawOpen"]].mean() > closed[:, INDEX["jawOpen"]].mean() + 0.1, engine


@pytest.mark.parametrize("engine", ["flite", "festival"])
def test_binary_voices_split_by_base_voice(engine):
    split = split_engine_voices(engine, 0)
    bases = {s: {v.synth_voice for v in voices} for s, voices in split.items()}
    assert bases["val"].isdisjoint(bases["train"] | bases["test"]) and bases["test"].isdisjoint(
        bases["train"]
    )
    assert all(bases.values())


def _demo_file(root: Path, rel: str, engine: str | None, voice: str) -> None:
    wav = root / f"{rel}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, tone(1.0), 16_000)
    write_jsonl_track(root / f"{rel}.jsonl", np.full((30, 52), 0.2, np.float32), 30)
    doc = {"id": wav.stem, "voice": voice, "phones": []} | ({"engine": engine} if engine else {})
    (root / f"{rel}.phones.json").write_text(json.dumps(doc))


def test_split_by_engine_holds_the_named_engine_out_whole(tmp_path):
    data = tmp_path / "data"
    files = {
        "espeak": ["usm3", "gbf1", "rpm2", "scf4"],
        "flite": ["fl-slt1", "fl-awb2"],
        "festival": ["fe-kal1"],
    }
    for engine, voices in files.items():
        for k, voice in enumerate(voices):
            for n in range(3):
                _demo_file(data, f"{('train', 'val', 'test')[k % 3]}/{voice}_{n:04d}", engine, voice)
    _demo_file(data, "train/old_0000", None, "old")  # an old espeak-only corpus file: espeak_voice only
    doc = json.loads((data / "train/old_0000.phones.json").read_text()) | {"espeak_voice": "en+m1"}
    (data / "train/old_0000.phones.json").write_text(json.dumps(doc))
    _demo_file(data, "train/rec_0000", None, "rec")
    (data / "train/rec_0000.phones.json").unlink()  # a recording: no engine known
    for holdout in ("flite", "espeak"):
        out = tmp_path / f"{holdout}.jsonl"
        cfg = DataConfig(split_by="engine", holdout_engine=holdout, split_ratios=(0.5, 0.5, 0.0))
        result = build_manifest(data, out, cfg)
        entries = load_manifest(out)
        assert {e.engine for e in entries if e.split == "test"} == {holdout}
        assert all(e.split != "test" for e in entries if e.engine != holdout)
        assert {e.split for e in entries if e.engine != holdout} == {"train", "val"}
        by_voice = {}
        for e in entries:
            by_voice.setdefault(e.voice, set()).add(e.split)
        assert all(len(s) == 1 for s in by_voice.values())  # a voice never spans two splits
        assert next(e for e in entries if e.voice == "old").engine == "espeak"
        assert [p["path"] for p in result.problems] == [str(data / "train/rec_0000.wav")]
    build_manifest(data, tmp_path / "plain.jsonl", DataConfig())
    plain = load_manifest(tmp_path / "plain.jsonl")
    assert {e.split for e in plain if e.voice == "usm3"} == {"train"}  # speaker split: the folders
    assert next(e for e in plain if e.speaker == "rec").engine is None
    with pytest.raises(ValueError, match="data.holdout_engine"):
        build_manifest(data, tmp_path / "x.jsonl", DataConfig(split_by="engine", holdout_engine="sam"))
    with pytest.raises(ValueError, match="data.split_by"):
        build_manifest(data, tmp_path / "x.jsonl", DataConfig(split_by="voices"))


def test_unknown_engine_names_are_rejected():
    assert parse_engines("espeak, Flite") == ("espeak", "flite")
    with pytest.raises(ValueError, match="unknown engine"):
        parse_engines("espeak,sapi")


@pytest.mark.parametrize("engine", ["flite", "festival"])
def test_missing_engine_is_a_clear_error_naming_the_package(engine, tmp_path):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))  # no /usr/bin: no flite, no festival
    assert shutil.which(engine, path=env["PATH"]) is None
    cmd = [sys.executable, "-m", "cli.main", "demo-data", str(tmp_path / "c"), "--minutes", "0.1"]
    cmd += ["--engines", f"espeak,{engine}", "--params", str(tmp_path / "missing.yaml")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert f"engine '{engine}' is not installed" in message and f"apt-get install {engine}" in message
    assert "Traceback" not in done.stderr and not (tmp_path / "c").exists()
