"""WebRTC signalling over HTTP, and hosting a room's agent session for each WebRTC peer.

``mount_webrtc(path, auth=..., transport=...)`` returns the URL patterns to add to a
URLconf (``urlpatterns += mount_webrtc(...)``):

- ``POST <path>offer/`` with ``{"sdp": "<offer>", "type": "offer", "agent"?: slug,
  "token"?: room token}`` → ``201 {"type": "answer", "sdp": ..., "peer_id": ...,
  "peer_url": ...}``. The answer holds all our ICE candidates (gathered), so a client may
  POST as soon as it has an offer and trickle its own candidates afterwards.
- ``PATCH <peer_url>`` with ``{"candidates": [{candidate, sdpMid, sdpMLineIndex}, ...]}``
  (an empty ``candidate`` marks the end of candidates) → 204.
- ``DELETE <peer_url>`` → 204: the caller hangs up.

Errors are JSON, ``{"type": "error", "code": ..., "message": ...}``, with the WebSocket
protocol's codes and the HTTP status that fits (400, 401, 403, 404, 503).

Two modes:

- **Rooms** (the default, mounted at ``/rooms/<room>/webrtc/``): a caller is admitted as on
  the WebSocket — a tenant member's login (with Django's CSRF check), a room token, or the
  ``ROOMVOICE_VOICE_AUTHENTICATE`` hook (or ``auth``) — and the room's agent session starts
  for the peer right away (the provider connects while ICE completes). This process hosts
  the session on the channel layer like a WebSocket consumer does: an operator's end or
  reconfigure and Celery tool results reach it.
- **Your own** (the seed's ``mount_fastrtc_realtime``): pass ``transport=`` a
  :class:`~voice.transports.webrtc.WebRTCRealtimeTransport` whose ``on_client_connected``
  starts the session you want, and ``auth=`` an ``async def auth(request) -> dict | None``
  (None refuses; the dict becomes the peer's metadata).

Peers live in the ASGI server's event loop, so this needs the ASGI server (daphne, uvicorn);
a peer id is a 128-bit random capability known only to the caller that made the offer.

When the server stops, :func:`close_gateways` ends every live call (``server_shutdown``,
recorded) and closes its peer connection: aiortc's decoder threads are not daemons, so an
open peer would keep the process from exiting. Under uvicorn the ASGI lifespan's shutdown
calls it (``roomvoice.asgi``); daphne has no lifespan, so the first call under Twisted's
reactor adds a "before shutdown" trigger that calls it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import sys
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from functools import cache
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import URLPattern, path, reverse
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

from roomvoice.lib.logging import log_context
from voice.admission import (
    Admission,
    Refusal,
    VoicePlan,
    admit_hook,
    admit_token,
    admit_user,
    plan_voice,
    room_for_hook,
)
from voice.agents import channel_for_agent
from voice.control import RoomControlListener
from voice.django_store import DjangoStore
from voice.host import serve_host_channel
from voice.models import EndReason, TransportKind
from voice.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNAVAILABLE,
)
from voice.session import LiveSession
from voice.transports.webrtc import (
    PeerRefused,
    WebRTCGateway,
    WebRTCPeer,
    WebRTCRealtimeTransport,
)
from voice.transports.websocket import run_authenticate

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 80 * 1024
MAX_CANDIDATES = 64
SUBSCRIBE_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 5.0  # the most a server's shutdown waits for its calls to end
HTTP_STATUS = {
    CLOSE_UNAUTHENTICATED: 401,
    CLOSE_FORBIDDEN: 403,
    CLOSE_NOT_FOUND: 404,
    CLOSE_UNAVAILABLE: 503,
}

Auth = Callable[[Any], Awaitable[dict[str, Any] | None]]

_gateways: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WebRTCGateway] = (
    weakref.WeakKeyDictionary()
)
#: The gateways of the transports mounted with ``mount_webrtc(transport=...)``.
_mounted_gateways: weakref.WeakSet[WebRTCGateway] = weakref.WeakSet()
_background: set[asyncio.Task[Any]] = set()
#: The event loops whose Twisted reactor closes the gateways before it stops (daphne's).
_reactor_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def gateway() -> WebRTCGateway:
    """This process's gateway for room calls, from the ``ROOMVOICE_WEBRTC_*`` settings (one
    per event loop: a server has one; tests have one per test)."""
    loop = asyncio.get_running_loop()
    found = _gateways.get(loop)
    if found is None:
        found = WebRTCGateway(
            ice_servers=settings.ROOMVOICE_WEBRTC_ICE_SERVERS,
            max_peers=settings.ROOMVOICE_WEBRTC_MAX_PEERS,
            connect_timeout_s=settings.ROOMVOICE_WEBRTC_CONNECT_TIMEOUT_S,
            media_timeout_s=settings.ROOMVOICE_WEBRTC_MEDIA_TIMEOUT_S,
        )
        _gateways[loop] = found
        _close_at_reactor_shutdown()
    return found


async def close_gateways(*, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """The server is stopping: close this event loop's gateways, so that every live call's
    session ends as ``server_shutdown`` (recorded) and its peer connection closes, then let
    the calls' hosts finish. At most ``timeout_s``; never raises."""
    loop = asyncio.get_running_loop()
    candidates = [_gateways.get(loop), *_mounted_gateways]
    live = [found for found in dict.fromkeys(candidates) if found is not None and found.peers]
    if live:
        logger.info(
            "the server is shutting down: ending %d WebRTC call(s)",
            sum(len(found.peers) for found in live),
        )
    try:
        async with asyncio.timeout(timeout_s):
            results = await asyncio.gather(
                *(found.close() for found in live), return_exceptions=True
            )
            for result in results:
                if isinstance(result, Exception):
                    logger.error("closing a WebRTC gateway failed", exc_info=result)
            # The hosts' own cleanup: the room's control listener, the channel layer.
            hosts = [task for task in _background if task.get_loop() is loop]
            await asyncio.gather(*hosts, return_exceptions=True)
    except TimeoutError:
        logger.warning("WebRTC calls still ending after %g s: shutting down anyway", timeout_s)


def _close_at_reactor_shutdown() -> None:
    """Under daphne (Twisted's asyncio reactor running this loop; no ASGI lifespan): close
    the gateways before the reactor stops, which waits for the Deferred. Added once."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor as installed
    from twisted.internet.defer import Deferred

    # Typed as zope interfaces, whose method signatures mypy misreads.
    reactor: Any = installed
    loop = asyncio.get_running_loop()
    if not reactor.running or getattr(reactor, "_asyncioEventloop", None) is not loop:
        return  # imported (daphne's app installs it) but not what runs this loop
    if loop in _reactor_loops:
        return
    _reactor_loops.add(loop)

    def before_shutdown() -> Deferred[None]:
        task = loop.create_task(
            close_gateways(), name="webrtc-shutdown", context=contextvars.Context()
        )
        return Deferred.fromFuture(task)

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)


def ice_servers_for_clients() -> list[dict[str, Any]]:
    """What the browser's ``RTCPeerConnection`` is given (the voice page's data)."""
    return list(settings.ROOMVOICE_WEBRTC_ICE_SERVERS)


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"type": "error", "code": code, "message": message}, status=status)


def _refusal_response(refusal: Refusal) -> JsonResponse:
    status = HTTP_STATUS.get(refusal.close_code, 400 if refusal.code == "bad_request" else 403)
    if refusal.code == "internal_error":
        status = 500
    return _error(status, refusal.code, refusal.message)


def _body(request: HttpRequest) -> dict[str, Any]:
    if len(request.body) > MAX_BODY_BYTES:
        raise Refusal(4400, "bad_request", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise Refusal(4400, "bad_request", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Refusal(4400, "bad_request", "the body must be a JSON object")
    return body


@cache
def _settings_hook() -> Any:
    dotted = getattr(settings, "ROOMVOICE_VOICE_AUTHENTICATE", "")
    return import_string(dotted) if dotted else None


def _spawn(coroutine: Coroutine[Any, Any, Any], name: str) -> None:
    """A task that outlives the request: in a context of its own, as the request's (asgiref's
    per-request thread for database calls among it) ends with the response."""
    task = asyncio.get_running_loop().create_task(
        coroutine, name=name, context=contextvars.Context()
    )
    _background.add(task)
    task.add_done_callback(_background_done)


def _background_done(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed", task.get_name(), exc_info=task.exception())


def _csrf_refusal(request: HttpRequest) -> HttpResponse | None:
    """Django's CSRF check, for callers that rely on the session cookie."""
    return CsrfViewMiddleware(lambda _request: HttpResponse()).process_view(
        request, lambda _request: HttpResponse(), (), {}
    )


async def _admit(
    request: HttpRequest, room_ref: str, body: dict[str, Any], auth: Auth | None
) -> Admission:
    """The WebSocket's admission rules, over HTTP: a room token, a member's login (CSRF
    checked), else the authenticate hook."""
    from voice.consumers import ConnectionRequest

    token = body.get("token") or request.GET.get("token")
    if token is not None and not isinstance(token, str):
        raise Refusal(4400, "bad_request", "'token' must be a string")
    admission: Admission
    if token:
        admission = await database_sync_to_async(admit_token)(room_ref=room_ref, token=token)
        return admission
    user = await request.auser()
    if user.is_authenticated:
        if _csrf_refusal(request) is not None:
            raise Refusal(CLOSE_FORBIDDEN, "forbidden", "the CSRF check failed: reload the page")
        admission = await database_sync_to_async(admit_user)(room_ref=room_ref, user=user)
        return admission
    hook = auth or _settings_hook()
    if hook is None:
        raise Refusal(CLOSE_UNAUTHENTICATED, "unauthenticated", "log in or use a room token")
    room = await database_sync_to_async(room_for_hook)(room_ref=room_ref)
    connection = ConnectionRequest(
        scope=getattr(request, "scope", {}),
        room=room,
        headers={name.lower(): value for name, value in request.headers.items()},
        query={name: request.GET[name] for name in request.GET},
    )
    try:
        granted = await run_authenticate(hook, connection)
    except PermissionError as error:
        raise Refusal(CLOSE_UNAUTHENTICATED, "unauthenticated", str(error)) from None
    return admit_hook(room=room, granted=granted)


def mount_webrtc(
    path_prefix: str = "webrtc/",
    *,
    auth: Auth | None = None,
    transport: WebRTCRealtimeTransport | None = None,
    name: str = "webrtc",
) -> list[URLPattern]:
    """URL patterns for WebRTC signalling at ``path_prefix`` (see the module docstring).

    Without ``transport``, ``path_prefix`` must capture the room (``"<room:room>/webrtc/"``
    in ``voice.urls``, or ``"<str:room>/..."``) and each peer gets the room's agent session;
    ``auth`` then admits callers who have neither a login nor a room token (as the
    ``ROOMVOICE_VOICE_AUTHENTICATE`` hook does). With ``transport``, ``auth`` is required
    and ``transport.on_client_connected`` starts each peer's session.
    """
    if transport is None and "<" not in path_prefix:
        raise ImproperlyConfigured(
            "mount_webrtc without a transport hosts rooms: the path must capture <room>"
        )
    if transport is not None and auth is None:
        raise ImproperlyConfigured(
            "mount_webrtc(transport=...) needs auth=: async def auth(request) -> dict | None"
        )
    if not path_prefix.endswith("/"):
        path_prefix += "/"
    if transport is not None:
        _mounted_gateways.add(transport.gateway)

    @csrf_exempt
    async def offer(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return _error(405, "bad_request", "POST an SDP offer")
        if not hasattr(request, "scope"):
            return _error(501, "unavailable", "WebRTC needs the ASGI server (daphne, uvicorn)")
        try:
            body = _body(request)
            if transport is not None:
                return await _custom_offer(request, body, transport, auth, kwargs)
            return await _room_offer(request, body, str(kwargs["room"]), auth)
        except Refusal as refusal:
            logger.info("WebRTC offer refused: %s (%s)", refusal.code, refusal.message)
            return _refusal_response(refusal)
        except PeerRefused as refused:
            logger.info("WebRTC offer refused: %s (%s)", refused.code, refused.message)
            return _error(refused.status, refused.code, refused.message)
        except Exception:
            logger.exception("a WebRTC offer could not be answered")
            return _error(500, "internal_error", "the server could not start the call")

    @csrf_exempt
    async def peer_view(request: HttpRequest, peer_id: str, **kwargs: Any) -> HttpResponse:
        gw = transport.gateway if transport is not None else gateway()
        peer = gw.peer(peer_id)
        room = kwargs.get("room")
        if peer is None or (room is not None and peer.metadata.get("room_ref") != str(room)):
            return _error(404, "not_found", "no such call (it ended, or never started)")
        if request.method == "DELETE":
            peer.mark_lost(EndReason.ENDED_BY_CALLER, "the caller hung up")
            return HttpResponse(status=204)
        if request.method != "PATCH":
            return _error(405, "bad_request", "PATCH candidates, or DELETE to hang up")
        try:
            body = _body(request)
            candidates = body.get("candidates")
            if "candidate" in body:
                candidates = [body]
            if not isinstance(candidates, list) or len(candidates) > MAX_CANDIDATES:
                raise Refusal(
                    4400, "bad_request", f"'candidates' must be a list of at most {MAX_CANDIDATES}"
                )
            for candidate in candidates:
                await gw.add_candidate(peer, candidate)
        except Refusal as refusal:
            return _refusal_response(refusal)
        except ValueError as error:
            return _error(400, "bad_request", str(error))
        return HttpResponse(status=204)

    return [
        path(f"{path_prefix}offer/", offer, name=f"{name}-offer"),
        path(f"{path_prefix}<slug:peer_id>/", peer_view, name=f"{name}-peer"),
    ]


async def _custom_offer(
    request: HttpRequest,
    body: dict[str, Any],
    transport: WebRTCRealtimeTransport,
    auth: Auth | None,
    kwargs: dict[str, Any],
) -> HttpResponse:
    assert auth is not None
    try:
        granted = await run_authenticate(auth, request)
    except PermissionError as error:
        raise Refusal(CLOSE_UNAUTHENTICATED, "unauthenticated", str(error)) from None
    callback = transport.gateway.on_client_connected
    if callback is None:
        raise Refusal(CLOSE_UNAVAILABLE, "unavailable", "no on_client_connected handler is set")
    peer = await transport.gateway.answer(body.get("sdp"), metadata={**kwargs, **granted})
    _close_at_reactor_shutdown()

    async def connected() -> None:
        result = callback(peer)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result

    _spawn(connected(), f"webrtc-connected-{peer.id[:8]}")
    return _answer_response(request, peer, name=None)


async def _room_offer(
    request: HttpRequest, body: dict[str, Any], room_ref: str, auth: Auth | None
) -> HttpResponse:
    agent = body.get("agent") or request.GET.get("agent") or None
    if agent is not None and not isinstance(agent, str):
        raise Refusal(4400, "bad_request", "'agent' must be an agent's slug")
    admission: Admission = await _admit(request, room_ref, body, auth)
    plan: VoicePlan = await database_sync_to_async(plan_voice)(admission, agent_slug=agent)
    peer = await gateway().answer(
        body.get("sdp"),
        metadata={"room_ref": room_ref, "participant_id": admission.participant_id},
    )
    _spawn(host_peer(plan, peer), f"webrtc-host-{peer.id[:8]}")
    return _answer_response(request, peer, name="voice:webrtc-peer", room=room_ref)


def _answer_response(
    request: HttpRequest, peer: WebRTCPeer, *, name: str | None, room: str | None = None
) -> JsonResponse:
    peer_url = ""
    if name is not None:
        peer_url = reverse(name, kwargs={"room": room, "peer_id": peer.id})
    else:
        peer_url = request.path.rsplit("offer/", 1)[0] + f"{peer.id}/"
    return JsonResponse(
        {"type": "answer", "sdp": peer.answer_sdp, "peer_id": peer.id, "peer_url": peer_url},
        status=201,
    )


async def host_peer(plan: VoicePlan, peer: WebRTCPeer) -> None:
    """The room's agent session for ``peer``, hosted here until the peer is gone: the
    session's host channel on the channel layer (end, reconfigure, tool results), the
    room's control events, and the end when the peer is lost (with why) or the session
    ends (which closes the peer)."""
    admission = plan.admission
    room_id = str(admission.room.pk)
    layer = get_channel_layer()
    host_name = str(await layer.new_channel()) if layer is not None else ""
    store = DjangoStore(
        tenant=admission.tenant,
        agent=plan.agent,
        transport=TransportKind.WEBRTC,
        host_channel_name=host_name,
    )
    transport = WebRTCRealtimeTransport(gateway=peer.gateway)
    voice = channel_for_agent(plan.config, transport=transport, store=store, provider=plan.provider)
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coroutine: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        tasks.add(task)

    async def peer_lost(session: LiveSession, reason: str, detail: str) -> None:
        await voice.end_session(session, reason=reason, detail=detail)

    transport.on_peer_lost = peer_lost
    session: LiveSession | None = None
    with log_context(room=room_id, participant=admission.participant_id, peer=peer.id[:8]):
        try:
            listener = RoomControlListener(voice, room_uuid=room_id, room_id=room_id)
            spawn(listener.run(), "webrtc-control")
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                    await listener.wait_subscribed()
            except TimeoutError:
                logger.error("room control subscription timed out: refusing the WebRTC call")
                peer.send_text(
                    json.dumps(
                        {
                            "type": "error",
                            "code": "unavailable",
                            "message": "the server cannot take calls right now",
                        }
                    )
                )
                await peer.close()
                return
            metadata: dict[str, Any] = {"via": admission.via, **admission.metadata}
            if admission.permissions is not None:
                metadata["permissions"] = sorted(admission.permissions)
            try:
                session = await voice.start_session(
                    room_id, admission.participant_id, connection=peer, metadata=metadata
                )
            except Exception:
                # The engine told the caller (data channel), recorded it and closed the peer.
                logger.info("WebRTC session did not start", exc_info=True)
                return
            if layer is not None and host_name:
                started = session

                async def on_end(reason: str) -> None:
                    await voice.end_session(started, reason=reason)

                spawn(serve_host_channel(layer, host_name, voice, session, on_end=on_end), "host")
            await peer.gone.wait()
        finally:
            if session is not None:
                # Ends it if still live; waits for an end another task is making.
                await voice.end_session(session, reason=EndReason.INTERNAL_ERROR)
            await peer.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await voice.close()
            await database_sync_to_async(close_old_connections)()
