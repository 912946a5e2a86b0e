"""flite and festival through their installed binaries: one utterance in, ``Speech`` out.

Both speak the CMU/radio phone set; each phone is renamed to the espeak-ng mnemonic with the same
mouth shape (:data:`CMU_TO_ESPEAK`), so the one viseme table of :mod:`koemorph.demo.visemes`
and the stop-closure rule of :mod:`koemorph.demo.render` serve every engine; the engine's own
name is kept as ``source``. Phone times are the engines' Segment end times (seconds), turned
into samples at the file's own rate and clipped to the audio (flite's diphone voices report a
final pause a little longer than the waveform they write).

Nothing is downloaded: a missing binary or voice is an :class:`EngineMissing` naming the Debian
package. Each call runs a fresh process in a temporary folder; both engines are deterministic
(same text and settings, same bytes).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from koemorph.demo.espeak import PAUSE, Phone

# CMU/radio phone -> espeak-ng mnemonic with the same viseme
CMU_TO_ESPEAK = {
    "pau": PAUSE,
    "h#": PAUSE,
    "brth": PAUSE,
    "sil": PAUSE,
    "aa": "A:",
    "ae": "a",
    "ah": "V",
    "ao": "O:",
    "aw": "aU",
    "ax": "@",
    "axr": "3",
    "ay": "aI",
    "eh": "E",
    "er": "3:",
    "ey": "eI",
    "ih": "I",
    "ix": "I",
    "iy": "i:",
    "ow": "oU",
    "oy": "OI",
    "uh": "U",
    "uw": "u:",
    "b": "b",
    "ch": "tS",
    "d": "d",
    "dh": "D",
    "dx": "t",
    "el": "l",
    "em": "m",
    "en": "n",
    "f": "f",
    "g": "g",
    "hh": "h",
    "jh": "dZ",
    "k": "k",
    "l": "l",
    "m": "m",
    "n": "n",
    "ng": "N",
    "nx": "n",
    "p": "p",
    "r": "r",
    "s": "s",
    "sh": "S",
    "t": "t",
    "th": "T",
    "v": "v",
    "w": "w",
    "y": "j",
    "z": "z",
    "zh": "Z",
}
VOWELS = frozenset(
    {
        "aa",
        "ae",
        "ah",
        "ao",
        "aw",
        "ax",
        "axr",
        "ay",
        "eh",
        "er",
        "ey",
        "ih",
        "ix",
        "iy",
        "ow",
        "oy",
        "uh",
        "uw",
    }
)

# engine voice -> (Debian package, mean F0 in Hz around which the voice's pitch setting moves)
FLITE_VOICES = {
    "kal16": ("flite", 105.0),
    "awb": ("flite", 110.0),
    "rms": ("flite", 105.0),
    "slt": ("flite", 170.0),
}
FESTIVAL_VOICES = {
    "kal_diphone": ("festvox-kallpc16k", 105.0),
    "ked_diphone": ("festvox-kdlpc16k", 105.0),
    "cmu_us_slt_arctic_hts": ("festvox-us-slt-hts", 170.0),
}
NOMINAL_WPM = 165.0  # speaking rate of both engines at duration stretch 1


class EngineMissing(RuntimeError):
    """A synthesis engine (or one of its voices) is not installed."""


def check_binary(engine: str, voices) -> None:
    """Raise :class:`EngineMissing` naming the Debian package(s) unless ``engine`` and ``voices`` are here."""
    table = FLITE_VOICES if engine == "flite" else FESTIVAL_VOICES
    if shutil.which(engine) is None:
        packages = " ".join(sorted({engine, *(table[v][0] for v in voices)}))
        raise EngineMissing(
            f"engine {engine!r} is not installed: no {engine!r} binary on PATH "
            f"(Debian/Ubuntu: apt-get install {packages})"
        )
    if engine == "festival":
        have = set(_run(["festival", "-b", "(print (voice.list))"], "festival").split("(")[-1].split())
        have = {v.strip("()") for v in have}
        missing = sorted(v for v in voices if v not in have)
        if missing:
            packages = " ".join(FESTIVAL_VOICES[v][0] for v in missing)
            raise EngineMissing(
                f"festival has no voice {', '.join(missing)} (Debian/Ubuntu: apt-get install {packages})"
            )


def _run(cmd: list[str], engine: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except FileNotFoundError:
        raise EngineMissing(
            f"engine {engine!r} is not installed (Debian/Ubuntu: apt-get install {engine})"
        ) from None
    if done.returncode != 0:
        raise RuntimeError(f"{engine} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    samples, rate = sf.read(path, dtype="int16", always_2d=True)
    return samples[:, 0].copy(), int(rate)


def phones_from_ends(segments, n_samples: int, rate: int) -> list[Phone]:
    """``[(cmu name, end s, stressed)]`` (contiguous from 0) -> espeak-named phones in samples at ``rate``.

    Ends are clipped to the audio; zero-length phones are dropped and consecutive pauses merged,
    so the phones tile ``[phones[0].start, n_samples)`` without gaps.
    """
    phones: list[Phone] = []
    start = 0
    for i, (raw, end_s, stressed) in enumerate(segments):
        end = n_samples if i == len(segments) - 1 else min(int(round(end_s * rate)), n_samples)
        name = CMU_TO_ESPEAK.get(raw, raw)
        if end <= start:
            continue
        if phones and name == PAUSE and phones[-1].name == PAUSE:
            phones[-1] = Phone(PAUSE, phones[-1].start, end)
        else:
            phones.append(Phone(name, start, end, bool(stressed) and name != PAUSE, source=raw))
        start = end
    return phones


def flite_synth(voice: str, text: str, rate_wpm: int, pitch: int, pitch_range: int):
    """Speak ``text`` with flite voice ``voice``; returns ``(samples [N] int16, rate Hz, phones)``.

    ``rate_wpm`` sets ``duration_stretch`` (NOMINAL_WPM / rate), ``pitch`` (0-100) the mean F0
    within -15..+15 % of the voice's own and ``pitch_range`` (0-100) its spread. flite reports no
    stress: a vowel longer than the utterance's median vowel counts as stressed.
    """
    f0 = FLITE_VOICES[voice][1] * (0.85 + 0.3 * pitch / 100.0)
    with tempfile.TemporaryDirectory(prefix="koemorph-flite-") as tmp:
        wav = Path(tmp) / "out.wav"
        args = ["-voice", voice, "--setf", f"duration_stretch={NOMINAL_WPM / rate_wpm:.4f}"]
        args += ["--setf", f"int_f0_target_mean={f0:.2f}"]
        args += ["--setf", f"int_f0_target_stddev={f0 * (0.06 + 0.14 * pitch_range / 100.0):.2f}"]
        out = _run(["flite", *args, "-psdur", "-t", text, "-o", str(wav)], "flite")
        samples, rate = _read_wav(wav)
    ends = [(m[1], float(m[2])) for m in re.finditer(r"(\S+):([0-9.]+)", out)]
    durations = [e - (ends[i - 1][1] if i else 0.0) for i, e in enumerate(x[1] for x in ends)]
    vowel_durs = [d for (name, _), d in zip(ends, durations) if name in VOWELS]
    median = float(np.median(vowel_durs)) if vowel_durs else 0.0
    segs = [(name, end, name in VOWELS and d > median) for (name, end), d in zip(ends, durations)]
    return samples, rate, phones_from_ends(segs, len(samples), rate)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_synth(voice: str, text: str, rate_wpm: int):
    """Speak ``text`` with festival voice ``voice`` (e.g. ``kal_diphone``) in one ``festival -b`` run.

    ``rate_wpm`` sets ``Duration_Stretch`` (NOMINAL_WPM / rate). Phones are the utterance's
    Segment relation with their end times; stress is the syllable's lexical stress.
    Returns ``(samples [N] int16, rate Hz, phones)``.
    """
    with tempfile.TemporaryDirectory(prefix="koemorph-festival-") as tmp:
        wav = Path(tmp) / "out.wav"
        script = Path(tmp) / "say.scm"
        script.write_text(
            f"(voice_{voice})\n"
            f"(Parameter.set 'Duration_Stretch {NOMINAL_WPM / rate_wpm:.4f})\n"
            f"(set! utt (utt.synth (Utterance Text {_scheme_string(text)})))\n"
            f"(utt.save.wave utt {_scheme_string(str(wav))} 'riff)\n"
            '(mapcar (lambda (s) (format t "SEG %s %f %s\\n" (item.name s) (item.feat s "end")'
            ' (item.feat s "R:SylStructure.parent.stress"))) (utt.relation.items utt \'Segment))\n',
            encoding="utf-8",
        )
        out = _run(["festival", "-b", str(script)], "festival")
        samples, rate = _read_wav(wav)
    segs = [
        (m[1], float(m[2]), m[1] in VOWELS and m[3] == "1")
        for m in re.finditer(r"^SEG (\S+) ([0-9.]+) (\S+)$", out, re.M)
    ]
    if not segs:
        raise RuntimeError(f"festival printed no segments for voice {voice!r}: {out[-300:]!r}")
    return samples, rate, phones_from_ends(segs, len(samples), rate)
