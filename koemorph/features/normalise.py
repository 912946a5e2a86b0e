"""Feature normalisation shared by training (:mod:`koemorph.data.cache`) and rendering
(:mod:`koemorph.inference.render`).

One definition, so that what is rendered is what was trained. All arrays are on the grid of the
features' fps (row ``k`` at ``k / fps`` seconds), float32:

* mel ``[T, n_mels]`` dB -> ``(x - mean) / std`` per bin (train-split stats);
* eGeMAPS ``[T, 88]`` -> ``(x - mean) / std`` per functional, then rows before ``first_valid``
  (no complete openSMILE window yet: the raw rows are zeros) set to exactly 0;
* the mel pad (frames outside the file) is normalised digital silence,
  :func:`koemorph.model.windows.mel_pad_value` of the stats and ``features.db_floor``; eGeMAPS pads with 0.

``stats`` is the dict of ``<store>.stats.json`` (also kept in every checkpoint): ``stats["mel"]``
and optionally ``stats["egemaps"]``, each ``{"mean": [D], "std": [D]}``.
"""

from __future__ import annotations

import numpy as np

from koemorph.config import FeaturesConfig
from koemorph.model.windows import mel_pad_value


def _mean_std(stats: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    part = stats[name]
    return np.asarray(part["mean"], np.float32), np.asarray(part["std"], np.float32)


def normalise_mel(mel, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(mel - mean) / std``: ``[T, n_mels]`` float32 (``mean``/``std`` ``[n_mels]`` float32)."""
    return (np.asarray(mel, np.float32) - mean) / std


def normalise_egemaps(
    egemaps, mean: np.ndarray, std: np.ndarray, first_valid: int, start: int = 0
) -> np.ndarray:
    """``(x - mean) / std`` with file rows before ``first_valid`` set to 0: ``[n, 88]`` float32.

    ``egemaps`` holds file rows ``[start, start + n)`` (a slice of the file, or the whole file
    with ``start = 0``); ``first_valid`` is a file frame index.
    """
    x = (np.asarray(egemaps, np.float32) - mean) / std
    x[: max(0, int(first_valid) - int(start))] = 0.0
    return x


def first_valid_frame(n_frames: int, n_windows: int, features_cfg) -> int:
    """First grid frame that holds a complete eGeMAPS window (``n_frames`` if none does).

    ``extract`` stores it as the ``first_valid_frame`` attribute of ``egemaps``: the first frame
    whose causal sample-and-hold index is >= 0.
    """
    from koemorph.features.egemaps import window_index_for_frames

    held = window_index_for_frames(n_frames, n_windows, features_cfg) >= 0
    return int(held.argmax()) if held.any() else int(n_frames)


def normalise_features(
    mel, egemaps, first_valid: int, stats: dict, features_cfg: FeaturesConfig, phones=None, from_text=False
) -> dict:
    """Normalise one whole file's features exactly as training does.

    ``mel`` ``[T, n_mels]`` dB, ``egemaps`` ``[T, 88]`` raw or None, ``first_valid`` the file's first
    valid eGeMAPS frame, ``stats`` as in the module docstring, ``features_cfg`` the
    ``FeaturesConfig`` (only ``db_floor``, ``egemaps``, ``phones`` and ``phones_text`` are read),
    ``phones`` ``[T, 40]`` phone shares (needed when ``features_cfg.phones``; kept as they are),
    ``from_text``: they are a transcript's (the source column with ``features_cfg.phones_text``).
    Returns ``{"mel": [T, D], "egemaps": [T, 88] or None, "mel_pad": [D]}``, float32: the model's
    frame input, ``D = n_mels`` + :func:`koemorph.features.phones.input_columns` (the phone columns
    with phones, padded with the silence row and source 0).
    eGeMAPS is None when ``egemaps`` is None, the config switches it off, or ``stats`` has none.
    """
    from koemorph.features.phones import frame_columns

    mel_mean, mel_std = _mean_std(stats, "mel")
    out = {
        "mel": normalise_mel(mel, mel_mean, mel_std),
        "egemaps": None,
        "mel_pad": frame_pad(stats, features_cfg),
    }
    if egemaps is not None and features_cfg.egemaps and "egemaps" in stats:
        ege_mean, ege_std = _mean_std(stats, "egemaps")
        out["egemaps"] = normalise_egemaps(egemaps, ege_mean, ege_std, first_valid)
    if features_cfg.phones:
        if phones is None or len(phones) != len(mel):
            raise ValueError(f"the model reads phones: pass [{len(mel)}, 40] phone shares")
        columns = frame_columns(phones, features_cfg, from_text)
        out["mel"] = np.concatenate([out["mel"], columns], axis=1)
    return out


def frame_pad(stats: dict, features_cfg: FeaturesConfig) -> np.ndarray:
    """The model's frame-input row outside the audio, ``[n_mels (+ phone columns)]`` float32: normalised
    digital silence (``features.db_floor``), then with ``features_cfg.phones`` the phones' silence row
    (and source 0 with ``features_cfg.phones_text``)."""
    from koemorph.features.phones import frame_columns, silence_row

    mel_mean, mel_std = _mean_std(stats, "mel")
    pad = mel_pad_value(mel_mean, mel_std, float(features_cfg.db_floor))
    if not features_cfg.phones:
        return pad
    return np.concatenate([pad, frame_columns(silence_row()[None], features_cfg)[0]]).astype(np.float32)
