"""`koemorph preview`: the face geometry, the self-contained page opened in headless Chromium at two
`#t=` times, folders with an index, the MP4 with its audio, `--model`, and evaluate's previews."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cli.main import app
from koemorph import blendshapes as bs
from koemorph import grid
from koemorph.demo.synth import speechlike
from koemorph.io.tracks import write_jsonl_track
from koemorph.preview import geometry
from koemorph.preview.page import PreviewTrack, page_html

FPS = 30
JAW, CLOSE, BLINK = bs.INDEX["jawOpen"], bs.INDEX["mouthClose"], bs.INDEX["eyeBlinkLeft"]


def _track(seconds: float, seed: int) -> np.ndarray:
    """jawOpen 0.1 before 1.5 s and 0.8 after (a step), a blink at 0.5 s; other channels small noise."""
    n = grid.num_frames(seconds, FPS)
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 0.05, (n, 52)).astype(np.float32)
    t = np.arange(n) / FPS
    values[:, JAW] = np.where(t < 1.5, 0.1, 0.8)
    values[:, CLOSE] = 0.02
    values[:, BLINK] = np.abs(t - 0.5) < 0.05
    return values


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview")
    sf.write(root / "a.wav", speechlike(3.0, seed=1), grid.SAMPLE_RATE, subtype="PCM_16")
    truth, other = _track(3.0, 0), _track(3.0, 1)
    other[:, JAW] = 0.3
    write_jsonl_track(root / "truth.jsonl", truth, FPS)
    write_jsonl_track(root / "other.jsonl", other, FPS)
    return root, truth, other


def test_geometry_follows_the_channels():
    v = np.zeros((5, 52), np.float32)
    v[1, JAW] = 0.5
    v[2, JAW] = 1.0
    v[3, JAW], v[3, CLOSE] = 0.6, 0.6  # lips together with the jaw open
    v[4, BLINK] = 1.0
    f = geometry.face_frames(v)
    opening = [geometry.mouth_opening(x) for x in f]
    assert opening[0] == pytest.approx(0, abs=1e-4) and opening[3] == pytest.approx(0, abs=1e-4)
    assert 15 < opening[1] < opening[2]
    eye_height = [np.ptp(geometry.shape(x, "eye_l")[:, 1]) for x in f]
    assert eye_height[4] < 0.2 * eye_height[0]
    assert np.ptp(geometry.shape(f[4], "eye_r")[:, 1]) == pytest.approx(eye_height[0])  # the other eye stays
    with pytest.raises(ValueError, match=r"\[T, 52\]"):
        geometry.face_frames(np.zeros((3, 51)))


def test_page_is_self_contained(files):
    root, truth, other = files
    text = page_html("a", [PreviewTrack("t", truth)], FPS, (speechlike(1.0), grid.SAMPLE_RATE), ["jawOpen"])
    assert re.search(r"<(link|iframe|img)\b", text) is None
    assert re.findall(r'\b(?:src|href)="(?!data:|#)', text) == []  # nothing fetched from elsewhere
    assert '<audio id="km-audio" controls preload="auto" src="data:audio/wav;base64,' in text
    data = json.loads(
        re.search(r'<script id="km-data" type="application/json">(.*?)</script>', text).group(1)
    )
    frames = np.frombuffer(base64.b64decode(data["tracks"][0]["frames"]), "<i2").reshape(len(truth), -1)
    np.testing.assert_allclose(frames / data["scale"], geometry.face_frames(truth), atol=0.051)
    with pytest.raises(ValueError, match="unknown channel name"):
        page_html("a", [PreviewTrack("t", truth)], FPS, None, ["jawopen"])


def _chromium() -> str | None:
    for candidate in (os.environ.get("KOEMORPH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def _dom(browser: str, page: Path, t: float, profile: Path) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
    cmd += ["--virtual-time-budget=5000", "--dump-dom", f"{page.resolve().as_uri()}#t={t}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "</body>" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _mouth(dom: str, k: int) -> tuple[float, float]:
    """(opening from the drawn polygon's points, the data-opening attribute) of face ``k``."""
    tag = re.search(rf'<polygon id="km-mouth-{k}"[^>]*>', dom).group(0)
    pts = np.array([p.split(",") for p in re.search(r'points="([^"]+)"', tag).group(1).split()], float)
    drawn = pts[geometry.MOUTH_LOWER_CENTRE, 1] - pts[geometry.MOUTH_UPPER_CENTRE, 1]
    return drawn, float(re.search(r'data-opening="([^"]+)"', tag).group(1))


def test_page_in_headless_chromium_opens_at_the_url_time(files, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium binary found (apt-get install chromium, or set KOEMORPH_CHROMIUM)")
    root, truth, other = files
    page = tmp_path / "p.html"
    args = [
        "preview",
        str(root / "a.wav"),
        str(root / "truth.jsonl"),
        str(root / "other.jsonl"),
        "-o",
        str(page),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    early, late = 1.0, 2.0  # frames 30 and 60: jawOpen 0.1 and 0.8
    assert truth[int(late * FPS), JAW] - truth[int(early * FPS), JAW] > 0.3
    doms = {t: _dom(browser, page, t, tmp_path / "profile") for t in (early, late)}
    for t, dom in doms.items():
        assert f'data-time="{t:.3f}"' in dom
        for k, values in enumerate((truth, other)):
            drawn, attr = _mouth(dom, k)
            expected = geometry.mouth_opening(geometry.face_frames(values[[int(round(t * FPS))]])[0])
            assert drawn == pytest.approx(expected, abs=0.3) and attr == pytest.approx(expected, abs=0.3)
    gap = _mouth(doms[late], 0)[0] - _mouth(doms[early], 0)[0]
    assert gap > 0.7 * 42 * 0.7 * 0.9  # jawOpen +0.7 opens the drawn mouth by about 42 px per unit
    assert _mouth(doms[late], 1)[0] == pytest.approx(_mouth(doms[early], 1)[0], abs=0.3)  # jaw constant


def test_folder_pages_and_index(files, tmp_path):
    root, truth, _ = files
    audio, tracks = tmp_path / "audio", tmp_path / "tracks"
    (audio / "sub").mkdir(parents=True)
    (tracks / "sub").mkdir(parents=True)
    shutil.copy(root / "a.wav", audio / "sub" / "x.wav")
    shutil.copy(root / "a.wav", audio / "y.wav")
    write_jsonl_track(tracks / "sub" / "x.jsonl", truth, FPS)  # y has no track
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["preview", str(audio), str(tracks), "-o", str(out)])
    assert result.exit_code == 1
    assert f"{tracks / 'y.wav'}: no track with this stem" in result.output
    assert (out / "sub" / "x.html").is_file() and not (out / "y.html").exists()
    index = (out / "index.html").read_text()
    assert 'href="sub/x.html"' in index and "y.wav" in index and "no track with this stem" in index


def test_mp4_has_the_faces_and_the_audio(files, tmp_path):
    av = pytest.importorskip("av", reason="PyAV (the livelink extra) is not installed")
    root, truth, _ = files
    page = tmp_path / "v.html"
    result = CliRunner().invoke(
        app, ["preview", str(root / "a.wav"), str(root / "truth.jsonl"), "-o", str(page), "--mp4"]
    )
    assert result.exit_code == 0, result.output
    with av.open(str(tmp_path / "v.mp4")) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        audio = container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(3.0, abs=0.1)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == len(truth)
    # the mouth's dark inside (#4a1414) covers more pixels with the jaw open (frame 60) than almost shut (30)
    dark = [int((np.abs(frames[k].astype(int) - (0x4A, 0x14, 0x14)).sum(-1) < 40).sum()) for k in (30, 60)]
    assert dark[1] > 3 * max(dark[0], 50)


def test_model_track_comes_first_and_equals_render(files, tmp_path):
    from koemorph.config import load_config
    from koemorph.io.tracks import read_track
    from koemorph.preview.build import model_values
    from pipeline.render import render
    from tests.checkpointkit import random_checkpoint

    root, truth, _ = files
    ckpt = random_checkpoint(tmp_path / "m.pt", ["features.egemaps=false"], speechlike(10.0, seed=3))
    page = tmp_path / "m.html"
    args = ["preview", str(root / "a.wav"), str(root / "truth.jsonl"), "--model", str(ckpt), "-o", str(page)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    data = json.loads(
        re.search(r'<script id="km-data" type="application/json">(.*?)</script>', text).group(1)
    )
    assert [t["label"] for t in data["tracks"]] == ["model: m.pt", str(root / "truth.jsonl")]
    render(root, tmp_path / "r", str(ckpt), workers=0)
    rendered = read_track(tmp_path / "r" / "a.jsonl").values
    ours = model_values(root / "a.wav", str(ckpt), load_config(None), FPS, tmp_path)
    np.testing.assert_allclose(ours, rendered, atol=1e-5)
    frames = np.frombuffer(base64.b64decode(data["tracks"][0]["frames"]), "<i2").reshape(len(ours), -1)
    np.testing.assert_allclose(frames / data["scale"], geometry.face_frames(ours), atol=0.051)


def test_evaluate_writes_previews_of_best_and_worst(files, tmp_path):
    root, truth, other = files
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    for d in (truth_dir, pred_dir):
        d.mkdir()
    for i, shift in enumerate((0, 5)):
        shutil.copy(root / "a.wav", truth_dir / f"f{i}.wav")
        write_jsonl_track(truth_dir / f"f{i}.jsonl", truth, FPS)
        write_jsonl_track(pred_dir / f"f{i}.jsonl", np.roll(truth, shift, 0), FPS)
    out = tmp_path / "reports"
    result = CliRunner().invoke(app, ["evaluate", str(pred_dir), str(truth_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("best", "worst"):
        text = (out / f"preview_{name}.html").read_text()
        assert "data:audio/wav;base64," in text and '"label":"truth"' in text and '"label":"model"' in text
    assert "<h1>f0</h1>" in (out / "preview_best.html").read_text()
    assert "<h1>f1</h1>" in (out / "preview_worst.html").read_text()
