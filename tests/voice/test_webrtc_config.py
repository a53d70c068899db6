"""ICE server configuration: the environment variable and the transport's parser."""

from __future__ import annotations

import json

import pytest

from roomvoice.lib.env import EnvError, env_ice_servers
from voice.transports.webrtc import WebRTCGateway, parse_ice_servers

GOOD = [
    {"urls": "stun:stun.example.com:3478"},
    {"urls": ["turn:turn.example.com:3478?transport=udp"], "username": "u", "credential": "p"},
]


def test_ice_servers_from_the_environment() -> None:
    assert env_ice_servers("ICE", environ={}) == []
    assert env_ice_servers("ICE", environ={"ICE": json.dumps(GOOD)}) == GOOD


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        json.dumps({"urls": "stun:x"}),
        json.dumps([{"urls": "http://x"}]),
        json.dumps([{"urls": []}]),
        json.dumps([{"urls": "turn:x", "username": 5}]),
        json.dumps([{"urls": "turn:x", "password": "secret-credential"}]),
    ],
)
def test_bad_ice_servers_stop_start_up_without_echoing_credentials(value: str) -> None:
    with pytest.raises(EnvError) as raised:
        env_ice_servers("ICE", environ={"ICE": value})
    assert "secret-credential" not in str(raised.value)
    assert "ICE" in str(raised.value)


def test_the_transport_builds_aiortc_servers() -> None:
    servers = parse_ice_servers(GOOD)
    assert [server.urls for server in servers] == [
        ["stun:stun.example.com:3478"],
        ["turn:turn.example.com:3478?transport=udp"],
    ]
    assert servers[1].username == "u"
    assert servers[1].credential == "p"
    with pytest.raises(ValueError, match="stun:/turn:"):
        parse_ice_servers([{"urls": "ftp://x"}])
    with pytest.raises(ValueError, match="max_peers"):
        WebRTCGateway(max_peers=0)


@pytest.mark.asyncio
async def test_the_watchdog_rules() -> None:
    """When a peer counts as lost: never connected, disconnected too long, no audio."""
    from aiortc import RTCPeerConnection

    from voice.transports.webrtc import WebRTCPeer, _Timeouts

    timeouts = _Timeouts(connect_s=30, disconnected_grace_s=5, media_s=20)
    gateway = WebRTCGateway()
    peers = [WebRTCPeer(gateway, RTCPeerConnection(), {}) for _ in range(4)]
    never, dropped, silent, fine = peers
    start = never.created

    never.check(start + 29, timeouts)
    assert never.lost is None
    never.check(start + 31, timeouts)
    assert never.lost is not None and never.lost[0] == "timeout"

    dropped.connected_once = True
    dropped.last_audio = dropped.created + 10
    dropped.disconnected_at = dropped.created + 10
    dropped.check(dropped.created + 14, timeouts)
    assert dropped.lost is None  # a short disconnection (a network change) is survived
    dropped.check(dropped.created + 16, timeouts)
    assert dropped.lost == ("transport_error", "the connection stayed disconnected for 5 s")

    silent.connected_once = True
    silent.last_audio = silent.created + 1
    silent.check(silent.created + 22, timeouts)
    assert silent.lost == ("timeout", "no audio from the caller for 20 s")

    fine.connected_once = True
    fine.last_audio = fine.created + 100
    fine.check(fine.created + 110, timeouts)
    assert fine.lost is None
    for peer in peers:
        await peer.close()
