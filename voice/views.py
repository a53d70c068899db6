"""Pages: the browser voice page and the live room view, plus the live view's JSON reads
and operator actions. Views authenticate and render; rules live in ``voice.admission`` and
the services."""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from rooms import services as room_services
from rooms.broadcast import binding_changed_message
from rooms.models import Access, ChannelBinding, Room, RoomEvent
from rooms.selectors import tenant_ids_for_user
from voice import services as voice_services
from voice.admission import Admission, Refusal, admit_token, admit_user, plan_voice
from voice.models import SessionState, VoiceSession
from voice.webrtc import ice_servers_for_clients

logger = logging.getLogger(__name__)

TIMELINE_PAGE = 200
EVENTS_PAGE_MAX = 500
BINDING_ACTIONS = ("mute", "unmute", "revoke", "restore")


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The start page: for a logged-in user, their tenants' rooms with the ways in."""
    rooms = (
        Room.objects.filter(tenant_id__in=tenant_ids_for_user(request.user))
        .select_related("tenant", "default_agent")
        .order_by("tenant__name", "key")[:100]
        if request.user.is_authenticated
        else []
    )
    return render(request, "home.html", {"rooms": rooms})


def _refused(request: HttpRequest, refusal: Refusal) -> HttpResponse:
    status = {"not_found": 404, "unauthenticated": 401}.get(refusal.code, 403)
    return render(request, "voice/refused.html", {"refusal": refusal}, status=status)


def _member(request: HttpRequest, room: str) -> Admission:
    return admit_user(room_ref=room, user=request.user)


@require_GET
def voice_page(request: HttpRequest, room: str) -> HttpResponse:
    """Talk to the room's agent: a member's login, or ``?token=`` for anyone holding one."""
    token = request.GET.get("token", "")
    agent_slug = request.GET.get("agent", "") or None
    if not token and not request.user.is_authenticated:
        # Perhaps a room link with the token in its fragment (#token=…, which browsers
        # never send, so it stays out of access logs): a page that names nothing and lets
        # the WebSocket decide; without a token its script sends the visitor to log in.
        agent_query = urlencode({"agent": agent_slug}) if agent_slug else ""
        gate: dict[str, Any] = {
            "room": None,
            "agent": None,
            "ws_path": f"/ws/rooms/{room}/voice/" + (f"?{agent_query}" if agent_query else ""),
            "webrtc_offer_path": reverse("voice:webrtc-offer", kwargs={"room": room}),
            "agent_slug": agent_slug or "",
            "ice_servers": ice_servers_for_clients(),
            "token_in_fragment": True,
            "login_url": f"{resolve_url(settings.LOGIN_URL)}?"
            + urlencode({"next": request.get_full_path()}, safe="/"),
        }
        gate_page = render(request, "voice/voice.html", gate)
        gate_page["Referrer-Policy"] = "no-referrer"
        return gate_page
    try:
        admission = admit_token(room_ref=room, token=token) if token else _member(request, room)
        plan = plan_voice(admission, agent_slug=agent_slug)
    except Refusal as refusal:
        return _refused(request, refusal)
    query = {"agent": plan.agent.slug}
    if token:
        query["token"] = token
    context = {
        "room": admission.room,
        "agent": plan.agent,
        "ws_path": f"/ws/rooms/{admission.room.pk}/voice/?{urlencode(query)}",
        # The page's WebRTC connection: the offer's URL, the agent and the STUN/TURN servers.
        "webrtc_offer_path": reverse("voice:webrtc-offer", kwargs={"room": admission.room.pk}),
        "agent_slug": plan.agent.slug,
        "ice_servers": ice_servers_for_clients(),
    }
    response = render(request, "voice/voice.html", context)
    if token:
        response["Referrer-Policy"] = "no-referrer"  # the token must not leak in a Referer
    return response


@require_GET
def live_view(request: HttpRequest, room: str) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    try:
        admission = _member(request, room)
    except Refusal as refusal:
        return _refused(request, refusal)
    the_room = admission.room
    events = list(RoomEvent.objects.filter(room=the_room).order_by("-index")[:TIMELINE_PAGE])[::-1]
    context: dict[str, Any] = {
        "room": the_room,
        "events": events,
        "last_index": the_room.last_event_index,
        "bindings": list(
            ChannelBinding.objects.filter(room=the_room).order_by("channel_id", "participant_id")
        ),
        "sessions": list(
            VoiceSession.objects.filter(room=the_room)
            .exclude(state=SessionState.ENDED)
            .select_related("agent")
            .order_by("created_at")
        ),
        "can_operate": the_room.tenant_id in tenant_ids_for_user(request.user, manage=True),
        "ws_path": f"/ws/rooms/{the_room.pk}/live/",
        "events_url": f"/rooms/{the_room.pk}/live/events/",
        "binding_action_url": f"/rooms/{the_room.pk}/live/bindings/BINDING_ID/ACTION/",
        "session_end_url": f"/rooms/{the_room.pk}/live/sessions/SESSION_ID/end/",
    }
    return render(request, "voice/live.html", context)


def _event_json(event: RoomEvent) -> dict[str, Any]:
    return {
        "event_id": str(event.pk),
        "index": event.index,
        "kind": event.kind,
        "role": event.role,
        "text": event.text,
        "status": event.status,
        "session_id": str(event.session_id) if event.session_id else None,
        "channel_id": event.channel_id,
        "participant_id": event.participant_id,
        "occurred_at": event.occurred_at.isoformat(),
    }


def _json_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _member_for_json(request: HttpRequest, room: str) -> Admission | JsonResponse:
    """The member's admission to the room, or the JSON error to answer with."""
    if not request.user.is_authenticated:
        return _json_error("log in first", 401)
    try:
        return _member(request, room)
    except Refusal as refusal:
        return _json_error(refusal.message, 404 if refusal.code == "not_found" else 403)


@require_GET
def live_events(request: HttpRequest, room: str) -> JsonResponse:
    """``?after=N``: the room's timeline events after index N, oldest first (a page)."""
    admission = _member_for_json(request, room)
    if isinstance(admission, JsonResponse):
        return admission
    try:
        after = int(request.GET.get("after", "0"))
    except ValueError:
        return _json_error("'after' must be an integer", 400)
    events = RoomEvent.objects.filter(room=admission.room, index__gt=after).order_by("index")
    return JsonResponse({"events": [_event_json(event) for event in events[:EVENTS_PAGE_MAX]]})


@require_POST
def binding_action(
    request: HttpRequest, room: str, binding_id: uuid.UUID, action: str
) -> JsonResponse:
    """An operator mutes, unmutes, revokes or restores a participant (through the services;
    the change reaches live sessions and observers over the room's group)."""
    admission = _member_for_json(request, room)
    if isinstance(admission, JsonResponse):
        return admission
    if admission.tenant.pk not in tenant_ids_for_user(request.user, manage=True):
        return _json_error("only the tenant's owners and admins can change participants", 403)
    if action not in BINDING_ACTIONS:
        return _json_error(f"unknown action {action[:40]!r}", 400)
    binding = ChannelBinding.objects.filter(pk=binding_id, room=admission.room).first()
    if binding is None:
        return _json_error("no such participant binding in this room", 404)
    tenant = admission.tenant
    try:
        if action in ("mute", "unmute"):
            binding = room_services.binding_set_muted(
                tenant=tenant, binding=binding, muted=action == "mute"
            )
        else:
            access = Access.NONE if action == "revoke" else Access.READ_WRITE
            binding = room_services.binding_set_access(
                tenant=tenant, binding=binding, access=access
            )
    except ValidationError as error:
        return _json_error("; ".join(error.messages), 400)
    logger.info("operator %s: %s binding %s", request.user.pk, action, binding.pk)
    message = binding_changed_message(binding)
    message.pop("type")
    message.pop("room_id")
    return JsonResponse(message)


@require_POST
def session_end(request: HttpRequest, room: str, session_id: uuid.UUID) -> JsonResponse:
    """An operator ends a live session (its host ends it and records why)."""
    admission = _member_for_json(request, room)
    if isinstance(admission, JsonResponse):
        return admission
    if admission.tenant.pk not in tenant_ids_for_user(request.user, manage=True):
        return _json_error("only the tenant's owners and admins can end sessions", 403)
    if not VoiceSession.objects.filter(pk=session_id, room=admission.room).exists():
        return _json_error("no such session in this room", 404)
    requested = voice_services.voice_session_request_end(
        tenant=admission.tenant, session_id=session_id
    )
    if not requested:
        return _json_error("the session has already ended", 409)
    logger.info("operator %s: end session %s", request.user.pk, session_id)
    return JsonResponse({"session_id": str(session_id), "end_requested": True})
