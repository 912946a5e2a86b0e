"""Reading audio: any WAV/FLAC/OGG, returned as mono float32 at ``grid.SAMPLE_RATE``.

All failures raise :class:`koemorph.errors.AudioError` naming the file and the cause.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koemorph.errors import AudioError
from koemorph.grid import SAMPLE_RATE

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
MIN_SAMPLE_RATE = 4_000  # below this there is no speech band left to resample


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no decoding): native rate, channels, length."""

    path: str
    sample_rate: int
    channels: int
    frames: int  # samples per channel at the native rate
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate


def is_audio_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def audio_info(path: str | Path) -> AudioInfo:
    """Read the header of ``path``; AudioError if missing, unreadable or empty."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError variants
        raise AudioError(path, f"cannot read audio header ({_clean(exc)})") from None
    if info.frames <= 0:
        raise AudioError(path, "audio has no samples")
    _check_not_truncated(path, info)
    if info.samplerate < MIN_SAMPLE_RATE:
        raise AudioError(path, f"sample rate {info.samplerate} Hz is too low (need >= {MIN_SAMPLE_RATE})")
    return AudioInfo(
        str(path), int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype
    )


_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)  # streamed WAVs: the writer did not know the length


def _check_not_truncated(path: Path, info) -> None:
    """AudioError if a WAV header declares more audio data than the file holds (libsndfile notes the
    mismatch in its log and would decode only what is there)."""
    match = _DATA_SIZE.search(info.extra_info or "")
    if not match:
        return
    declared, held = int(match.group(1)), int(match.group(2))
    if declared in _UNKNOWN_SIZES or held >= declared:
        return
    declared_s = info.frames / info.samplerate * declared / max(held, 1)
    raise AudioError(
        path,
        f"file is truncated: its header declares {declared_s:.2f} s of audio "
        f"({declared} bytes), the file holds {info.frames / info.samplerate:.2f} s ({held} bytes)",
    )


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``: ``[N]`` samples in [-1, 1].

    Integer PCM is scaled by soundfile; multichannel audio is mixed down by averaging;
    other rates are resampled with soxr (high quality). Raises AudioError if the file is
    missing, corrupt, empty, or contains NaN/Inf.
    """
    import soundfile as sf

    audio_info(path)  # clear errors for missing / empty / headerless files
    try:
        data, native_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(path, f"cannot decode audio ({_clean(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "audio has no samples")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(path, f"audio contains {bad} NaN/Inf samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if native_rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, native_rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float samples as 16-bit PCM WAV, atomically (temp file, then rename)."""
    import soundfile as sf

    from koemorph.io.atomic import atomic_path

    samples = np.asarray(samples, dtype=np.float32)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def _clean(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
