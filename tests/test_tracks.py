"""Tracks: readers, writers, validation errors, resampling on real timestamps, duration check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from koemorph.blendshapes import ALPHABETICAL_NAMES, ARKIT_NAMES, INDEX
from koemorph.errors import TrackError
from koemorph.grid import num_frames
from koemorph.io.tracks import (
    Track,
    check_duration,
    clean_floats,
    estimate_source_fps,
    load_track_for_audio,
    read_track,
    resample_to_grid,
    write_beat_json,
    write_jsonl_track,
    write_livelink_csv,
)
from koemorph.io.tracks.livelink_csv import (
    BLENDSHAPE_COLUMNS,
    HEADER,
    ROTATION_COLUMNS,
    infer_timecode_fps,
    parse_timecode,
)

JAW, CLOSE, ML, MR = INDEX["jawOpen"], INDEX["mouthClose"], INDEX["mouthLeft"], INDEX["mouthRight"]
DOC_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,EyeSquintLeft,"
    "EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,EyeSquintRight,EyeWideRight,"
    "JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,MouthSmileLeft,"
    "MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,MouthStretchLeft,MouthStretchRight,"
    "MouthRollLower,MouthRollUpper,MouthShrugLower,MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,"
    "MouthLowerDownRight,MouthUpperUpLeft,MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,"
    "BrowOuterUpRight,CheekPuff,CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,"
    "HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll"
)


def channel_values(n: int) -> np.ndarray:
    """``[n, 52]``: channel i holds (i + 1) / 100 plus a per-frame ramp, so every channel is distinct."""
    return (np.arange(1, 53) / 100.0)[None, :] + np.linspace(0, 0.3, n)[:, None]


def app_csv_text(values, count_col="BlendshapeCount", rotations=None, start="19:55:16:26.689", step=1.0015):
    """A Live Link CSV as the app writes it: PascalCase, app column order, 60 fps timecodes from ``start``
    advancing ``step`` frames per row. ``values`` is in Apple order and is written by name."""
    h, m, s, ff, frac = parse_timecode(start)
    milli = round((ff + frac) * 1000)  # in 1/1000 frame
    base = h * 3600 + m * 60 + s
    header = ["Timecode", count_col, *BLENDSHAPE_COLUMNS, *ROTATION_COLUMNS]
    lines = [",".join(header)]
    for k, row in enumerate(values):
        total = milli + round(k * step * 1000)
        frame, sub = divmod(total, 1000)
        sec, ff_k = divmod(frame, 60)
        t = base + sec
        tc = f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}:{ff_k:02d}.{sub:03d}"
        bs = [f"{row[INDEX[name[0].lower() + name[1:]]]:.6f}" for name in BLENDSHAPE_COLUMNS]
        rot = [f"{r:.6f}" for r in (rotations[k] if rotations is not None else np.full(9, -0.0427))]
        lines.append(",".join([tc, "61", *bs, *rot]))
    return "\n".join(lines) + "\n"


def jsonl_text(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def good_rows(n=5, fps=30):
    return [{"timestamp": k / fps, "blendshapes": [0.5] * 52} for k in range(n)]


def expect_error(path, *parts, line=None):
    with pytest.raises(TrackError) as info:
        read_track(path)
    message = str(info.value)
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}:" in message and info.value.line == line
    for part in parts:
        assert part in message
    return info.value


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "writer,suffix", [(write_jsonl_track, ".jsonl"), (write_livelink_csv, ".csv"), (write_beat_json, ".json")]
)
@pytest.mark.parametrize("fps", [30, 60])
def test_round_trip(tmp_path, writer, suffix, fps):
    values = np.random.default_rng(fps).random((90, 52))
    values[0, :3] = [0.0, 1.0, -1e-9]
    path = tmp_path / f"t{suffix}"
    writer(path, values, fps)
    track = read_track(path)
    assert track.values.shape == (90, 52) and track.values.dtype == np.float32
    np.testing.assert_allclose(track.values, np.clip(values, 0, 1), atol=1e-6)
    np.testing.assert_allclose(track.times, np.arange(90) / fps, atol=1e-6)
    assert track.source_fps == fps and track.present.all()


def test_jsonl_written_in_blocks_is_one_document(tmp_path, monkeypatch):
    import koemorph.io.tracks.jsonl as track_formats

    values = np.random.default_rng(0).random((23, 52))
    write_jsonl_track(tmp_path / "whole.jsonl", values, 30)
    monkeypatch.setattr(track_formats, "WRITE_BLOCK", 5)  # 5 blocks, the last one short
    write_jsonl_track(tmp_path / "blocks.jsonl", values, 30)
    text = (tmp_path / "blocks.jsonl").read_text()
    assert text == (tmp_path / "whole.jsonl").read_text() and text.count("\n") == 23
    np.testing.assert_allclose(read_track(tmp_path / "blocks.jsonl").times, np.arange(23) / 30, atol=1e-6)


def test_writers_never_emit_negative_zero_or_nan(tmp_path):
    values = np.zeros((40, 52))
    rotations = np.full((40, 9), -1e-9)
    write_livelink_csv(tmp_path / "a.csv", values, 30, rotations=rotations)
    write_jsonl_track(tmp_path / "a.jsonl", values - 1e-9, 30)
    write_beat_json(tmp_path / "a.json", values - 1e-9, 30)
    for name in ("a.csv", "a.jsonl", "a.json"):
        text = (tmp_path / name).read_text()
        tokens = text.replace("[", ",").replace("]", ",").replace("\n", ",").replace(" ", "").split(",")
        assert "-0.0" not in tokens and "NaN" not in text and "Infinity" not in text
    assert clean_floats([-0.0, -1e-9, 0.1234567]) == [0.0, 0.0, 0.123457]
    assert math.copysign(1, clean_floats([-0.0])[0]) == 1
    with pytest.raises(ValueError):
        clean_floats([1.0, float("nan")])
    with pytest.raises(ValueError):
        write_jsonl_track(tmp_path / "b.jsonl", np.full((2, 52), np.inf), 30)
    assert not (tmp_path / "b.jsonl").exists()


def test_livelink_writer_header_and_timecodes(tmp_path):
    assert ",".join(HEADER) == DOC_HEADER
    write_livelink_csv(tmp_path / "a.csv", np.zeros((65, 52)), 60)
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0] == DOC_HEADER
    assert lines[1].startswith("00:00:00:00.000,61,") and lines[61].startswith("00:00:01:00.000,61,")
    assert len(lines[1].split(",")) == 63


def test_beat_writer_layout(tmp_path):
    values = channel_values(3)
    write_beat_json(tmp_path / "a.json", values, 60)
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["names"] == list(ALPHABETICAL_NAMES)
    assert doc["metadata"] == {"fps": 60, "frame_count": 3, "order": "alphabetical"}
    assert doc["frames"][1]["time"] == round(1 / 60, 6)
    assert doc["frames"][0]["weights"][0] == pytest.approx(values[0, INDEX["browDownLeft"]])


# --- JSONL errors ----------------------------------------------------------------------------


def test_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    rows = good_rows()
    p.write_text(jsonl_text(rows[:2]) + "{not json\n")
    expect_error(p, "bad JSON", line=3)
    p.write_text(jsonl_text(rows[:1]) + jsonl_text([{"timestamp": 0.1}]))
    expect_error(p, "missing key", "blendshapes", line=2)
    p.write_text(jsonl_text([{"timestamp": 0.0, "blendshapes": [0.1] * 51}]))
    expect_error(p, "expected 52 blendshape values, got 51", line=1)
    nan_row = '{"timestamp": 0.2, "blendshapes": [' + ",".join(["NaN"] * 52) + "]}\n"
    p.write_text(jsonl_text(rows[:3]) + nan_row)
    expect_error(p, "eyeBlinkLeft is nan", line=4)
    inf_row = '{"timestamp": Infinity, "blendshapes": [' + ",".join(["0"] * 52) + "]}\n"
    p.write_text(jsonl_text(rows[:1]) + inf_row)
    expect_error(p, "timestamp is inf", line=2)
    bad = [dict(r) for r in rows]
    bad[2]["blendshapes"] = [0.5] * 17 + [1.5] + [0.5] * 34
    p.write_text(jsonl_text(bad))
    expect_error(p, "jawOpen = 1.5 is outside [0, 1]", line=3)
    bad = [dict(r) for r in rows]
    bad[3]["timestamp"] = bad[2]["timestamp"]
    p.write_text("\n" + jsonl_text(bad))  # a leading blank line shifts the line numbers
    expect_error(p, "does not increase", line=5)
    p.write_text(jsonl_text([{"timestamp": "0", "blendshapes": [0.1] * 52}]))
    expect_error(p, "not a number", line=1)
    p.write_text("")
    expect_error(p, "empty")
    p.write_text("\n\n")
    expect_error(p, "empty")
    expect_error(tmp_path / "missing.jsonl", "not found")


def test_jsonl_tolerance_clips_tiny_overshoot(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(jsonl_text([{"timestamp": 0.0333, "blendshapes": [1.0005] + [-0.0005] * 51}]))
    track = read_track(p)
    assert track.values[0, 0] == 1.0 and track.values[0, 1] == 0.0
    assert track.times[0] == 0.0333 and track.source_fps is None


# --- Live Link CSV ---------------------------------------------------------------------------


def test_livelink_csv_maps_by_name_and_times(tmp_path):
    n = 150
    values = channel_values(n)
    rotations = np.tile(np.linspace(-0.5, 0.5, 9), (n, 1))
    p = tmp_path / "MySlate_7_iPhone.csv"
    p.write_text(app_csv_text(values, rotations=rotations))
    track = read_track(p)
    np.testing.assert_allclose(track.values, values, atol=1e-6)
    assert track.values[0, INDEX["jawLeft"]] == pytest.approx(0.16)  # written in column 17, JawRight in 16
    assert track.values[0, JAW] == pytest.approx(0.18)
    assert track.values[0, ML] == pytest.approx(0.22) and track.values[0, MR] == pytest.approx(0.23)
    np.testing.assert_allclose(track.extras["rotations"], rotations, atol=1e-6)
    assert track.extras["rotations"].min() < 0  # never clamped
    assert track.times[0] == 0.0 and track.source_fps == 60
    np.testing.assert_allclose(track.times, np.arange(n) * 1.0015 / 60, atol=2e-5)

    swapped = read_track(p, swap_mouth_lr=True)
    np.testing.assert_allclose(swapped.values[:, ML], values[:, MR], atol=1e-6)
    np.testing.assert_allclose(swapped.values[:, MR], values[:, ML], atol=1e-6)
    others = np.delete(swapped.values, [ML, MR], 1)
    np.testing.assert_allclose(others, np.delete(values, [ML, MR], 1), atol=1e-6)


def test_livelink_csv_lowercase_header_and_no_rotations(tmp_path):
    text = app_csv_text(channel_values(40), count_col="BlendShapeCount").splitlines()
    rows = [line.split(",")[:54] for line in text]  # drop the 9 rotation columns
    rows[0] = [c.lower() for c in rows[0]]
    p = tmp_path / "a.csv"
    p.write_text("\n".join(",".join(r) for r in rows) + "\n")
    track = read_track(p)
    assert "rotations" not in track.extras
    np.testing.assert_allclose(track.values, channel_values(40), atol=1e-6)


def test_livelink_csv_errors(tmp_path):
    good = app_csv_text(channel_values(80)).splitlines()
    p = tmp_path / "take.csv"

    def write(lines):
        p.write_text("\n".join(lines) + "\n")

    header = good[0].split(",")
    write([",".join(c for c in header if c not in ("JawOpen", "TongueOut"))] + good[1:])
    expect_error(p, "missing blendshape column(s) ['JawOpen', 'TongueOut']", line=1)
    row = good[3].split(",")
    row[header.index("MouthClose")] = "1.5"
    write(good[:3] + [",".join(row)] + good[4:])
    expect_error(p, "mouthClose = 1.5 is outside [0, 1]", line=4)
    row[header.index("MouthClose")] = "nan"
    write(good[:3] + [",".join(row)] + good[4:])
    expect_error(p, "mouthClose is nan", line=4)
    row[header.index("MouthClose")] = "abc"
    write(good[:3] + [",".join(row)] + good[4:])
    expect_error(p, "MouthClose is not a number", line=4)
    write(good[:5] + ["99:xx:00:00.000" + good[5][15:]] + good[6:])
    expect_error(p, "bad timecode", line=6)
    write(good[:5] + [good[5] + ",0.1"] + good[6:])
    expect_error(p, "expected 63 columns, got 64", line=6)
    write(good[:1] + good[2:3] + good[1:2] + good[3:])
    expect_error(p, "does not increase", line=3)


def test_timecode_rate_inference(tmp_path):
    assert parse_timecode("19:55:16:26.689") == (19, 55, 16, 26, 0.689)
    whole = np.array([10, 10, 11, 11])
    assert infer_timecode_fps(whole, np.array([28, 29, 0, 1])) == 30
    assert infer_timecode_fps(whole, np.array([58, 59, 0, 1])) == 60
    assert infer_timecode_fps(np.array([10, 10]), np.array([31, 32])) == 60
    assert infer_timecode_fps(np.array([10, 10]), np.array([3, 4])) is None
    # a 30 fps file crossing a second: FF/30, not FF/60
    write_livelink_csv(tmp_path / "a.csv", np.zeros((45, 52)), 30)
    track = read_track(tmp_path / "a.csv")
    assert track.source_fps == 30 and track.times[-1] == pytest.approx(44 / 30)
    # shorter than a second: ambiguous unless the rate is given
    write_livelink_csv(tmp_path / "b.csv", np.zeros((20, 52)), 60)
    expect_error(tmp_path / "b.csv", "cannot infer the timecode rate")
    assert read_track(tmp_path / "b.csv", fps=60).times[-1] == pytest.approx(19 / 60)
    write_livelink_csv(tmp_path / "c.csv", np.zeros((50, 52)), 60)
    with pytest.raises(TrackError, match="frame number 30 is impossible at 30 fps"):
        read_track(tmp_path / "c.csv", fps=30)


# --- BEAT JSON -------------------------------------------------------------------------------


def test_beat_json_51_names_shuffled(tmp_path):
    names = [n for n in ALPHABETICAL_NAMES if n != "tongueOut"]
    order = np.random.default_rng(1).permutation(len(names))
    names = [names[i] for i in order]
    values = channel_values(4)
    frames = [{"time": k / 60, "weights": [values[k, INDEX[n]] for n in names]} for k in range(4)]
    p = tmp_path / "clip.json"
    p.write_text(json.dumps({"names": names, "frames": frames}))
    track = read_track(p)
    assert not track.present[INDEX["tongueOut"]] and track.present.sum() == 51
    assert (track.values[:, INDEX["tongueOut"]] == 0).all()
    keep = [i for i in range(52) if ARKIT_NAMES[i] != "tongueOut"]
    np.testing.assert_allclose(track.values[:, keep], values[:, keep], atol=1e-6)


def test_beat_json_errors(tmp_path):
    p = tmp_path / "clip.json"
    frames = [{"time": k / 60, "weights": [0.1] * 52} for k in range(5)]
    p.write_text(json.dumps({"names": list(ALPHABETICAL_NAMES[:51]) + ["tongueOutt"], "frames": frames}))
    expect_error(p, "unknown blendshape name(s) ['tongueOutt']")
    frames[3]["weights"] = [0.1] * 50
    p.write_text(json.dumps({"names": list(ALPHABETICAL_NAMES), "frames": frames}))
    expect_error(p, "frame 3: expected 52 weights (one per name), got 50")
    frames[3]["weights"] = [0.1] * 51 + [2.0]
    p.write_text(json.dumps({"names": list(ALPHABETICAL_NAMES), "frames": frames}))
    expect_error(p, "frame 3: tongueOut = 2 is outside [0, 1]")
    p.write_text('{"names": [\n"jawOpen",\n}')
    expect_error(p, "bad JSON", line=3)
    p.write_text(json.dumps({"names": ["jawOpen", "JawOpen"], "frames": frames}))
    expect_error(p, "repeated blendshape name(s) ['jawOpen']")


# --- resampling and duration ------------------------------------------------------------------


def make_track(times, values) -> Track:
    return Track(
        "mem",
        np.asarray(times, float),
        np.asarray(values, np.float32),
        estimate_source_fps(np.asarray(times, float)),
    )


def test_resample_60fps_with_offset_onto_30fps_grid():
    times = 0.5 + np.arange(181) / 60  # 0.5 .. 3.5 s
    values = np.zeros((181, 52))
    values[:, JAW] = 0.1 + 0.2 * times  # ramp in time
    values[:, CLOSE] = times >= 2.0  # step at 2.0 s
    out = resample_to_grid(make_track(times, values), 120, 30)
    grid = np.arange(120) / 30
    expected = 0.1 + 0.2 * np.clip(grid, 0.5, 3.5)  # held outside the span
    np.testing.assert_allclose(out[:, JAW], expected, atol=1e-6)
    assert out[59, CLOSE] == 0.0 and out[60, CLOSE] == 1.0  # 1.9667 s vs 2.0 s
    assert out.shape == (120, 52) and out.dtype == np.float32


def test_resample_30fps_onto_60fps_grid_uses_timestamps():
    times = 1 / 30 + np.arange(30) / 30  # first stamp at 0.0333, not 0
    values = np.zeros((30, 52))
    values[:, JAW] = np.arange(30) % 2  # 0, 1, 0, 1 ...
    out = resample_to_grid(make_track(times, values), 62, 60)
    assert out[0, JAW] == 0 and out[2, JAW] == 0 and out[4, JAW] == 1  # 0.0667 s is frame 1 (=1)
    assert out[3, JAW] == pytest.approx(0.5)  # half-way between 0.0333 (0) and 0.0667 (1)
    assert out[61, JAW] == 1  # held after the last stamp
    single = resample_to_grid(make_track([0.0], values[1:2]), 3, 30)
    assert single.shape == (3, 52) and (single[:, JAW] == 1).all()


def test_duration_check_and_load_for_audio(tmp_path):
    write_jsonl_track(tmp_path / "short.jsonl", np.zeros((204, 52)), 30)  # spans 6.8 s
    track = read_track(tmp_path / "short.jsonl")
    with pytest.raises(TrackError, match=r"track is 3\.20 s shorter than the audio \(10\.00 s\)"):
        check_duration(track, 10.0, 0.5)
    check_duration(track, 7.2, 0.5)
    with pytest.raises(TrackError, match="longer"):
        check_duration(track, 6.0, 0.5)

    values = np.zeros((600, 52))
    values[:, JAW] = np.linspace(0, 1, 600)
    write_jsonl_track(tmp_path / "a.jsonl", values, 60)  # 10 s at 60 fps
    out = load_track_for_audio(tmp_path / "a.jsonl", 10.0, 30, tolerance_s=0.5)
    assert out.shape == (num_frames(10.0, 30), 52) == (300, 52)
    np.testing.assert_allclose(out[:, JAW], values[::2, JAW], atol=1e-5)
    with pytest.raises(TrackError, match="shorter"):
        load_track_for_audio(tmp_path / "a.jsonl", 12.0, 30, tolerance_s=0.5)


def test_unknown_suffix(tmp_path):
    expect_error(tmp_path / "a.txt", "unknown track format")


def test_one_registry_reads_and_writes_every_format(tmp_path):
    from koemorph.io.tracks import FORMATS, TRACK_SUFFIXES, format_named, format_of, preferred

    values = np.random.default_rng(1).random((45, 52))  # 1.5 s: the CSV timecode rate is inferable
    assert TRACK_SUFFIXES == (".jsonl", ".csv", ".json")  # preference order
    for fmt in FORMATS:
        path = tmp_path / f"x{fmt.suffix}"
        format_named(fmt.name).write(path, values, 30)
        assert format_of(path) is fmt
        np.testing.assert_allclose(read_track(path).values, values, atol=1e-6)
    for name in (
        "a.phones.json",
        "corpus.json",
        "m.problems.jsonl",
        "s.results.jsonl",
        "render_manifest.jsonl",
    ):
        assert format_of(tmp_path / name) is None
    assert format_of(tmp_path / "a.wav") is None
    assert [p.suffix for p in preferred([tmp_path / "a.json", tmp_path / "a.jsonl", tmp_path / "a.CSV"])] == [
        ".jsonl",
        ".CSV",
        ".json",
    ]
    with pytest.raises(ValueError, match="unknown format 'fbx'"):
        format_named("fbx")


def test_one_walker_skips_hidden_and_excluded_in_a_stable_order(tmp_path):
    from koemorph.io.walk import files_under

    for rel in ("b/x.wav", "a/y.wav", "a b/z.wav", ".git/h", "a/.hidden.wav", "out/r.jsonl", "c.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    rel = [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path, exclude=tmp_path / "out")]
    assert rel == ["a b/z.wav", "a/y.wav", "b/x.wav", "c.wav"]
    assert "out/r.jsonl" in [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path)]
