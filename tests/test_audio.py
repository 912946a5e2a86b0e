import numpy as np
import pytest
import soundfile as sf

from koemorph.errors import AudioError
from koemorph.io import audio


def test_resamples_and_mixes_down(make_wav):
    path = make_wav("stereo_44k.wav", seconds=2.0, sr=44_100, channels=2)
    x = audio.load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 32_000) <= 1
    info = audio.audio_info(path)
    assert (info.sample_rate, info.channels) == (44_100, 2)
    assert info.duration == pytest.approx(2.0)


@pytest.mark.parametrize(
    "name,subtype", [("a.flac", "PCM_24"), ("a.ogg", "VORBIS"), ("f.wav", "FLOAT"), ("i32.wav", "PCM_32")]
)
def test_formats(make_wav, name, subtype):
    x = audio.load_audio(make_wav(name, seconds=1.0, sr=22_050, subtype=subtype))
    assert abs(len(x) - 16_000) <= 1
    assert 0.2 < np.abs(x).max() < 0.5  # integer PCM scaled to [-1, 1]


def test_bad_files_raise_one_clear_error(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00not a wave file at all" * 10)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(1000, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros(0, dtype=np.float32), 16_000)
    cases = {
        empty: "empty",
        junk: "cannot read",
        nan: "NaN",
        header_only: "no samples",
        tmp_path / "missing.wav": "not found",
    }
    for path, cause in cases.items():
        with pytest.raises(AudioError, match=cause) as info:
            audio.load_audio(path)
        assert str(path) in str(info.value)


def test_sha256_and_atomic_write(tmp_path):
    path = tmp_path / "out" / "x.wav"
    audio.write_wav(path, np.zeros(1600, dtype=np.float32))
    assert audio.load_audio(path).shape == (1600,)
    assert len(audio.sha256_file(path)) == 64
    assert [p.name for p in path.parent.iterdir()] == ["x.wav"]  # no temp file left


def test_a_truncated_wav_is_an_error_not_a_shorter_file(make_wav):
    path = make_wav("cut.wav", seconds=3.0)
    data = path.read_bytes()
    path.write_bytes(data[: 44 + (len(data) - 44) // 2])  # header still declares 3 s
    for read in (audio.load_audio, audio.audio_info):
        with pytest.raises(
            AudioError, match=r"cut\.wav: file is truncated: .*declares 3\.00 s.*holds 1\.50 s"
        ):
            read(path)
    whole = make_wav("whole.wav", seconds=3.0)
    assert audio.audio_info(whole).duration == pytest.approx(3.0)
