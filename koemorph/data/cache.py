"""Normalised per-file arrays read from the feature store, for training and baselines.

Training reads only what ``koemorph extract`` wrote (never audio):

* the Zarr store ``S`` (one group per file: ``mel`` [T, 80] dB, ``egemaps`` [T, 88], ``phones`` [T, 40]
  phone shares, ``targets`` [T, 52]),
* its results manifest (:func:`koemorph.data.store.read_results`: ids, splits, frame counts, config hashes),
* its stats (:func:`koemorph.data.store.read_stats`: train-split mean/std of mel and eGeMAPS, the feature
  config).

All arrays are on the store's frame grid: row ``k`` is at ``k / fps`` seconds. Normalised mel is
``(x - mean) / std`` per bin; eGeMAPS likewise, with the rows before the group's
``first_valid_frame`` (no complete openSMILE window yet) set to 0 (:mod:`koemorph.features.normalise`, shared
with ``koemorph render``). Outside a file the mel is
padded with the normalised silence floor (``features.db_floor``), eGeMAPS and targets with 0.
With phones, the ``mel`` this returns is the model's frame input: the normalised mel bins, then the
40 phone shares as stored (``[T, n_mels + 40]``, padded with the silence row). With ``use_text``
(``features.phones_text``) a source column follows (0, also in the pad), and ``text`` is the same
input with the stored ``phones_text`` (the phones renamed with the file's transcript) and source 1,
for the files that have them (:meth:`FeatureCache.has_text`).

Whole files are loaded into memory on first use, per process (after a DataLoader fork each
worker loads what it touches; Zarr 3 resets its IO loop after fork). With
``in_memory=False`` every block is sliced from the Zarr arrays instead (only the chunks needed).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koemorph.data.store import FileRecord, damaged, open_arrays, read_results, read_stats
from koemorph.errors import InputError
from koemorph.features.normalise import normalise_egemaps, normalise_mel
from koemorph.features.phones import NUM_PHONES, silence_row
from koemorph.io.digest import short_hash
from koemorph.model.windows import mel_pad_value, window


@dataclass(frozen=True)
class FileInfo:
    id: str
    split: str
    num_frames: int


class FeatureCache:
    """Normalised features and targets of the files in one store.

    ``fps``, ``n_mels``, ``n_egemaps`` (0 when eGeMAPS is absent or switched off), ``n_phones`` (40 with
    ``use_phones``, else 0), ``mel_pad`` ([n_mels] float32, the normalised ``db_floor``) and
    ``frame_pad`` ([n_mels + n_phones]: ``mel_pad``, then the phones' silence row) describe every
    array this returns. ``use_phones`` on a store without phones is an :class:`InputError`.
    """

    def __init__(
        self,
        store: str | Path,
        use_egemaps: bool = True,
        in_memory: bool = True,
        use_phones: bool = False,
        use_text: bool = False,
    ):
        self.store = Path(store)
        self.records: list[FileRecord] = read_results(self.store)
        self.stats = read_stats(self.store)
        self.features = dict(self.stats.get("features", {}))
        fpss = {r.fps for r in self.records}
        if len(fpss) != 1 or None in fpss:
            raise ValueError(f"{self.store}: files disagree on the frame rate ({sorted(map(str, fpss))})")
        self.fps = int(fpss.pop())
        if "mel" not in self.stats:
            raise ValueError(f"{self.store}: no mel statistics (no train-split files were extracted)")
        self.mel_mean = np.asarray(self.stats["mel"]["mean"], np.float32)
        self.mel_std = np.asarray(self.stats["mel"]["std"], np.float32)
        self.n_mels = len(self.mel_mean)
        db_floor = float(self.features.get("db_floor", -100.0))
        self.mel_pad = mel_pad_value(self.mel_mean, self.mel_std, db_floor)  # [n_mels] normalised silence
        has_ege = "egemaps" in self.stats and all("egemaps" in (r.arrays or ()) for r in self.records)
        self.use_egemaps = bool(use_egemaps and has_ege)
        self.n_egemaps = len(self.stats["egemaps"]["mean"]) if self.use_egemaps else 0
        if self.use_egemaps:
            self.ege_mean = np.asarray(self.stats["egemaps"]["mean"], np.float32)
            self.ege_std = np.asarray(self.stats["egemaps"]["std"], np.float32)
        self._init_phones(use_phones, use_text)
        self.files = {r.id: FileInfo(r.id, r.split, int(r.num_frames)) for r in self.records}
        self._with_text = {r.id for r in self.records if "phones_text" in (r.arrays or ())}
        self._check_groups()
        self.in_memory = in_memory
        self._loaded: dict[str, dict] = {}
        self._handles: dict[str, dict] = {}
        self._pid = os.getpid()

    @classmethod
    def for_features(cls, store: str | Path, features, in_memory: bool = True) -> FeatureCache:
        """The cache of ``store`` giving the frame input a ``FeaturesConfig`` ``features`` asks for (as
        a model built from it reads: eGeMAPS, phones and their source column as configured)."""
        return cls(
            store,
            use_egemaps=features.egemaps,
            in_memory=in_memory,
            use_phones=features.phones,
            use_text=features.phones_text,
        )

    def _init_phones(self, use_phones: bool, use_text: bool) -> None:
        self.use_phones = bool(use_phones)
        self.use_text = self.use_phones and bool(use_text)
        missing = [r.id for r in self.records if "phones" not in (r.arrays or ())]
        if self.use_phones and missing:
            raise InputError(
                self.store / missing[0],
                "no phones array: extract with features.phones=true (pip install 'koemorph[phones]')",
            )
        self.n_phones = NUM_PHONES + self.use_text if self.use_phones else 0
        phone_pad = silence_row() if self.use_phones else np.zeros(0, np.float32)
        phone_pad = np.r_[phone_pad, np.zeros(int(self.use_text), np.float32)]
        self.frame_pad = np.concatenate([self.mel_pad, phone_pad]).astype(np.float32)

    def _check_groups(self) -> None:
        """InputError naming the first group whose listed arrays are not all readable (cheap: no decoding)."""
        for r in self.records:
            problem = damaged(self.store, r.id, r.arrays)
            if problem:
                raise InputError(self.store / r.id, f"damaged group: {problem}; re-run `koemorph extract`")

    # -- what is there ---------------------------------------------------------------------------

    def ids(self, split: str, with_targets: bool = True) -> list[str]:
        """Sorted ids of ``split`` (only those with targets unless ``with_targets=False``)."""
        return sorted(
            r.id
            for r in self.records
            if r.split == split and (not with_targets or "targets" in (r.arrays or ()))
        )

    def has_text(self, file_id: str) -> bool:
        """Whether the file has transcript-renamed phones (``text`` frame inputs) in this cache."""
        return self.use_text and file_id in self._with_text

    def num_frames(self, file_id: str) -> int:
        return self.files[file_id].num_frames

    def hashes(self) -> dict[str, str]:
        """The feature-cache config hash per array (``mel``/``egemaps``/``targets``), from the results."""
        out: dict[str, set] = {}
        for r in self.records:
            for name, value in (r.hashes or {}).items():
                out.setdefault(name, set()).add(value)
        return {name: ",".join(sorted(values)) for name, values in sorted(out.items())}

    @functools.cached_property
    def level(self) -> dict | None:
        """The train files' speech levels, dB (:func:`koemorph.features.level.level_range` of the
        raw log-mel of every train file with targets); None without train files."""
        from koemorph.features.level import level_range, speech_level_db

        return level_range([speech_level_db(self._arrays(i)["mel"][:]) for i in self.ids("train")])

    def fingerprint(self) -> str:
        """Short hash of the dataset as extracted: ids, splits and source checksums of every file."""
        rows = sorted((r.id, r.split, r.audio_sha256, r.track_sha256) for r in self.records)
        return short_hash(json.dumps(rows))

    # -- arrays ----------------------------------------------------------------------------------

    def _arrays(self, file_id: str) -> dict:
        if os.getpid() != self._pid:  # forked DataLoader worker: reopen handles lazily in this process
            self._handles, self._pid = {}, os.getpid()
        if file_id not in self._handles:
            self._handles[file_id] = open_arrays(self.store, file_id)
        return self._handles[file_id]

    def _normalise(self, name: str, x: np.ndarray, start: int, first_valid: int) -> np.ndarray:
        """Normalise rows ``start..start+len(x)`` of ``name`` (see :mod:`koemorph.features.normalise`)."""
        if name == "mel":
            return normalise_mel(x, self.mel_mean, self.mel_std)
        if name == "egemaps":
            return normalise_egemaps(x, self.ege_mean, self.ege_std, first_valid, start)
        return np.asarray(x, np.float32)

    def load(self, file_id: str) -> dict[str, np.ndarray]:
        """Whole normalised file: ``mel`` [T, D] (the frame input, see the class), ``egemaps`` [T, 88]
        or None, ``targets`` [T, 52] or None, and ``text`` [T, D] when :meth:`has_text`.

        Loaded once per process and kept (about 0.6 MB per minute of audio at 30 fps).
        """
        if file_id in self._loaded:
            return self._loaded[file_id]
        arrays = self._arrays(file_id)
        mel = self._normalise("mel", arrays["mel"][:], 0, 0)
        out = {"mel": self._frame_input(mel, arrays, "mel"), "egemaps": None, "targets": None}
        if self.has_text(file_id):
            out["text"] = self._frame_input(mel, arrays, "text")
        if self.use_egemaps:
            first = int(arrays["egemaps"].attrs.get("first_valid_frame", 0))
            out["egemaps"] = self._normalise("egemaps", arrays["egemaps"][:], 0, first)
        if "targets" in arrays:
            out["targets"] = np.asarray(arrays["targets"][:], np.float32)
        if self.in_memory:
            self._loaded[file_id] = out
        return out

    def slice(self, file_id: str, name: str, start: int, stop: int) -> np.ndarray:
        """Normalised rows ``[start, stop)`` of ``name`` for one file, padded outside the file.

        Pads: mel, text -> ``frame_pad`` (with phones, ``mel`` is the frame input, see the class;
        ``text`` needs :meth:`has_text`); egemaps, targets -> 0. In memory this slices the loaded
        file; otherwise it reads only the Zarr chunks that overlap ``[start, stop)``.
        """
        pad = self.frame_pad if name in ("mel", "text") else 0.0
        if self.in_memory:
            return window(self.load(file_id)[name], start, stop, pad)
        part, lo = self._read_rows(file_id, "mel" if name == "text" else name, start, stop)
        if name in ("mel", "text"):
            part = self._frame_input(part, self._arrays(file_id), name, lo)
        return window(part, start - lo, stop - lo, pad)

    def _frame_input(self, mel: np.ndarray, arrays: dict, name: str, lo: int = 0) -> np.ndarray:
        """Normalised mel rows ``lo..lo+len(mel)`` -> frame input rows: then the phone columns
        (``phones`` for ``mel``, ``phones_text`` for ``text``) and the source column, as used."""
        if not self.use_phones:
            return mel
        phones = np.asarray(arrays["phones_text" if name == "text" else "phones"][lo : lo + len(mel)])
        parts = [mel, phones.astype(np.float32)]
        if self.use_text:
            parts.append(np.full((len(mel), 1), float(name == "text"), np.float32))
        return np.concatenate(parts, axis=1)

    def _read_rows(self, file_id: str, name: str, start: int, stop: int) -> tuple[np.ndarray, int]:
        """``(rows, lo)``: the normalised stored rows of ``[start, stop)`` that exist, from row ``lo``."""
        arr = self._arrays(file_id)[name]
        n = arr.shape[0]
        lo, hi = min(max(0, start), n), max(0, min(n, stop))
        first = int(arr.attrs.get("first_valid_frame", 0)) if name == "egemaps" else 0
        rows = arr[lo:hi] if hi > lo else np.zeros((0, arr.shape[1]), np.float32)
        return self._normalise(name, rows, lo, first), lo
