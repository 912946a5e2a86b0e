"""One demo file: synthetic speech (espeak-ng, flite or festival) -> 16 kHz WAV + ARKit JSONL
track + phone timings.

Runs inside a shard process (see :mod:`koemorph.demo.corpus`). Time bases: the engine works in
samples at its own rate (espeak 22050 Hz, flite/festival 8-32 kHz); everything written is in
seconds on the final 16 kHz audio, which is the speech with silence padded before and after;
the track has one row per 30 fps grid frame.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from koemorph.blendshapes import NUM_BLENDSHAPES
from koemorph.demo.engines import synthesise
from koemorph.demo.espeak import PAUSE, Phone
from koemorph.demo.face import add_face
from koemorph.demo.visemes import STOPS, mouth_track, phone_viseme, viseme_label
from koemorph.grid import SAMPLE_RATE, frame_times, num_frames_for_samples
from koemorph.io.atomic import atomic_write_text
from koemorph.io.audio import write_wav

MAX_CLOSURE_S = 0.1


def with_closures(samples: np.ndarray, phones: list[Phone], rate: int) -> list[Phone]:
    """Move each stop's start back over its silent closure.

    espeak-ng puts a stop's phoneme event at the release, leaving the closure silence at the end
    of the previous phone; the lips are shut during that silence, so it belongs to the stop.
    The closure is the run of 5 ms bins quieter than 15 % of the loud (95th percentile) level,
    at most 100 ms and never more than 70 % of the previous phone. ``samples`` and the phones'
    times are at ``rate`` Hz. Engines whose stops already include the closure are left as they
    are (the samples before such a stop are the loud previous phone).
    """
    _BIN = rate // 200  # 5 ms
    x = samples.astype(np.float64)
    n_bins = len(x) // _BIN
    if n_bins == 0:
        return phones
    rms = np.sqrt((x[: n_bins * _BIN].reshape(n_bins, _BIN) ** 2).mean(axis=1))
    quiet = rms < 0.15 * np.percentile(rms, 95)
    out = list(phones)
    for i in range(1, len(out)):
        stop, prev = out[i], out[i - 1]
        if stop.name not in STOPS:
            continue
        limit = max(prev.start + int(0.3 * (prev.end - prev.start)), stop.start - int(MAX_CLOSURE_S * rate))
        start = stop.start
        while start - _BIN >= limit and quiet[min((start - _BIN) // _BIN, n_bins - 1)]:
            start -= _BIN
        if start < stop.start:
            out[i - 1] = dataclasses.replace(prev, end=start)
            out[i] = dataclasses.replace(stop, start=start)
    return out


def degrade(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Gain, a light room (35 % of files) and noise (60 %): ``[N]`` float at 16 kHz -> same length."""
    info: dict = {}
    y = clean * (rng.uniform(0.35, 0.95) / (np.max(np.abs(clean)) + 1e-9))
    if rng.random() < 0.35:  # short exponential-decay reverb
        rt60 = rng.uniform(0.12, 0.4)
        t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
        ir = rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60) * rng.uniform(0.05, 0.15)
        ir[0] = 1.0
        peak = np.max(np.abs(y))
        n_fft = 1 << int(np.ceil(np.log2(len(y) + len(ir))))
        y = np.fft.irfft(np.fft.rfft(y, n_fft) * np.fft.rfft(ir, n_fft), n_fft)[: len(y)]
        y *= peak / (np.max(np.abs(y)) + 1e-9)
        info["rt60_s"] = round(float(rt60), 3)
    if rng.random() < 0.6:  # white or brownish noise at 12-35 dB SNR
        noise = rng.standard_normal(len(y))
        if rng.random() < 0.5:
            spec = np.fft.rfft(noise)  # one-pole low-pass, 1 / (1 - 0.95 z^-1), applied circularly
            noise = np.fft.irfft(
                spec / (1.0 - 0.95 * np.exp(-1j * np.linspace(0, np.pi, len(spec)))), len(noise)
            )
        active = np.abs(clean) > 0.02 * np.max(np.abs(clean))
        speech_rms = np.sqrt(np.mean(y[active] ** 2)) if active.any() else 0.1
        snr = rng.uniform(12.0, 35.0)
        y = y + noise * speech_rms / (np.sqrt(np.mean(noise**2)) * 10 ** (snr / 20))
        info["snr_db"] = round(float(snr), 1)
    return y, info


def _timeline(phones: list[Phone], lead_s: float, total_s: float, rate: int):
    """Phones (samples at ``rate``) in seconds on the padded audio, with pauses covering both pads:
    ``[(name, start, end, stressed, source)]``."""
    segs = [(p.name, lead_s + p.start / rate, lead_s + p.end / rate, p.stressed, p.source) for p in phones]
    if segs and segs[0][0] == PAUSE:
        segs[0] = (PAUSE, 0.0, segs[0][2], False, segs[0][4])
    else:
        segs.insert(0, (PAUSE, 0.0, segs[0][1] if segs else total_s, False, ""))
    if segs[-1][0] == PAUSE:
        segs[-1] = (PAUSE, segs[-1][1], total_s, False, segs[-1][4])
    else:
        segs.append((PAUSE, segs[-1][2], total_s, False, ""))
    return [s for s in segs if s[2] > s[1]]


def track_lines(track: np.ndarray, fps: int) -> str:
    """JSONL text: one ``{"timestamp", "blendshapes"}`` line per row, 5 decimals, no -0.0."""
    rows = (np.round(track, 5) + 0.0).tolist()
    return "".join(
        json.dumps({"timestamp": round(k / fps, 6), "blendshapes": row}) + "\n" for k, row in enumerate(rows)
    )


def _phone_doc(plan, segs, info: dict) -> dict:
    """The ``.phones.json`` document: who spoke (voice, engine, the engine's voice), what, and the
    phones in seconds on the final audio with their visemes (``source``: the engine's own name)."""
    phones = []
    for name, start, end, stressed, source in segs:
        seg = {"phone": name, "start": round(start, 6), "end": round(end, 6)}
        seg |= {"viseme": viseme_label(phone_viseme(name)[0]), "stressed": stressed}
        phones.append(seg | ({"source": source} if source else {}))
    v = plan.voice
    return {
        "id": plan.id,
        "voice": v.slug,
        "engine": v.engine,
        "engine_voice": v.synth_voice,
        "text": plan.text,
        "degradation": info,
        "phones": phones,
    }


def render_file(out_dir: Path, seed: int, plan, fps: int) -> dict:
    """Synthesise, degrade and write one file of the plan; returns ``{id, seconds, unknown_phones}``."""
    import soxr

    audio_rng = np.random.default_rng([seed, plan.index, 1])
    face_rng = np.random.default_rng([seed, plan.index, 2])
    v = plan.voice
    rand_seed = int(np.random.default_rng([seed, plan.index, 3]).integers(1, 2**31))
    samples, rate, phones = synthesise(v, plan.text, rand_seed)
    if len(samples) == 0 or not phones:
        raise RuntimeError(f"{v.engine} produced no speech for {plan.id}: {plan.text!r}")
    phones = with_closures(samples, phones, rate)
    speech = samples.astype(np.float64) / 32768.0
    if rate != SAMPLE_RATE:
        speech = soxr.resample(speech, rate, SAMPLE_RATE, quality="HQ")
    lead_s, tail_s = audio_rng.uniform(0.1, 0.8), audio_rng.uniform(0.15, 0.8)
    lead_n, tail_n = int(round(lead_s * SAMPLE_RATE)), int(round(tail_s * SAMPLE_RATE))
    clean = np.concatenate([np.zeros(lead_n), speech, np.zeros(tail_n)])
    noisy, info = degrade(clean, audio_rng)
    total_s = len(clean) / SAMPLE_RATE

    segs = _timeline(phones, lead_n / SAMPLE_RATE, total_s, rate)
    n_frames = num_frames_for_samples(len(clean), fps)
    track = mouth_track([s[:4] for s in segs], frame_times(n_frames, fps), v.style)
    add_face(track, clean, fps, face_rng, v.brow_gain)
    assert track.shape == (n_frames, NUM_BLENDSHAPES)

    folder = out_dir / plan.split
    write_wav(folder / f"{plan.id}.wav", noisy.astype(np.float32))
    atomic_write_text(folder / f"{plan.id}.jsonl", track_lines(track, fps))
    unknown = sorted({s[4] or s[0] for s in segs if not phone_viseme(s[0])[1]})
    phone_doc = _phone_doc(plan, segs, info)
    atomic_write_text(folder / f"{plan.id}.phones.json", json.dumps(phone_doc, indent=1) + "\n")
    atomic_write_text(folder / f"{plan.id}.txt", plan.text + "\n")
    return {"id": plan.id, "seconds": total_s, "unknown_phones": unknown}
