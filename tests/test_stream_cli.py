"""`koemorph stream` as a real subprocess: JSONL, a real python-osc server, real WebSocket clients,
raw PCM on stdin, Ctrl-C (SIGINT at a deterministic point: all written audio consumed)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from koemorph import blendshapes as bs
from koemorph import grid
from koemorph.io.tracks import read_track
from pipeline.render import render
from tests.streamkit import babble, make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_cli")
    ckpt = make_checkpoint(root / "mel.pt", egemaps=False)
    (root / "in").mkdir()
    audio = {"a": babble(3.0, seed=7), "c": babble(2.0, seed=9)}
    for name, x in audio.items():
        sf.write(root / "in" / f"{name}.wav", x, 16_000, subtype="FLOAT")
    audio["c16"] = np.round(np.clip(audio["c"], -1, 32767 / 32768) * 32768).astype(np.int16)
    sf.write(root / "in" / "c16.wav", audio["c16"], 16_000, subtype="PCM_16")  # what s16le stdin carries
    render(root / "in", root / "out", str(ckpt), workers=0)
    rendered = {name: read_track(root / "out" / f"{name}.jsonl").values for name in audio}
    return {"root": root, "ckpt": ckpt, "audio": audio, "rendered": rendered}


def koemorph(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cli.main", "stream", *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def jsonl_values(text: str) -> np.ndarray:
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["timestamp"] for r in rows] == [round(k / 30, 6) for k in range(len(rows))]
    return np.array([r["blendshapes"] for r in rows], dtype=np.float64).reshape(-1, 52)


class OscServer:
    """A python-osc UDP server on 127.0.0.1 recording (address, args) in arrival order."""

    def __init__(self):
        import socket

        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import BlockingOSCUDPServer

        self.messages: list = []
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(lambda address, *args: self.messages.append((address, args)))
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
        self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def frames(self) -> np.ndarray:
        """Values per frame, checking that each is 52 Val messages in Apple order then one Apply."""
        per = len(bs.ARKIT_NAMES) + 1
        assert len(self.messages) % per == 0, len(self.messages)
        out = []
        for f in range(len(self.messages) // per):
            group = self.messages[f * per : (f + 1) * per]
            assert [a for a, _ in group] == ["/VMC/Ext/Blend/Val"] * 52 + ["/VMC/Ext/Blend/Apply"]
            assert [args[0] for _, args in group[:52]] == list(bs.ARKIT_NAMES)
            out.append([args[1] for _, args in group[:52]])
        return np.array(out, dtype=np.float64).reshape(-1, 52)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def ws_port(proc: subprocess.Popen) -> int:
    line = proc.stderr.readline().decode()
    found = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
    assert found, line
    return int(found.group(1))


def ws_client(port: int, limit: int | None = None) -> tuple[list, threading.Thread]:
    """Connect (before returning) and collect messages on a thread; ``limit``: disconnect after that many."""
    from websockets.sync.client import connect

    got: list = []
    ws = connect(f"ws://127.0.0.1:{port}")

    def read():
        with ws:
            for message in ws:
                got.append(json.loads(message))
                if limit is not None and len(got) >= limit:
                    return  # leaves: closes the connection mid-stream

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return got, thread


def test_osc_websocket_and_jsonl_receive_every_frame(env):
    osc = OscServer()
    try:
        wav, want = env["root"] / "in" / "a.wav", env["rendered"]["a"]
        sinks = ["--jsonl", "--osc", f"127.0.0.1:{osc.port}", "--ws", "127.0.0.1:0", "--ws-wait", "2"]
        proc = koemorph(wav, "--model", env["ckpt"], "--chunk-s", "0.1", "--realtime", *sinks)
        port = ws_port(proc)
        stays, t1 = ws_client(port)
        leaves, t2 = ws_client(port, limit=5)
        out, err = proc.communicate(timeout=300)
        t1.join(30)
        t2.join(30)
    finally:
        osc.close()
    assert proc.returncode == 0, err.decode()
    got = jsonl_values(out.decode())
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
    assert np.abs(osc.frames() - got).max() <= 1e-6  # float32 on the wire
    assert len(leaves) == 5  # that client left after 5 frames; the stream went on
    assert [m["frame"] for m in stays] == list(range(len(want)))
    assert all(list(m["blendshapes"]) == list(bs.ARKIT_NAMES) for m in stays)
    ws_values = np.array([list(m["blendshapes"].values()) for m in stays])
    assert np.abs(ws_values - got).max() == 0 and [m["timestamp"] for m in stays] == [
        round(k / 30, 6) for k in range(len(want))
    ]
    assert "RTF" in err.decode() and "latency p50" in err.decode()


def test_raw_pcm_on_stdin(env):
    x, want = env["audio"]["c"], env["rendered"]["c"]
    proc = koemorph(
        "-", "--model", env["ckpt"], "--format", "f32le", "--rate", "16000", stdin=subprocess.PIPE
    )
    out, err = proc.communicate(x.astype("<f4").tobytes(), timeout=300)
    assert proc.returncode == 0, err.decode()
    got = jsonl_values(out.decode())
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5


def test_a_quiet_input_is_scaled_unless_match_level_is_off(env):
    """A model with training levels 30 dB above the input's: the stream scales it (the progress line
    says by how much) unless ``--set render.match_level=false``."""
    from koemorph.config import load_config
    from koemorph.features.level import speech_level_db
    from koemorph.features.mel import log_mel
    from tests.checkpointkit import SMALL

    x = env["audio"]["a"]
    level = speech_level_db(log_mel(x, load_config(None, SMALL).features))
    trained = {"low": level + 27, "median": level + 30, "high": level + 33, "files": 2}
    ckpt = make_checkpoint(env["root"] / "levels.pt", egemaps=False, level=trained)
    runs = {}
    for name, extra in (("matched", []), ("off", ["--set", "render.match_level=false"])):
        proc = koemorph(env["root"] / "in" / "a.wav", "--model", ckpt, *extra)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        runs[name] = jsonl_values(out.decode()), err.decode().splitlines()[-1]
    assert runs["matched"][1].endswith(
        "; input level -30 dB from training, scaled +30 dB: raise the input gain"
    )
    assert runs["off"][1].endswith("; input level -30 dB from training: raise the input gain")
    assert np.abs(runs["off"][0] - env["rendered"]["a"]).max() <= 1e-5  # as the model without levels
    assert np.abs(runs["matched"][0] - runs["off"][0]).max() > 0.05


def test_ctrl_c_flushes_and_closes_the_sinks(env):
    """SIGINT once every written sample has been consumed: the last lookahead frames still come out,
    the WebSocket client gets every frame and a clean close, no traceback, exit code 130."""
    pcm, want = env["audio"]["c16"], env["rendered"]["c16"]
    proc = koemorph(
        "--model",
        env["ckpt"],
        "--format",
        "s16le",
        "--chunk-s",
        "0.05",
        "--jsonl",
        "--ws",
        "127.0.0.1:0",
        "--ws-wait",
        "1",
        stdin=subprocess.PIPE,
    )
    client, thread = ws_client(ws_port(proc))
    proc.stdin.write(pcm.astype("<i2").tobytes())
    proc.stdin.flush()  # stdin stays open: the stream is waiting for more audio when interrupted
    ready = max(k for k in range(200) if round(k * 16_000 / 30) + 512 <= pcm.size) + 1 - 3  # minus lookahead
    lines = [proc.stdout.readline() for _ in range(ready)]
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    thread.join(30)
    lines += rest.splitlines(keepends=True)
    assert proc.returncode == 130, err.decode()
    assert "interrupted: flushed and closed" in err.decode() and "Traceback" not in err.decode()
    got = jsonl_values(b"".join(lines).decode())
    assert len(got) == grid.num_frames_for_samples(pcm.size) > ready  # the flush added the last frames
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
    assert [m["frame"] for m in client] == list(range(len(got)))


def test_bad_options_and_sources_get_clear_errors(env, tmp_path):
    proc = koemorph(env["root"] / "in" / "a.wav", "--model", env["ckpt"], "--osc", "nowhere")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--osc: expected HOST:PORT" in err.decode()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage")
    proc = koemorph(bad, "--model", env["ckpt"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "bad.wav" in err.decode() and "Traceback" not in err.decode()
    nan = np.full(4000, np.nan, dtype="<f4")
    proc = koemorph("-", "--model", env["ckpt"], "--format", "f32le", stdin=subprocess.PIPE)
    _, err = proc.communicate(nan.tobytes(), timeout=120)
    assert proc.returncode == 1 and "stdin: chunk 1:" in err.decode() and "NaN" in err.decode()
