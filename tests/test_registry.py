"""The feature registry, the shared batch runner and the one short hash."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from koemorph import grid
from koemorph.config import config_hash, load_config
from koemorph.data.extract import array_hashes, extract_file, feature_stats, plan
from koemorph.data.manifest import build_manifest, load_manifest
from koemorph.data.store import FileRecord, open_arrays, read_group_attrs
from koemorph.errors import AudioError
from koemorph.features import registry
from koemorph.features.registry import FEATURES, Feature, register
from pipeline.jobs import run_jobs
from tests.conftest import tone
from tests.test_extract import write_pair


def test_hashes_are_the_ones_stores_already_hold():
    """Measured with the code before the registry and the shared hash: existing stores stay valid."""
    cfg = load_config(None, ["features.egemaps=true", "features.phones=false", "model.mel_bands=4"])
    assert array_hashes(cfg.features, cfg.data) == {
        "mel": "3e278d5d007dbf2d",
        "egemaps": "cb99773976860085",
        "phones": None,
        "targets": "60c9d44a7438a79f",
        "phones_text": None,
    }
    cfg = load_config(None, ["features.phones=false", "features.fps=60"])
    assert array_hashes(cfg.features, cfg.data) == {
        "mel": "b1454000bd57aa7f",
        "egemaps": None,
        "phones": None,
        "targets": "7b0c7ec5b71366f4",
        "phones_text": None,
    }
    # whole-file phones, as stores held them before features.phones_warps (PocketSphinx 5.1.1)
    cfg = load_config(None, ["features.phones_decoding=whole"])
    assert array_hashes(cfg.features, cfg.data) == {
        "mel": "3e278d5d007dbf2d",
        "egemaps": None,
        "phones": "497a970bfb26a513",
        "targets": "60c9d44a7438a79f",
        "phones_text": "35ae56edb51df1f3",
    }
    old_default = load_config(None, ["model.mel_bands=4", "features.phones=false"]).model
    assert config_hash(old_default) == "b60437f2c9c39d1c"


@pytest.fixture
def rms_feature():
    """A registered test feature: frame RMS in dB, ``[T, 1]``, with an attr; removed afterwards."""

    def rms(samples, cfg):
        n = grid.num_frames_for_samples(len(samples), cfg.fps)
        hop = grid.SAMPLE_RATE // cfg.fps
        x = np.pad(samples, (0, n * hop))[: n * hop].reshape(n, hop)
        return (20 * np.log10(np.sqrt((x**2).mean(1)) + 1e-5))[:, None].astype(np.float32), {
            "first_valid_frame": 2
        }

    feature = register(Feature("rms", {"floor": "db_floor"}, lambda cfg: 1, rms))
    yield feature
    del FEATURES["rms"]


def test_a_registered_feature_is_hashed_stored_and_summarised(tmp_path, rms_feature):
    with pytest.raises(ValueError, match="'rms' is already registered"):
        register(rms_feature)
    cfg = load_config(None, ["features.phones=false"])
    hashes = array_hashes(cfg.features, cfg.data)
    assert list(hashes) == ["mel", "egemaps", "phones", "rms", "targets", "phones_text"] and hashes["rms"]
    write_pair(tmp_path / "data", "train/a_0", 2.0)
    build_manifest(tmp_path / "data", tmp_path / "m.jsonl", cfg.data)
    (job,), _ = plan(load_manifest(tmp_path / "m.jsonl"), tmp_path / "s.zarr", cfg.features, cfg.data)
    record = extract_file(job)
    assert record.status == "ok" and record.computed == ["mel", "rms", "targets"]
    arrays = open_arrays(tmp_path / "s.zarr", "train__a_0")
    assert arrays["rms"].shape == (60, 1) and arrays["rms"].attrs["first_valid_frame"] == 2
    assert read_group_attrs(tmp_path / "s.zarr", "train__a_0")["hashes"]["rms"] == hashes["rms"]
    assert feature_stats([record])["rms"]["frames"] == 58  # rows before first_valid_frame left out
    (changed,), _ = plan(
        load_manifest(tmp_path / "m.jsonl"),
        tmp_path / "s.zarr",
        load_config(None, ["features.egemaps=false", "features.db_floor=-90"]).features,
        cfg.data,
    )
    assert changed.keep == ("targets",)  # mel and rms both read db_floor


def test_builtin_features_match_their_extractors():
    from koemorph.features.mel import log_mel

    cfg = load_config(None).features
    samples = tone(1.0)
    mel, attrs = registry.FEATURES["mel"].compute(samples, cfg)
    np.testing.assert_array_equal(mel, log_mel(samples, cfg))
    assert attrs == {} and [f.name for f in registry.enabled(cfg)] == ["mel", "phones"]
    both = load_config(None, ["features.egemaps=true"]).features
    assert [f.name for f in registry.enabled(both)] == ["mel", "egemaps", "phones"]
    assert [f.name for f in registry.enabled(load_config(None, ["features.phones=false"]).features)] == [
        "mel"
    ]


def _job(path):
    if path.name.startswith("bad"):
        from koemorph.io.audio import load_audio

        load_audio(path)  # raises AudioError naming the file
    if path.name.startswith("crash"):
        raise ZeroDivisionError("boom")
    if path.name.startswith("stop"):
        raise KeyboardInterrupt
    return FileRecord(path.stem, "train", "ok", 1.0)


def _failed(path, error, traceback, seconds):
    return FileRecord(path.stem, "train", "error", 0.5, error=error, traceback=traceback)


def test_run_jobs_turns_exceptions_into_records_and_keeps_finished_work_on_ctrl_c(tmp_path):
    for name in ("a.wav", "c.wav"):
        sf.write(tmp_path / name, tone(1.0), 16000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    jobs = [tmp_path / n for n in ("a.wav", "bad.wav", "crash.wav", "c.wav")]
    finished = []

    def finish(records):
        finished.append(list(records))
        return {"extra": 1}

    common = dict(
        failed=_failed, source=str, seconds=lambda p: 1.0, label="t", statuses=("ok", "error"), local=True
    )
    summary = run_jobs(jobs, _job, finish, done=[FileRecord("z", "train", "ok", 3600.0)], **common)
    assert summary == {"ok files": 3, "ok hours": 1.0006, "error files": 2, "error hours": 0.0003, "extra": 1}
    errors = {r.id: r for r in finished[-1] if r.status == "error"}
    assert errors["bad"].error.startswith(f"{tmp_path / 'bad.wav'}: cannot read audio header")
    assert errors["bad"].traceback is None and AudioError.__name__ not in errors["bad"].error
    assert errors["crash"].error == f"{tmp_path / 'crash.wav'}: ZeroDivisionError: boom"
    assert "ZeroDivisionError" in errors["crash"].traceback

    with pytest.raises(KeyboardInterrupt):
        run_jobs([jobs[0], tmp_path / "stop.wav", jobs[3]], _job, finish, done=[], **common)
    assert [r.id for r in finished[-1]] == ["a"]  # what finished before Ctrl-C was handed to finish


def test_a_repeated_id_is_refused_before_two_jobs_write_one_group(tmp_path):
    write_pair(tmp_path / "data", "train/a_0", 1.0)
    cfg = load_config(None)
    build_manifest(tmp_path / "data", tmp_path / "m.jsonl", cfg.data)
    entries = load_manifest(tmp_path / "m.jsonl")
    jobs, done = plan(entries * 2, tmp_path / "s.zarr", cfg.features, cfg.data)
    assert len(jobs) == 1 and [r.status for r in done] == ["error"]
    assert "id 'train__a_0' is already used by another manifest entry" in done[0].error
