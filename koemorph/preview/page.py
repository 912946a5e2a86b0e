"""One self-contained HTML preview page: faces drawn from ARKit tracks, in sync with the audio.

The page needs no network when viewed: style, script (:mod:`koemorph.preview.script`) and data are
inline, and the audio is embedded as a 16-bit PCM WAV data URI (16 kHz mono: about 43 kB per
second once base64-encoded). Each track is one face (:mod:`koemorph.preview.geometry`), side by side
in the order given; under them, curves of the chosen channels for every track, with a playhead;
clicking the curves seeks. ``page.html#t=1.25`` opens at 1.25 s.

Tracks are ``[T, 52]`` arrays on the grid at ``fps`` (frame ``k`` at ``k / fps`` s, Apple order).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koemorph import blendshapes as bs
from koemorph.preview import geometry
from koemorph.preview.script import SCRIPT

SCALE = 10  # shape numbers are stored as int16 tenths of a pixel
COLOURS = ("#222222", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
CURVE_X0, CURVE_W, ROW_H = 130, 760, 46
MAX_CURVE_POINTS = 1500

STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
h1 { font-size: 18px; margin: 0 0 8px; }
#km-faces { display: flex; gap: 12px; flex-wrap: wrap; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 4px; }
figcaption { text-align: center; font-size: 13px; padding: 2px; }
svg.face { width: 300px; height: 360px; display: block; }
#km-controls { margin: 10px 0; display: flex; gap: 12px; align-items: center; }
#km-audio { width: 480px; }
#km-time { font-variant-numeric: tabular-nums; font-size: 13px; }
#km-curves { width: 900px; max-width: 100%; background: #fff; border: 1px solid #ddd; cursor: pointer; }
.legend span { margin-right: 14px; font-size: 13px; }
"""


@dataclass
class PreviewTrack:
    """One face of the page: ``label`` and ``values`` ``[T, 52]`` on the grid at the page's fps."""

    label: str
    values: np.ndarray


def wav_data_uri(samples: np.ndarray, sample_rate: int) -> str:
    """``samples`` ``[N]`` float in [-1, 1] -> ``data:audio/wav;base64,...`` (16-bit PCM mono)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(
        buf, np.clip(np.asarray(samples, np.float32), -1, 1), sample_rate, format="WAV", subtype="PCM_16"
    )
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _frames_b64(values: np.ndarray) -> str:
    numbers = np.round(geometry.face_frames(values) * SCALE)
    return base64.b64encode(np.clip(numbers, -32768, 32767).astype("<i2").tobytes()).decode("ascii")


def _curves_svg(tracks: list[PreviewTrack], channels: list[str], duration: float, fps: int) -> str:
    height = ROW_H * len(channels) + 10
    parts = [f'<svg id="km-curves" viewBox="0 0 {CURVE_X0 + CURVE_W + 10} {height}">']
    for row, name in enumerate(channels):
        top = 5 + row * ROW_H
        parts.append(
            f'<text x="{CURVE_X0 - 8}" y="{top + ROW_H / 2 + 4}" text-anchor="end" font-size="12">'
            f"{html.escape(name)}</text>"
            f'<rect x="{CURVE_X0}" y="{top}" width="{CURVE_W}" height="{ROW_H - 6}" fill="#f4f4f4"/>'
        )
        for k, track in enumerate(tracks):
            v = track.values[:, bs.INDEX[name]]
            step = max(1, int(np.ceil(len(v) / MAX_CURVE_POINTS)))
            idx = np.arange(0, len(v), step)
            x = CURVE_X0 + CURVE_W * np.minimum(idx / fps / max(duration, 1e-9), 1)
            y = top + (ROW_H - 6) * (1 - np.clip(v[idx], 0, 1))
            points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y))
            colour = COLOURS[k % len(COLOURS)]
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.2"/>')
    parts.append(
        f'<line id="km-playhead" x1="{CURVE_X0}" x2="{CURVE_X0}" y1="0" y2="{height}" '
        'stroke="#e6550d" stroke-width="1.5"/></svg>'
    )
    return "".join(parts)


def page_html(
    title: str,
    tracks: list[PreviewTrack],
    fps: int,
    audio: tuple[np.ndarray, int] | None,
    channels: list[str] | None = None,
) -> str:
    """The page's HTML text. ``audio``: ``(samples [N], sample_rate)`` to embed, or None (no sound).
    ``channels``: ARKit names whose curves are shown (default :data:`koemorph.blendshapes.KEY_NAMES`)."""
    if not tracks:
        raise ValueError("a preview needs at least one track")
    channels = list(channels or bs.KEY_NAMES)
    unknown = [c for c in channels if c not in bs.INDEX]
    if unknown:
        raise ValueError(f"unknown channel name(s) {unknown}: use ARKit names such as jawOpen")
    n = max(len(t.values) for t in tracks)
    duration = max(n / fps, audio[0].size / audio[1] if audio else 0.0)
    data = {
        "fps": fps,
        "duration": duration,
        "scale": SCALE,
        "stride": geometry.STRIDE,
        "layout": [list(x) for x in geometry.LAYOUT],
        "style": geometry.STYLE,
        "mouth_upper": geometry.MOUTH_UPPER_CENTRE,
        "mouth_lower": geometry.MOUTH_LOWER_CENTRE,
        "curve_x0": CURVE_X0,
        "curve_w": CURVE_W,
        "tracks": [{"label": t.label, "n": len(t.values), "frames": _frames_b64(t.values)} for t in tracks],
    }
    faces = "".join(
        f'<figure><svg class="face" id="km-face-{k}" viewBox="0 0 {geometry.WIDTH} {geometry.HEIGHT}"></svg>'
        f'<figcaption style="color:{COLOURS[k % len(COLOURS)]}">{html.escape(t.label)}</figcaption></figure>'
        for k, t in enumerate(tracks)
    )
    legend = "".join(
        f'<span style="color:{COLOURS[k % len(COLOURS)]}">&#9632; {html.escape(t.label)}</span>'
        for k, t in enumerate(tracks)
    )
    player = (
        f'<audio id="km-audio" controls preload="auto" src="{wav_data_uri(*audio)}"></audio>' if audio else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>koemorph preview: {html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><div id="km-faces">{faces}</div>'
        f'<div id="km-controls">{player}<span id="km-time"></span>'
        '<button id="km-link" type="button">link to this moment</button></div>'
        f'<div class="legend">{legend}</div>{_curves_svg(tracks, channels, duration, fps)}'
        f'<script id="km-data" type="application/json">{_json_for_script(data)}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def _json_for_script(data: dict) -> str:
    """JSON safe inside ``<script>``: no ``</`` sequence can end the element early."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def write_page(path: str | Path, *args, **kwargs) -> Path:
    """:func:`page_html` written atomically to ``path`` (parents created)."""
    from koemorph.io.atomic import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page_html(*args, **kwargs))
    return path


def index_html(title: str, entries: list[dict]) -> str:
    """An index of preview pages: ``entries`` of ``{"href", "name", "duration", "tracks"}`` (or
    ``{"name", "error"}`` for a file that could not be previewed)."""
    rows = []
    for e in entries:
        if e.get("error"):
            rows.append(
                f"<tr><td>{html.escape(e['name'])}</td><td colspan=2>{html.escape(e['error'])}</td></tr>"
            )
        else:
            rows.append(
                f'<tr><td><a href="{html.escape(e["href"])}">{html.escape(e["name"])}</a></td>'
                f"<td>{e['duration']:.1f} s</td><td>{html.escape(', '.join(e['tracks']))}</td></tr>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE} td {{ padding: 2px 10px; }}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><table><tr><th>file</th><th>length</th><th>tracks</th></tr>"
        f"{''.join(rows)}</table></body></html>\n"
    )


__all__ = ["PreviewTrack", "index_html", "page_html", "wav_data_uri", "write_page"]
