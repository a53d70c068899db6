"""The floor: a minimal relay between callers and the echo fake, doing only unavoidable work.

Run: ``python -m loadlib.floor --port P --upstream ws://127.0.0.1:F/v1`` (``bench/`` on the
path). It speaks the subset of docs/protocol.md the load generator uses: a caller connects
to ``/ws/rooms/<caller>/voice/?sample_rate=16000&audio_format=binary|base64_json``, gets
``session_started`` once the upstream session is confirmed, then audio flows both ways:

- caller → upstream: a binary frame is the PCM itself; a text frame is JSON parsed for its
  base64 ``data``; the PCM goes through a ``voice.audio.StreamResampler`` (16 → 24 kHz, the
  quality the server uses), is base64-encoded and sent as ``input_audio_buffer.append``;
- upstream → caller: every frame is JSON-parsed; a ``response.output_audio.delta`` is
  base64-decoded, resampled 24 → 16 kHz and sent as a binary frame or base64 JSON.

One upstream WebSocket per caller, one asyncio task per direction, the default event loop:
what any server relaying this protocol must do per frame, and nothing else (no access
checks, queues, levels, hooks or transcripts). The server's figures are divided by these.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import sys
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from voice.audio import StreamResampler

UPSTREAM_RATE = 24000
SESSION_UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": UPSTREAM_RATE}},
                "output": {"format": {"type": "audio/pcm", "rate": UPSTREAM_RATE}},
            },
        },
    }
)


class Floor:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")

    async def handle(self, client: ServerConnection) -> None:
        path = client.request.path if client.request is not None else ""
        parts = urlsplit(path)
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        segments = [segment for segment in parts.path.split("/") if segment]
        caller = segments[2] if len(segments) >= 3 else "caller"
        rate = int(query.get("sample_rate", "16000"))
        binary = query.get("audio_format", "base64_json") == "binary"
        url = f"{self.upstream}/realtime?{urlencode({'model': caller})}"
        async with connect(
            url,
            additional_headers={"Authorization": "Bearer sk-bench-floor"},
            compression=None,
            max_size=None,
            ping_interval=None,
        ) as upstream:
            await upstream.send(SESSION_UPDATE)
            async for message in upstream:
                if json.loads(message).get("type") == "session.updated":
                    break
            started = {
                "type": "session_started",
                "session_id": caller,
                "sample_rate": rate,
                "audio_format": "binary" if binary else "base64_json",
                "turn_detection": "provider",
            }
            await client.send(json.dumps(started))
            tasks = [
                asyncio.create_task(self._caller_to_upstream(client, upstream, rate)),
                asyncio.create_task(self._upstream_to_caller(upstream, client, rate, binary)),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _caller_to_upstream(
        self, client: ServerConnection, upstream: ClientConnection, rate: int
    ) -> None:
        resampler = StreamResampler(rate, UPSTREAM_RATE)
        with contextlib.suppress(ConnectionClosed):
            async for message in client:
                if isinstance(message, bytes):
                    pcm = message
                else:
                    event = json.loads(message)
                    if event.get("type") != "audio":
                        continue
                    pcm = base64.b64decode(event["data"], validate=True)
                out = resampler.process(pcm)
                if out:
                    encoded = base64.b64encode(out).decode("ascii")
                    await upstream.send(
                        '{"type":"input_audio_buffer.append","audio":"' + encoded + '"}'
                    )

    async def _upstream_to_caller(
        self, upstream: ClientConnection, client: ServerConnection, rate: int, binary: bool
    ) -> None:
        resampler = StreamResampler(UPSTREAM_RATE, rate)
        with contextlib.suppress(ConnectionClosed):
            async for message in upstream:
                event = json.loads(message)
                if event.get("type") != "response.output_audio.delta":
                    continue
                out = resampler.process(base64.b64decode(event["delta"], validate=True))
                if not out:
                    continue
                if binary:
                    await client.send(out)
                else:
                    encoded = base64.b64encode(out).decode("ascii")
                    await client.send('{"type":"audio","data":"' + encoded + '"}')


async def serve_until_stopped(port: int, upstream: str) -> None:
    floor = Floor(upstream)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    async with serve(
        floor.handle, "127.0.0.1", port, compression=None, max_size=None, ping_interval=None
    ):
        print("ready", flush=True)
        await stop.wait()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. ws://127.0.0.1:8765/v1")
    args = parser.parse_args(argv)
    asyncio.run(serve_until_stopped(args.port, args.upstream))


if __name__ == "__main__":
    main(sys.argv[1:])
