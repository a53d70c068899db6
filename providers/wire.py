"""What every WebSocket provider needs the same way: opening the vendor's socket with its
failures turned into clear ``ProviderError``s, and the bounded buffer that holds caller
audio while a vendor session is being replaced."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from providers.base import ProviderError
from providers.config import ProviderConfig, ProviderConfigError, config_to_dict, validate_config

__all__ = ["GapAudio", "checked_config", "open_socket"]

CONNECT_TIMEOUT_S = 15.0


async def open_socket(
    url: str,
    *,
    headers: dict[str, str],
    vendor: str,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> ClientConnection:
    """Connect; a refused handshake or an unreachable host raises a fatal ProviderError
    (``invalid_api_key`` when the vendor refused the key: 401/403, or a 400 whose body says
    so, as xAI answers). Neither the URL's query nor the headers are put in the message."""
    try:
        return await asyncio.wait_for(
            websockets.connect(url, additional_headers=headers, max_size=None, compression=None),
            timeout=timeout_s,
        )
    except websockets.InvalidStatus as error:
        status = error.response.status_code
        body = bytes(error.response.body or b"")[:2000].decode("utf-8", "replace")
        bad_key = status in (401, 403) or (status == 400 and "api key" in body.lower())
        code = "invalid_api_key" if bad_key else f"http_{status}"
        reason = "the API key was refused" if bad_key else f"HTTP {status}"
        raise ProviderError(
            code, f"{vendor} refused the connection ({reason})", fatal=True
        ) from None
    except (OSError, TimeoutError, websockets.WebSocketException) as error:
        raise ProviderError(
            "connect_failed", f"cannot reach {vendor}: {type(error).__name__}", fatal=True
        ) from None


def checked_config(
    schema: type[ProviderConfig], provider_config: Any, *, fatal: bool
) -> dict[str, Any]:
    """``provider_config`` validated against the vendor's schema, as the keys set; an
    invalid one is a ProviderError ``invalid_config`` naming every bad field."""
    try:
        return config_to_dict(validate_config(schema, provider_config))
    except ProviderConfigError as error:
        raise ProviderError("invalid_config", str(error), fatal=fatal) from None


class GapAudio:
    """Caller audio kept while the vendor session is replaced: at most ``max_bytes``; when
    full, the oldest audio is dropped (what the caller says now matters most), and counted."""

    __slots__ = ("_chunks", "dropped_bytes", "max_bytes", "size")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: deque[bytes] = deque()
        self.size = 0
        self.dropped_bytes = 0

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def push(self, data: bytes) -> None:
        self._chunks.append(data)
        self.size += len(data)
        while self.size > self.max_bytes and self._chunks:
            dropped = self._chunks.popleft()
            self.size -= len(dropped)
            self.dropped_bytes += len(dropped)

    def drain(self) -> Iterator[bytes]:
        """The kept audio, oldest first, each chunk removed as it is handed out."""
        while self._chunks:
            data = self._chunks.popleft()
            self.size -= len(data)
            yield data

    def take_dropped(self) -> int:
        """Bytes dropped since the last call."""
        dropped, self.dropped_bytes = self.dropped_bytes, 0
        return dropped
