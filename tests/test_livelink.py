"""Live Link Face take import: .mov audio via PyAV + CSV -> 16 kHz WAV + grid JSONL."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from koemorph.blendshapes import INDEX
from koemorph.data.livelink import decode_mov_audio, find_takes, import_takes
from koemorph.errors import AudioError
from koemorph.grid import num_frames_for_samples
from koemorph.io.tracks import read_track, write_livelink_csv

av = pytest.importorskip("av")
JAW = INDEX["jawOpen"]


def write_mov(path, seconds=2.0, rate=48000, freq=440.0, codec="aac"):
    """An audio-only .mov: a stereo sine (left and right identical), amplitude 0.3."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        fmt = "fltp" if codec == "aac" else "s16p"
        for start in range(0, n, 1024):
            chunk = wave[start : start + 1024]
            data = np.stack([chunk, chunk])
            if fmt == "s16p":
                data = (data * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def make_take(folder, seconds=2.0, fps=60, codec="aac"):
    """A take folder: CSV with a jawOpen ramp 0..1 over the take, a .mov, and files to ignore."""
    folder.mkdir(parents=True)
    n = int(seconds * fps)
    values = np.zeros((n, 52))
    values[:, JAW] = np.linspace(0, 1, n)
    write_livelink_csv(folder / f"{folder.name}_iPhone.csv", values, fps)
    (folder / f"{folder.name}_iPhone_frame_log.csv").write_text("garbage,not,a,track\n")
    (folder / f"{folder.name}_iPhone.csv:Zone.Identifier").write_text("[ZoneTransfer]\n")
    (folder / "take.json").write_text("{}")
    write_mov(folder / f"{folder.name}_iPhone.mov", seconds, codec=codec)
    return values


def test_decode_mov_audio_mixes_and_resamples(tmp_path):
    write_mov(tmp_path / "a.mov", seconds=1.0, codec="pcm_s16le")
    samples = decode_mov_audio(tmp_path / "a.mov")
    assert samples.dtype == np.float32 and abs(len(samples) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) == pytest.approx(440, abs=1)  # 1 s -> 1 Hz bins
    assert np.sqrt(np.mean(samples[1000:-1000] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)


def test_video_only_mov_is_an_audio_error(tmp_path):
    with av.open(str(tmp_path / "v.mov"), "w", format="mov") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in stream.encode(black):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioError, match="v.mov: no audio stream"):
        decode_mov_audio(tmp_path / "v.mov")


def test_import_takes_good_and_bad(tmp_path):
    takes, out = tmp_path / "takes", tmp_path / "out"
    ramp = make_take(takes / "day1" / "Slate_1")
    make_take(takes / "day1" / "Slate_2", seconds=1.5, fps=30, codec="pcm_s16le")
    corrupt = takes / "day2" / "Slate_3"
    make_take(corrupt)
    mov = next(corrupt.glob("*.mov"))
    mov.write_bytes(b"\x00\x00\x00\x18ftypqt  " + bytes(range(256)) * 8)
    no_mov = takes / "day2" / "Slate_4"
    make_take(no_mov)
    next(no_mov.glob("*.mov")).unlink()

    assert [f.name for f in find_takes(takes)] == ["Slate_1", "Slate_2", "Slate_3", "Slate_4"]
    records = {r["take"]: r for r in import_takes(takes, out)}
    assert [records[k]["status"] for k in sorted(records)] == ["ok", "ok", "error", "error"]
    assert str(mov) in records["Slate_3"]["error"] and "cannot decode audio" in records["Slate_3"]["error"]
    assert "found 0" in records["Slate_4"]["error"]
    written = sorted(p.name for p in out.iterdir())
    assert written == ["Slate_1.jsonl", "Slate_1.wav", "Slate_2.jsonl", "Slate_2.wav"]

    info = sf.info(str(out / "Slate_1.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert abs(info.duration - 2.0) < 0.02
    track = read_track(out / "Slate_1.jsonl")
    assert track.source_fps == 60 and records["Slate_1"]["fps"] == 60
    assert track.n_frames == records["Slate_1"]["frames"] == num_frames_for_samples(info.frames, 60)
    np.testing.assert_allclose(track.values[: len(ramp), JAW], ramp[:, JAW], atol=1e-5)  # same grid
    assert records["Slate_2"]["fps"] == 30 and records["Slate_2"]["frames"] == 45


def test_import_swap_and_duration_mismatch(tmp_path):
    take = tmp_path / "takes" / "T"
    make_take(take)
    csv = next(p for p in take.glob("*.csv") if "frame_log" not in p.name)
    values = np.zeros((120, 52))
    values[:, INDEX["mouthLeft"]] = 0.7
    write_livelink_csv(csv, values, 60)
    (rec,) = import_takes(tmp_path / "takes", tmp_path / "out", swap_mouth_lr=True)
    track = read_track(rec["jsonl"])
    np.testing.assert_allclose(track.values[:, INDEX["mouthRight"]], 0.7, atol=1e-6)
    assert (track.values[:, INDEX["mouthLeft"]] == 0).all()

    write_livelink_csv(csv, np.zeros((300, 52)), 60)  # 5 s of animation for 2 s of audio
    (rec,) = import_takes(tmp_path / "takes", tmp_path / "out2")
    assert rec["status"] == "error" and "longer than the audio" in rec["error"]
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_cli_import_livelink(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    make_take(tmp_path / "takes" / "A")
    (tmp_path / "takes" / "B").mkdir()
    (tmp_path / "takes" / "B" / "B.mov").write_bytes(b"not a movie")
    result = CliRunner().invoke(
        app,
        [
            "import-livelink",
            str(tmp_path / "takes"),
            str(tmp_path / "out"),
            "--params",
            str(tmp_path / "none.yaml"),
        ],
    )
    assert result.exit_code == 1
    assert (tmp_path / "out" / "A.wav").is_file() and (tmp_path / "out" / "A.jsonl").is_file()
    assert not (tmp_path / "out" / "B.wav").exists()
