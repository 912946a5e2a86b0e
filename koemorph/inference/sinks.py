"""Where streamed frames go: JSONL on a text stream, OSC (VMC protocol), a WebSocket server.

Every sink takes :class:`koemorph.inference.stream.Frames` (``[n, 52]`` values in Apple order,
frame ``k`` at ``k / fps`` s from the utterance start) through ``send(frames)`` and is closed
with ``close()``. Values are clipped to [0, 1] and rounded to 6 decimals, as ``render`` writes them.

* :class:`JsonlSink`: one line per frame, ``{"timestamp": s, "blendshapes": [52 floats]}`` (the
  schema of ``koemorph render``'s JSONL), flushed after every batch.
* :class:`OscSink`: per frame, one OSC bundle (one UDP datagram) holding
  ``/VMC/Ext/Blend/Val <ARKit name> <value>`` for the 52 channels in Apple order, then
  ``/VMC/Ext/Blend/Apply`` (the VMC protocol's blendshape messages), encoded here (OSC 1.0);
  tests read them with python-osc's server.
* :class:`WebSocketSink`: a WebSocket server (websockets) on its own thread that broadcasts each
  frame as JSON, ``{"timestamp", "frame", "blendshapes": {name: value}}``, to every connected
  client; a client that disconnects or fails is dropped and the stream goes on.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading

import numpy as np

from koemorph.blendshapes import ARKIT_NAMES


def frame_rows(frames) -> list[tuple[int, float, list[float]]]:
    """``[(frame index, timestamp s, 52 values)]``: clipped to [0, 1], rounded to 6 decimals."""
    from koemorph.io.tracks.track import DECIMALS, clean_floats

    if not len(frames):
        return []
    values = clean_floats(np.clip(np.asarray(frames.values, np.float64), 0.0, 1.0), DECIMALS)
    times = clean_floats(frames.times, DECIMALS)
    return [(frames.start + i, t, row) for i, (t, row) in enumerate(zip(times, values))]


def parse_address(text: str, what: str, listen: bool = False) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``, or ValueError naming the option (``listen``: 0 = any port)."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 if listen else 1) <= int(port) < 65536:
        raise ValueError(f"{what}: expected HOST:PORT (e.g. 127.0.0.1:39539), got {text!r}")
    return host, int(port)


class JsonlSink:
    """JSONL lines on a text stream (default: stdout)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def send(self, frames) -> None:
        rows = frame_rows(frames)
        if rows:
            self.stream.write(
                "".join(
                    json.dumps({"timestamp": t, "blendshapes": r}, allow_nan=False) + "\n" for _, t, r in rows
                )
            )
            self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def _osc_string(text: str) -> bytes:
    """An OSC string: ASCII, NUL terminated, padded to a multiple of 4 bytes."""
    raw = text.encode("ascii") + b"\0"
    return raw + b"\0" * (-len(raw) % 4)


def _osc_element(content: bytes) -> bytes:
    return struct.pack(">i", len(content)) + content


# /VMC/Ext/Blend/Val <name: s> <value: f>: everything but the value is the same for every frame
_VAL_HEADS = [_osc_string("/VMC/Ext/Blend/Val") + _osc_string(",sf") + _osc_string(n) for n in ARKIT_NAMES]
_APPLY = _osc_element(_osc_string("/VMC/Ext/Blend/Apply") + _osc_string(","))
_BUNDLE_HEAD = _osc_string("#bundle") + struct.pack(">Q", 1)  # time tag 1: immediately


def vmc_bundle(row) -> bytes:
    """One OSC bundle for one frame: 52 ``/VMC/Ext/Blend/Val name value`` messages in Apple order,
    then ``/VMC/Ext/Blend/Apply`` (OSC 1.0 encoding: big-endian float32 values)."""
    parts = [_osc_element(head + struct.pack(">f", value)) for head, value in zip(_VAL_HEADS, row)]
    return _BUNDLE_HEAD + b"".join(parts) + _APPLY


class OscSink:
    """VMC blendshape messages over UDP to ``host:port``: one bundle (one datagram) per frame."""

    def __init__(self, host: str, port: int):
        self.address = (host, int(port))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)

    def send(self, frames) -> None:
        for _, _, row in frame_rows(frames):
            self.sock.sendto(vmc_bundle(row), self.address)

    def close(self) -> None:
        self.sock.close()


class WebSocketSink:
    """A WebSocket server on ``host:port`` (port 0: any free port, see :attr:`port`)."""

    def __init__(self, host: str, port: int):
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.clients: set = set()
        self.connected = threading.Condition()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, args=(host, int(port)), daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise OSError(f"--ws {host}:{port}: cannot listen: {self._error}") from self._error

    def _serve(self, host: str, port: int) -> None:
        import asyncio

        from websockets.asyncio.server import serve

        async def handler(ws):
            with self.connected:
                self.clients.add(ws)
                self.connected.notify_all()
            try:
                await ws.wait_closed()
            finally:
                self.clients.discard(ws)

        async def main():
            try:
                self.server = await serve(handler, host, port)
            except OSError as exc:
                self._error = exc
                self._ready.set()
                return
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()
            await self.server.wait_closed()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(main())

    def wait_for_clients(self, n: int, timeout: float | None = None) -> bool:
        """Block until ``n`` clients are connected (True) or ``timeout`` s pass (False)."""
        with self.connected:
            return self.connected.wait_for(lambda: len(self.clients) >= n, timeout)

    def send(self, frames) -> None:
        from websockets.asyncio.server import broadcast

        messages = [
            json.dumps({"timestamp": t, "frame": k, "blendshapes": dict(zip(ARKIT_NAMES, r))})
            for k, t, r in frame_rows(frames)
        ]
        if messages:
            self.loop.call_soon_threadsafe(self._broadcast, broadcast, messages)

    def _broadcast(self, broadcast, messages) -> None:
        for message in messages:
            broadcast(list(self.clients), message)  # skips closed clients; never raises for one

    def close(self) -> None:
        """Send what is queued, close every connection (code 1001, going away) and stop the server."""
        import asyncio

        async def shutdown():
            self.server.close(close_connections=True)
            await self.server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
            self._thread.join(timeout=10)
