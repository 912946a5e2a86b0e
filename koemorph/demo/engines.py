"""The demo's speech engines: espeak-ng (from the ``espeakng-loader`` wheel, always available),
flite and festival (their installed binaries, Debian packages ``flite``, ``festival`` and
``festvox-*``; never downloaded at run time).

:func:`synthesise` gives every engine the same shape of answer: ``(samples [N] int16, rate Hz,
phones)`` with phones in samples at that rate, named with espeak-ng mnemonics so one viseme
table serves all engines.
"""

from __future__ import annotations

from koemorph.demo.binaries import FESTIVAL_VOICES, FLITE_VOICES, EngineMissing, check_binary

ENGINES = ("espeak", "flite", "festival")
PACKAGES = {
    "espeak": "pip install 'koemorph[demo]' (espeakng-loader)",
    "flite": "apt-get install flite",
    "festival": "apt-get install festival " + " ".join(sorted({p for p, _ in FESTIVAL_VOICES.values()})),
}


def parse_engines(engines) -> tuple[str, ...]:
    """``"espeak,flite"`` or a sequence -> a tuple of known engine names in the given order, no repeats."""
    names = engines.split(",") if isinstance(engines, str) else list(engines)
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise ValueError(
            f"demo.engines: unknown engine(s) {unknown or names!r}; choose from {', '.join(ENGINES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"demo.engines: an engine is named twice in {names!r}")
    return tuple(names)


def check_engines(engines) -> None:
    """Raise :class:`EngineMissing` (the message names the engine and what to install) unless all are here."""
    for engine in engines:
        if engine == "espeak":
            try:
                import espeakng_loader  # noqa: F401
            except ImportError:
                raise EngineMissing(f"engine 'espeak' is not installed: {PACKAGES['espeak']}") from None
        else:
            check_binary(engine, FLITE_VOICES if engine == "flite" else FESTIVAL_VOICES)


def synthesise(voice, text: str, rand_seed: int):
    """Speak ``text`` with demo voice ``voice`` (:class:`koemorph.demo.voices.Voice`).

    Returns ``(samples [N] int16, rate Hz, phones list[Phone])``, phones in samples at ``rate``,
    tiling ``[phones[0].start, N)``. ``rand_seed`` seeds espeak-ng's noise; flite and festival
    are deterministic without one.
    """
    if voice.engine == "espeak":
        from koemorph.demo.espeak import SYNTH_RATE, Espeak

        samples, phones = Espeak.get().synth(
            text, voice.synth_voice, voice.rate, voice.pitch, voice.pitch_range, rand_seed
        )
        return samples, SYNTH_RATE, phones
    from koemorph.demo import binaries

    if voice.engine == "flite":
        return binaries.flite_synth(voice.synth_voice, text, voice.rate, voice.pitch, voice.pitch_range)
    if voice.engine == "festival":
        return binaries.festival_synth(voice.synth_voice, text, voice.rate)
    raise ValueError(f"unknown engine {voice.engine!r}")


__all__ = ["ENGINES", "EngineMissing", "check_engines", "parse_engines", "synthesise"]
