"""A minimal ctypes binding to libespeak-ng (bundled by the ``espeakng-loader`` wheel).

One utterance in, ``(samples, phones)`` out: ``samples`` is ``[N]`` int16 at :data:`SYNTH_RATE`
(22050 Hz) and ``phones`` lists ``(name, start, end)`` in samples of that same stream, taken
from espeak's own phoneme events, so the timing is exact and not re-estimated.

espeak-ng keeps hidden state between calls (intonation, voice caches), and re-initialising it
in one process is not safe. For byte-identical output, run one fresh process per shard and make
the same calls in the same order there (see :mod:`koemorph.demo.corpus`).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

SYNTH_RATE = 22_050  # Hz, espeak-ng's native output rate

# speak_lib.h values (checked by experiment against libespeak-ng 1.52)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4

STRESS_MARKS = "',%=" + '"'  # prefixes on phoneme names that mark stress, not sound
PAUSE = "_"  # espeak's pause phonemes all start with "_" ("_", "_:", "_!")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples since the start of this espeak_Synth call
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Phone:
    """One phone: ``name`` (an espeak-ng mnemonic) without stress marks, ``start``/``end`` in samples
    (at SYNTH_RATE for espeak; at the file's own rate for other engines), and ``source``, the
    engine's own phone name where it differs from ``name`` (empty for espeak)."""

    name: str
    start: int
    end: int
    stressed: bool = False
    source: str = ""


def strip_stress(name: str) -> tuple[str, bool]:
    """``"'u:"`` -> ``("u:", True)``: the phoneme without stress marks, and whether it had primary stress."""
    stressed = name.startswith("'")
    return name.lstrip(STRESS_MARKS), stressed


class Espeak:
    """The process-wide espeak-ng engine in synchronous mode with phoneme events."""

    _instance: Espeak | None = None

    def __init__(self):
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            espeakng_loader.get_data_path().encode(),
            _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT,
        )
        if rate != SYNTH_RATE:
            raise RuntimeError(f"espeak-ng initialisation failed or unexpected rate ({rate})")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._libc = ctypes.CDLL(None)  # espeak-ng draws breath/jitter noise from libc rand()
        self._cb = _CALLBACK(self._on_synth)  # keep a reference: ctypes must not free it
        self._lib.espeak_SetSynthCallback(self._cb)

    @classmethod
    def get(cls) -> Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_synth(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append(
                    (bytes(ev.id.string).split(b"\0")[0].decode("ascii", "replace"), ev.sample)
                )
            i += 1
        return 0

    def synth(
        self,
        text: str,
        voice: str,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        rand_seed: int = 1,
    ):
        """Speak ``text`` with espeak voice ``voice`` (e.g. ``"en-us+f3"``).

        ``rate`` in words per minute (80-450), ``pitch`` and ``pitch_range`` 0-100. libc ``rand()``,
        which espeak-ng draws noise from, is re-seeded with ``rand_seed`` first. Variants with
        ``breath`` (``+f2``, ``+f3``, ``+f5``) are NOT reproducible even so (different samples
        from run to run in fresh processes, checked with 1.52): do not use them.
        Returns ``(samples [N] int16 at SYNTH_RATE, phones list[Phone])``; the phones tile
        ``[phones[0].start, N)`` without gaps, consecutive pauses merged into one ``"_"``.
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        for param, value in (
            (_PARAM_RATE, rate),
            (_PARAM_PITCH, pitch),
            (_PARAM_RANGE, pitch_range),
            (_PARAM_VOLUME, 100),
        ):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        self._libc.srand(ctypes.c_uint(rand_seed & 0xFFFFFFFF))
        data = text.encode("utf-8") + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with code {err}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return samples.astype(np.int16), _phones_from_events(self._events, len(samples))


def _phones_from_events(events: list[tuple[str, int]], n_samples: int) -> list[Phone]:
    """Phoneme events (name, start sample) -> contiguous phones; zero-length ones dropped."""
    phones: list[Phone] = []
    for i, (raw, start) in enumerate(events):
        end = events[i + 1][1] if i + 1 < len(events) else n_samples
        start, end = min(max(start, 0), n_samples), min(max(end, 0), n_samples)
        name, stressed = strip_stress(raw)
        if not name:
            continue
        if name.startswith(PAUSE):
            name = PAUSE
        if phones and phones[-1].end < start:  # close any gap onto the previous phone
            phones[-1] = Phone(phones[-1].name, phones[-1].start, start, phones[-1].stressed)
        if end <= start:
            continue
        if phones and name == PAUSE and phones[-1].name == PAUSE:
            phones[-1] = Phone(PAUSE, phones[-1].start, end)
            continue
        phones.append(Phone(name, start, end, stressed))
    return phones
