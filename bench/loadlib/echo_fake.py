"""A lean OpenAI Realtime stand-in that echoes caller audio back, recording when.

Run: ``python -m loadlib.echo_fake --port P --out DIR`` (with ``bench/`` on the path). It
serves ``/v1/realtime?model=...`` on 127.0.0.1 and, per connection:

- greets with ``session.created``; answers each ``session.update`` with ``session.updated``
  (the session as updated, so a client waiting for the confirmation goes live);
- on the first ``input_audio_buffer.append`` opens a reply as the service does
  (``response.created``, ``response.output_item.added``, ``response.content_part.added``;
  the OpenAI provider only passes reply audio on inside a response) and from then on echoes
  every appended chunk at once as one ``response.output_audio.delta`` holding the same
  base64 text: no decoding, no re-encoding, no pacing;
- records, for every append, the cumulative count of 24 kHz samples received and its
  arrival time, and for every delta the cumulative count sent and the time just before the
  send (``time.monotonic()``, shared by every process).

The wire format is tests/fakes/openai_realtime.py's (the full fake); this one does only what
the load benchmark needs, so that its own CPU stays small next to the server's. The caller is
identified by the ``model`` query parameter (the benchmark gives each caller its own agent
whose model names the caller). On SIGTERM or SIGINT it closes its connections and writes one
``DIR/conn-<n>.npz`` per connection: ``model``, ``append_count``, ``append_time``,
``delta_count``, ``delta_time``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

BYTES_PER_SAMPLE = 2  # PCM16


@dataclass
class ConnectionRecord:
    index: int
    model: str
    append_count: list[int] = field(default_factory=list)
    append_time: list[float] = field(default_factory=list)
    delta_count: list[int] = field(default_factory=list)
    delta_time: list[float] = field(default_factory=list)

    def save(self, directory: Path) -> None:
        np.savez(
            directory / f"conn-{self.index:05d}.npz",
            model=np.array(self.model),
            append_count=np.array(self.append_count, dtype=np.int64),
            append_time=np.array(self.append_time, dtype=np.float64),
            delta_count=np.array(self.delta_count, dtype=np.int64),
            delta_time=np.array(self.delta_time, dtype=np.float64),
        )


def base64_decoded_size(text: str) -> int:
    """Bytes that base64 ``text`` decodes to, without decoding it."""
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    return len(text) // 4 * 3 - padding


class EchoFake:
    def __init__(self) -> None:
        self.records: list[ConnectionRecord] = []
        self._events = 0

    def _event_id(self) -> str:
        self._events += 1
        return f"event_{self._events}"

    async def _send_json(self, socket: ServerConnection, event: dict[str, object]) -> None:
        await socket.send(json.dumps({"event_id": self._event_id(), **event}))

    async def handle(self, socket: ServerConnection) -> None:
        path = socket.request.path if socket.request is not None else ""
        model = parse_qs(urlsplit(path).query).get("model", [""])[0]
        record = ConnectionRecord(index=len(self.records), model=model)
        self.records.append(record)
        session_id = f"sess_bench_{record.index}"
        session: dict[str, object] = {
            "id": session_id,
            "object": "realtime.session",
            "type": "realtime",
            "model": model,
            "output_modalities": ["audio"],
        }
        response_id = f"resp_bench_{record.index}"
        item_id = f"item_bench_{record.index}"
        # Everything of a delta but the audio and the event id, assembled once.
        delta_head = (
            f'{{"type":"response.output_audio.delta","response_id":"{response_id}",'
            f'"item_id":"{item_id}","output_index":0,"content_index":0,"event_id":"'
        )
        received = sent = 0
        replying = False
        try:
            await self._send_json(socket, {"type": "session.created", "session": session})
            async for message in socket:
                arrived = time.monotonic()
                if not isinstance(message, str):
                    continue
                event = json.loads(message)
                kind = event.get("type")
                if kind == "input_audio_buffer.append":
                    audio = event["audio"]
                    received += base64_decoded_size(audio) // BYTES_PER_SAMPLE
                    record.append_count.append(received)
                    record.append_time.append(arrived)
                    if not replying:
                        replying = True
                        await self._open_reply(socket, response_id, item_id)
                    sent = received
                    self._events += 1
                    frame = f'{delta_head}event_{self._events}","delta":"{audio}"}}'
                    record.delta_count.append(sent)
                    record.delta_time.append(time.monotonic())
                    await socket.send(frame)
                elif kind == "session.update":
                    update = event.get("session")
                    if isinstance(update, dict):
                        session.update(update)
                    await self._send_json(socket, {"type": "session.updated", "session": session})
        except ConnectionClosed:
            pass

    async def _open_reply(self, socket: ServerConnection, response_id: str, item_id: str) -> None:
        response = {
            "id": response_id,
            "object": "realtime.response",
            "status": "in_progress",
            "output": [],
            "output_modalities": ["audio"],
        }
        item = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        reference = {"response_id": response_id, "output_index": 0}
        await self._send_json(socket, {"type": "response.created", "response": response})
        await self._send_json(
            socket, {"type": "response.output_item.added", **reference, "item": item}
        )
        await self._send_json(
            socket,
            {
                "type": "response.content_part.added",
                **reference,
                "item_id": item_id,
                "content_index": 0,
                "part": {"type": "output_audio", "transcript": ""},
            },
        )


async def serve_until_stopped(port: int, out: Path) -> None:
    fake = EchoFake()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    async with serve(
        fake.handle, "127.0.0.1", port, compression=None, max_size=None, ping_interval=None
    ) as server:
        print("ready", flush=True)
        await stop.wait()
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()
    save(fake.records, out)


def save(records: list[ConnectionRecord], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for record in records:
        record.save(out)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve_until_stopped(args.port, args.out))


if __name__ == "__main__":
    main(sys.argv[1:])
