"""The preview as an MP4: the same faces (:mod:`koemorph.preview.geometry`) drawn frame by frame
with Pillow, H.264 (or MPEG-4 where the FFmpeg build lacks libx264) at the tracks' fps, the audio
muxed as AAC (PyAV, the ``livelink`` extra, bundles FFmpeg).

Video frame ``k`` shows grid frame ``k`` (time ``k / fps`` s) of every track, faces side by side
with their labels, and under them a strip with each track's first chosen channel over the 4 s
around the frame (the playhead in the middle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from koemorph import blendshapes as bs
from koemorph.preview import geometry
from koemorph.preview.page import COLOURS, PreviewTrack

SUPERSAMPLE = 2  # drawn at twice the size, then reduced: smooth edges without anti-aliased polygons
LABEL_H, STRIP_H, STRIP_S = 28, 90, 2.0


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def _draw_face(image, frame: np.ndarray, x0: int, y0: int) -> None:
    """Every shape of one ``[STRIDE]`` frame onto ``image`` with its top-left corner at ``(x0, y0)``."""
    from PIL import Image, ImageChops, ImageDraw

    s = SUPERSAMPLE
    draw = ImageDraw.Draw(image, "RGBA")
    shapes = {}
    for name, kind, _ in geometry.LAYOUT:
        style = geometry.STYLE[name]
        data = geometry.shape(frame, name)
        if kind == "circle":
            cx, cy, r = (float(v) * s for v in data)
            box = [x0 * s + cx - r, y0 * s + cy - r, x0 * s + cx + r, y0 * s + cy + r]
            shapes[name] = box
        else:
            pts = [(x0 * s + float(x) * s, y0 * s + float(y) * s) for x, y in data]
            shapes[name] = pts
        fill = _rgb(style["fill"]) + (int(255 * style.get("opacity", 1)),) if "fill" in style else None
        outline = _rgb(style["stroke"]) if "stroke" in style else None
        width = int(style.get("width", 1) * s)
        if kind == "circle":
            if box[2] - box[0] < 1:
                continue
            if "clip" in style:  # the iris only where the lids are open: a mask over the eye's box
                lids = shapes[style["clip"]]
                left, top = int(min(p[0] for p in lids)), int(min(p[1] for p in lids))
                size = (int(max(p[0] for p in lids)) - left + 2, int(max(p[1] for p in lids)) - top + 2)
                mask = Image.new("L", size, 0)
                ImageDraw.Draw(mask).polygon([(x - left, y - top) for x, y in lids], fill=255)
                disc = Image.new("L", size, 0)
                ImageDraw.Draw(disc).ellipse(
                    [box[0] - left, box[1] - top, box[2] - left, box[3] - top], fill=255
                )
                image.paste(
                    fill[:3], (left, top, left + size[0], top + size[1]), ImageChops.darker(disc, mask)
                )
            else:
                draw.ellipse(box, fill=fill, outline=outline, width=width)
        elif kind == "polygon":
            draw.polygon(pts, fill=fill, outline=outline, width=width if outline else 0)
        else:
            draw.line(pts, fill=outline, width=width, joint="curve")


def _draw_strip(image, tracks: list[PreviewTrack], channel: str, k: int, fps: int, y0: int) -> None:
    from PIL import ImageDraw

    s, w = SUPERSAMPLE, image.size[0]
    draw = ImageDraw.Draw(image)
    top, h = y0 * s + 6 * s, (STRIP_H - 12) * s
    draw.rectangle([0, y0 * s, w, (y0 + STRIP_H) * s], fill=(244, 244, 244))
    span = int(STRIP_S * fps)
    frames = np.arange(k - span, k + span + 1)
    x = (frames - (k - span)) / (2 * span) * w
    for i, track in enumerate(tracks):
        v = track.values[np.clip(frames, 0, len(track.values) - 1), bs.INDEX[channel]]
        v = np.where((frames >= 0) & (frames < len(track.values)), v, np.nan)
        pts = [(float(a), top + h * (1 - float(b))) for a, b in zip(x, v) if np.isfinite(b)]
        if len(pts) > 1:
            draw.line(pts, fill=_rgb(COLOURS[i % len(COLOURS)]), width=2 * s)
    draw.line([(w / 2, y0 * s), (w / 2, (y0 + STRIP_H) * s)], fill=(230, 85, 13), width=s)
    draw.text((6 * s, y0 * s + 2 * s), channel, fill=(40, 40, 40), font_size=11 * s)


def _frame_image(tracks, frames, k: int, fps: int, channel: str):
    """The RGB image of video frame ``k``."""
    from PIL import Image, ImageDraw

    s, n = SUPERSAMPLE, len(tracks)
    width, height = geometry.WIDTH * n, LABEL_H + geometry.HEIGHT + STRIP_H
    image = Image.new("RGB", (width * s, height * s), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for i, (track, shape_frames) in enumerate(zip(tracks, frames)):
        x0 = geometry.WIDTH * i
        colour = _rgb(COLOURS[i % len(COLOURS)])
        draw.text(((x0 + 8) * s, 6 * s), f"{track.label}  {k / fps:6.2f} s", fill=colour, font_size=13 * s)
        _draw_face(image, shape_frames[min(k, len(shape_frames) - 1)], x0, LABEL_H)
    _draw_strip(image, tracks, channel, k, fps, LABEL_H + geometry.HEIGHT)
    return image.resize((width, height), Image.LANCZOS)


def write_mp4(
    path: str | Path,
    tracks: list[PreviewTrack],
    fps: int,
    audio: tuple[np.ndarray, int] | None,
    channel: str = "jawOpen",
) -> Path:
    """Write the preview video to ``path``: one video frame per grid frame of the longest track,
    ``audio`` (``(samples [N] float, sample_rate)``) muxed when given. Written to a temporary name
    beside ``path`` and renamed when complete."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [geometry.face_frames(t.values) for t in tracks]
    n = max(len(f) for f in frames)
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        video = container.add_stream(codec, rate=fps)
        video.width, video.height = geometry.WIDTH * len(tracks), LABEL_H + geometry.HEIGHT + STRIP_H
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=int(audio[1]), layout="mono") if audio else None
        for k in range(n):
            image = _frame_image(tracks, frames, k, fps, channel)
            container.mux(video.encode(av.VideoFrame.from_image(image)))
        container.mux(video.encode())
        if sound is not None:
            _encode_audio(container, sound, audio)
    tmp.replace(path)
    return path


def _encode_audio(container, stream, audio) -> None:
    import av

    samples, rate = np.asarray(audio[0], np.float32), int(audio[1])
    block = 1024
    for start in range(0, samples.size, block):
        chunk = samples[start : start + block]
        frame = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


__all__ = ["write_mp4"]
