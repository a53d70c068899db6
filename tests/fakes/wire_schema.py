"""Schema checks for realtime provider frames, built on the official ``openai`` typed models.

Tests use these to check that what our providers put on the wire is what the vendor's API
accepts, and that what our fakes answer is what the vendor sends. The facts come from
/work/shared/reference/provider-protocols.md (sections 1.9, 3.3 and 5); the code is ours.

* :func:`validate_openai_client_event`: one OpenAI Realtime (GA) client frame, against the
  ``openai`` package's ``RealtimeClientEvent`` union (``openai==3.54.0``, tests only).
* :func:`validate_xai_client_event`: one xAI Grok Voice Agent client frame: the same union,
  with ``session.update`` checked against xAI's own session shape (section 3.3).
* :func:`validate_openai_server_event`: one OpenAI Realtime (GA) server frame; unknown fields
  are returned as warnings (the real service sends fields the request models lack).
* :func:`validate_gemini_client_message` / :func:`validate_gemini_server_message`: one Gemini
  Live (BidiGenerateContent) frame, against ``google.genai.types.LiveClientMessage`` /
  ``LiveServerMessage`` (``google-genai==3.4.0``, tests only), with the one patch the SDK
  needs (section 2.7, see the Gemini section below).
* :func:`validate_elevenlabs_client_message` / :func:`validate_elevenlabs_server_message`: one
  ElevenLabs Agents (convai) frame, against models transcribed from the official AsyncAPI
  contract and the ``elevenlabs`` SDK's override models (section 4.5).

Each takes the raw text (or bytes) of ONE WebSocket text frame and raises
:class:`WireSchemaError` naming the event type and every problem with its JSON path.

Two things the ``openai`` models do not do by themselves, and these functions add:

* The models are ``extra="allow"``, so a beta field in a GA frame (``session.voice``,
  ``session.input_audio_format``) passes pydantic. Client frames are ours, so every field the
  typed models do not know is an error: the validated model tree is walked for
  ``model_extra`` keys (:func:`unknown_fields`).
* The SDK's unions carry ``PropertyInfo(discriminator="type")``, which pydantic ignores; most
  nested unions (``session``, ``item``, audio formats) are then tried member by member and a
  bad frame yields one error per member. The top level is wrapped in
  ``Field(discriminator="type")``. For nested unions, the errors of members the frame
  plainly did not mean are dropped: a member it is not even an object for, then one whose
  ``type``, then ``role``, does not match, as long as another member fits better. The
  message then names the real problem
  (``$.session.audio.input.format.rate: Input should be 24000``); when several members are
  left, each line says which (``$.item<RealtimeConversationItemUserMessage>.role``).

OpenAI, xAI and ElevenLabs frames are validated in pydantic's strict JSON mode: ``"1500"`` is
not an integer and ``1`` is not a string (lax mode would coerce both; what we send should need
no coercion; Gemini's base64 ``bytes`` need lax mode, see below). The xAI session models are
ours and stricter still: unknown keys are schema errors, and a field is left out rather than
sent as null, except ``turn_detection`` (null means manual turns).
"""

from __future__ import annotations

import functools
import json
import operator
import typing
import warnings
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

from google.genai import types as genai_types
from openai.types.realtime import (
    RealtimeClientEvent,
    RealtimeFunctionTool,
    RealtimeServerEvent,
    SessionUpdateEvent,
)
from openai.types.responses import ToolChoiceFunction
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import ErrorDetails

__all__ = [
    "WireLiveClientMessage",
    "WireLiveClientSetup",
    "WireSchemaError",
    "unknown_fields",
    "validate_elevenlabs_client_message",
    "validate_elevenlabs_server_message",
    "validate_gemini_client_message",
    "validate_gemini_server_message",
    "validate_openai_client_event",
    "validate_openai_server_event",
    "validate_xai_client_event",
]


class WireSchemaError(ValueError):
    """A frame does not match the provider's typed schema."""


# --------------------------------------------------------------------------------------------
# Walking validated models
# --------------------------------------------------------------------------------------------


def unknown_fields(value: object, path: str = "$") -> list[str]:
    """JSON paths of the keys that a validated model tree holds only because a model is
    ``extra="allow"``: ``["$.session.voice", "$.item.content[0].txt"]``. Descends into
    fields, lists, tuples and dict values (union members are plain values by now)."""
    found: list[str] = []
    _collect_unknown(value, path, found)
    return found


def _collect_unknown(value: object, path: str, found: list[str]) -> None:
    if isinstance(value, BaseModel):
        found.extend(f"{path}.{key}" for key in value.model_extra or {})
        for name, field in type(value).model_fields.items():
            _collect_unknown(getattr(value, name), f"{path}.{field.alias or name}", found)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _collect_unknown(item, f"{path}[{index}]", found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect_unknown(item, f"{path}.{key}", found)


def _labels_and_fields(roots: Iterable[object]) -> tuple[set[str], set[str]]:
    """Names of every model class reachable from ``roots`` (pydantic puts them in an error's
    ``loc`` for each member of an untagged union) and of every field (never such a label)."""
    labels: set[str] = set()
    fields: set[str] = set()
    seen: set[type[BaseModel]] = set()
    pending = list(roots)
    while pending:
        annotation = pending.pop()
        pending.extend(typing.get_args(annotation))
        if (
            isinstance(annotation, type)
            and issubclass(annotation, BaseModel)
            and annotation not in seen
        ):
            seen.add(annotation)
            labels.add(annotation.__name__)
            for name, field in annotation.model_fields.items():
                fields.add(field.alias or name)
                pending.append(field.annotation)
    return labels, fields


# --------------------------------------------------------------------------------------------
# Error messages
# --------------------------------------------------------------------------------------------

# Fields whose mismatch says "this union member is not the one the frame meant", in order.
_TAG_FIELDS: Final = ("type", "role")
_TAG_ERRORS: Final = frozenset({"literal_error", "missing"})
_NOT_AN_OBJECT: Final = frozenset({"model_type", "model_attributes_type", "dict_type"})
_SCALAR_LABELS: Final = frozenset({"str", "int", "float", "bool", "none"})


class _Schema:
    """A TypeAdapter plus what is needed to explain its errors."""

    def __init__(self, name: str, annotation: Any, extra_labels: Iterable[str] = ()) -> None:
        self.name = name
        self.adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        labels, fields = _labels_and_fields([annotation])
        # A discriminated union puts its tag in ``loc`` too (the event type at the top);
        # scalar members show as ``str`` or ``literal['none','auto','required']``.
        self.labels = frozenset((labels | _SCALAR_LABELS | set(extra_labels)) - fields)

    def validate(self, raw: str | bytes) -> tuple[str, Any]:
        """(event type, validated model); WireSchemaError on bad JSON or a schema error."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise WireSchemaError(f"{self.name}: not JSON: {error}") from None
        if not isinstance(data, dict):
            raise WireSchemaError(
                f"{self.name}: a frame is a JSON object, got {type(data).__name__}"
            )
        event_type = data.get("type")
        label = f"{self.name} {event_type!r}" if isinstance(event_type, str) else self.name
        try:
            return str(event_type), self.adapter.validate_json(raw, strict=True)
        except ValidationError as error:
            problems = self.describe(error.errors(include_url=False), str(event_type))
            count = f"{len(problems)} schema error{'s' if len(problems) != 1 else ''}"
            raise WireSchemaError(
                f"{label}: {count}:\n" + "\n".join(f"  {line}" for line in problems)
            ) from None

    def describe(self, errors: list[ErrorDetails], event_type: str = "") -> list[str]:
        """One line per error, ``$.path: message [type, got value]``, without the errors of
        union members that the frame plainly did not mean (see the module docstring)."""
        locs = [
            error["loc"][1:] if error["loc"][:1] == (event_type,) else error["loc"]
            for error in errors
        ]
        # Per union member (the loc up to and including its label): did the frame fail to be
        # an object of it, does its ``type`` mismatch, does its ``role``? Fewer is closer.
        ranks: dict[tuple[int | str, ...], list[bool]] = {}
        for error, loc in zip(errors, locs, strict=True):
            for point in self._union_points(loc):
                rank = ranks.setdefault(loc[: point + 1], [False] * (1 + len(_TAG_FIELDS)))
                rest = loc[point + 1 :]
                if not rest and error["type"] in _NOT_AN_OBJECT:
                    rank[0] = True
                elif len(rest) == 1 and rest[0] in _TAG_FIELDS and error["type"] in _TAG_ERRORS:
                    rank[1 + _TAG_FIELDS.index(str(rest[0]))] = True
        best: dict[tuple[int | str, ...], list[bool]] = {}
        for member, rank in ranks.items():
            union = member[:-1]
            best[union] = min(best.get(union, rank), rank)
        survivors = [
            (error, loc)
            for error, loc in zip(errors, locs, strict=True)
            if all(
                ranks[loc[: point + 1]] == best[loc[:point]] for point in self._union_points(loc)
            )
        ]
        members_left: dict[tuple[int | str, ...], set[int | str]] = {}
        for _error, loc in survivors:
            for point in self._union_points(loc):
                members_left.setdefault(loc[:point], set()).add(loc[point])
        return [self._line(error, loc, members_left) for error, loc in survivors]

    def _union_points(self, loc: tuple[int | str, ...]) -> list[int]:
        """Indexes in ``loc`` that name a union member rather than a field."""
        return [
            index
            for index, part in enumerate(loc)
            if isinstance(part, str) and (part in self.labels or "[" in part)
        ]

    def _line(
        self,
        error: ErrorDetails,
        loc: tuple[int | str, ...],
        members_left: Mapping[tuple[int | str, ...], set[int | str]],
    ) -> str:
        points = set(self._union_points(loc))
        path = "$"
        for index, part in enumerate(loc):
            if index in points:
                if len(members_left[loc[:index]]) > 1:  # several members left: say which one
                    path += f"<{part}>"
            elif isinstance(part, int):
                path += f"[{part}]"
            else:
                path += f".{part}"
        detail = error["type"]
        if error["type"] != "missing":
            got = repr(error["input"])
            detail += f", got {got if len(got) <= 80 else got[:77] + '...'}"
        return f"{path}: {error['msg']} [{detail}]"


def _raise_unknown(label: str, event: object) -> None:
    extra = unknown_fields(event)
    if extra:
        raise WireSchemaError(f"{label}: fields the typed models do not know: {', '.join(extra)}")


# --------------------------------------------------------------------------------------------
# OpenAI Realtime (GA)
# --------------------------------------------------------------------------------------------

_OPENAI_CLIENT: Final = _Schema(
    "openai client event", Annotated[RealtimeClientEvent, Field(discriminator="type")]
)
_OPENAI_SERVER: Final = _Schema(
    "openai server event", Annotated[RealtimeServerEvent, Field(discriminator="type")]
)


def validate_openai_client_event(raw: str | bytes) -> None:
    """Check one OpenAI Realtime GA client frame; raise WireSchemaError if the typed models
    reject it or if it carries a field they do not know (``$.session.voice``)."""
    event_type, event = _OPENAI_CLIENT.validate(raw)
    _raise_unknown(f"openai client event {event_type!r}", event)


def validate_openai_server_event(raw: str | bytes) -> list[str]:
    """Check one OpenAI Realtime GA server frame; raise WireSchemaError on a schema error.
    Returns the paths of fields the typed models do not know, as warnings: the service sends
    some (``session.created`` carries ``$.session.id``, ``$.session.object``, ...)."""
    _event_type, event = _OPENAI_SERVER.validate(raw)
    return unknown_fields(event)


# --------------------------------------------------------------------------------------------
# xAI Grok Voice Agent (section 3.3): the OpenAI GA vocabulary, xAI's own session shape
# --------------------------------------------------------------------------------------------


class _XaiModel(BaseModel):
    """Strict: unknown keys are errors, and a field is left out rather than sent as null
    unless null means something (``nullable_fields``)."""

    model_config = ConfigDict(extra="forbid")
    nullable_fields: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _absent_not_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = [
                key
                for key, value in data.items()
                if value is None and key in cls.model_fields and key not in cls.nullable_fields
            ]
            if nulls:
                raise ValueError(f"leave out, do not send null: {', '.join(nulls)}")
        return data


class XaiServerVad(_XaiModel):
    type: Literal["server_vad"]
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(default=None, ge=0)
    silence_duration_ms: int | None = Field(default=None, ge=0)
    idle_timeout_ms: int | None = Field(default=None, ge=0)


class XaiAudioPcm(_XaiModel):
    type: Literal["audio/pcm"]
    rate: int | None = Field(default=None, ge=8000, le=48000)  # xAI default 24000


class XaiAudioPcmu(_XaiModel):
    type: Literal["audio/pcmu"]  # G.711 mu-law, 8 kHz


class XaiAudioPcma(_XaiModel):
    type: Literal["audio/pcma"]  # G.711 A-law, 8 kHz


XaiAudioFormat = Annotated[XaiAudioPcm | XaiAudioPcmu | XaiAudioPcma, Field(discriminator="type")]


class XaiTranscription(_XaiModel):
    model: str | None = None
    language_hint: str | None = None
    keyterms: list[str] | None = None


class XaiAudioInput(_XaiModel):
    format: XaiAudioFormat | None = None
    transcription: XaiTranscription | None = None


class XaiAudioOutput(_XaiModel):
    format: XaiAudioFormat | None = None


class XaiAudio(_XaiModel):
    input: XaiAudioInput | None = None
    output: XaiAudioOutput | None = None


class XaiWebSearchTool(_XaiModel):
    type: Literal["web_search"]


class XaiXSearchTool(_XaiModel):
    type: Literal["x_search"]
    allowed_x_handles: list[str] | None = None


class XaiFileSearchTool(_XaiModel):
    type: Literal["file_search"]
    vector_store_ids: list[str]
    max_num_results: int | None = Field(default=None, ge=1)


def _tool_tag(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


_XAI_TOOL_TAGS: Final = ("function", "web_search", "x_search", "file_search")

# RealtimeFunctionTool's ``type`` is optional in the SDK, so pydantic cannot discriminate on
# it by name; the callable discriminator makes ``type`` required for every xAI tool.
XaiTool = Annotated[
    Annotated[RealtimeFunctionTool, Tag("function")]
    | Annotated[XaiWebSearchTool, Tag("web_search")]
    | Annotated[XaiXSearchTool, Tag("x_search")]
    | Annotated[XaiFileSearchTool, Tag("file_search")],
    Discriminator(
        _tool_tag,
        custom_error_type="xai_tool_type",
        custom_error_message="a tool's type is one of: " + ", ".join(_XAI_TOOL_TAGS),
    ),
]


class XaiSession(_XaiModel):
    """``session`` of an xAI ``session.update``: top-level ``voice`` and ``turn_detection``
    (server VAD or null for manual turns), no ``session.type`` needed."""

    nullable_fields = frozenset({"turn_detection"})

    type: Literal["realtime"] | None = None
    voice: str | None = None
    instructions: str | None = None
    turn_detection: XaiServerVad | None = None
    audio: XaiAudio | None = None
    tools: list[XaiTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None


class XaiSessionUpdateEvent(_XaiModel):
    type: Literal["session.update"]
    session: XaiSession
    event_id: str | None = None


def _xai_client_union() -> Any:
    members = typing.get_args(typing.get_args(RealtimeClientEvent)[0])
    assert SessionUpdateEvent in members, "openai moved SessionUpdateEvent: re-check"
    union = functools.reduce(
        operator.or_,
        [XaiSessionUpdateEvent if member is SessionUpdateEvent else member for member in members],
    )
    return Annotated[union, Field(discriminator="type")]


_XAI_CLIENT: Final = _Schema(
    "xai client event",
    _xai_client_union(),
    extra_labels=(*_XAI_TOOL_TAGS, "audio/pcm", "audio/pcmu", "audio/pcma"),
)


def validate_xai_client_event(raw: str | bytes) -> None:
    """Check one xAI Grok Voice Agent client frame; raise WireSchemaError on a schema error,
    a field xAI's session shape does not have, or one the OpenAI models do not know."""
    event_type, event = _XAI_CLIENT.validate(raw)
    _raise_unknown(f"xai client event {event_type!r}", event)


# --------------------------------------------------------------------------------------------
# Google Gemini Live (BidiGenerateContent), section 2.7: google.genai.types
# --------------------------------------------------------------------------------------------
#
# ``google-genai`` models are ``extra="forbid"`` with camelCase aliases (snake_case accepted
# too, as the service's proto-JSON parser does). Three things they do not do by themselves:
#
# * They do not know ``setup.realtimeInputConfig``: in google-genai 3.4.0 that field exists
#   on ``LiveConnectConfig`` only, and the SDK's converter writes it straight into the setup
#   dict (``_live_converters._LiveConnectConfig_to_mldev``), so the wire field is documented
#   and sent by the SDK itself but ``LiveClientSetup`` rejects it (extra_forbidden). The
#   subclass below adds it; if a later SDK adds the field, the subclass is harmless.
# * "Exactly one of setup/clientContent/realtimeInput/toolResponse" is a oneof on the wire
#   but four optional fields in the model: checked separately.
# * Their enums are ``CaseInSensitiveEnum``, which accepts an unknown value (``"SOUND"``,
#   ``"NO_INTERUPTION"``) with only a UserWarning: the warning is turned into an error.
#
# Gemini frames are validated in pydantic's lax JSON mode: strict mode refuses the base64
# strings of ``bytes`` fields (``data``) outright, lax JSON mode decodes them and rejects bad
# base64 (``bytes_invalid_encoding``). Lax mode also accepts ``"0.7"`` for a number.


# Made with ``create_model`` rather than a class statement: mypy's pydantic plugin, asked to
# synthesise ``__init__`` for a subclass, trips over google-genai's own ``PIL_Image`` alias.
WireLiveClientSetup: type[genai_types.LiveClientSetup] = create_model(
    "WireLiveClientSetup",
    __base__=genai_types.LiveClientSetup,
    __doc__="``LiveClientSetup`` with the documented wire field google-genai 3.4.0 lacks.",
    realtime_input_config=(genai_types.RealtimeInputConfig | None, None),
)
WireLiveClientMessage: type[genai_types.LiveClientMessage] = create_model(
    "WireLiveClientMessage",
    __base__=genai_types.LiveClientMessage,
    __doc__="``LiveClientMessage`` whose ``setup`` is ``WireLiveClientSetup``.",
    setup=(WireLiveClientSetup | None, None),
)


_GEMINI_CLIENT: Final = _Schema("gemini client message", WireLiveClientMessage)
_GEMINI_SERVER: Final = _Schema("gemini server message", genai_types.LiveServerMessage)


def _validate_genai(schema: _Schema, raw: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise WireSchemaError(f"{schema.name}: not JSON: {error}") from None
    if not isinstance(data, dict):
        raise WireSchemaError(f"{schema.name}: a frame is a JSON object, got {type(data).__name__}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            schema.adapter.validate_json(raw)
        except ValidationError as error:
            problems = schema.describe(error.errors(include_url=False))
            count = f"{len(problems)} schema error{'s' if len(problems) != 1 else ''}"
            raise WireSchemaError(
                f"{schema.name}: {count}:\n" + "\n".join(f"  {line}" for line in problems)
            ) from None
    bad_enums = sorted({str(w.message) for w in caught if "is not a valid" in str(w.message)})
    if bad_enums:
        raise WireSchemaError(f"{schema.name}: unknown enum value: {'; '.join(bad_enums)}")
    return data


def validate_gemini_client_message(raw: str | bytes) -> None:
    """Check one Gemini Live client frame against ``google.genai.types.LiveClientMessage``
    (with ``setup.realtimeInputConfig`` added): exactly one top-level field, no unknown
    field anywhere, valid base64 in ``data``, known enum values. Raises WireSchemaError."""
    data = _validate_genai(_GEMINI_CLIENT, raw)
    if len(data) != 1:
        raise WireSchemaError(
            "gemini client message: a frame sets exactly one of setup, clientContent, "
            f"realtimeInput, toolResponse; got {sorted(data) or 'none'}"
        )


def validate_gemini_server_message(raw: str | bytes) -> None:
    """Check one Gemini Live server frame against ``google.genai.types.LiveServerMessage``,
    strictly (the SDK itself drops unknown fields before validating; a fake must not send
    any). Several top-level fields may come together (``serverContent`` + ``usageMetadata``).
    """
    _validate_genai(_GEMINI_SERVER, raw)


# --------------------------------------------------------------------------------------------
# ElevenLabs Agents (convai) WebSocket, section 4.5
# --------------------------------------------------------------------------------------------
#
# There is no PyPI model for the convai events. The client events below are transcribed from
# the official AsyncAPI contract (elevenlabs/packages ``packages/types/schemas/
# agent.asyncapi.yaml``, published as npm ``@elevenlabs/types``); the initiation body and its
# ``conversation_config_override`` tree from the ``elevenlabs`` PyPI models
# (``ConversationInitiationClientDataRequestInput``, ``ConversationConfigClientOverrideInput``
# and what they reference, 2.78.0), which are a superset of the AsyncAPI override schema;
# where the two place a field differently both places are accepted
# (``agent.native_mcp_server_ids`` / ``agent.prompt.native_mcp_server_ids``,
# ``conversation.client_events`` / ``conversation.max_duration_seconds``). Every model here is
# ``extra="forbid"`` (the PyPI ones are ``extra="allow"``, so a typo like ``agnet`` would
# pass them). Numeric ranges are the AsyncAPI ones.


class _ElevenModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


ELEVENLABS_AUDIO_FORMATS: Final = (
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
)
ELEVENLABS_CLIENT_EVENTS: Final = (
    "audio",
    "agent_response",
    "agent_response_correction",
    "agent_chat_response_part",
    "interruption",
    "user_transcript",
    "tentative_user_transcript",
    "conversation_initiation_metadata",
    "client_tool_call",
    "agent_tool_request",
    "agent_tool_response",
    "mcp_tool_call",
    "mcp_connection_status",
    "vad_score",
    "ping",
    "asr_initiation_metadata",
    "guardrail_triggered",
    "internal_turn_probability",
    "internal_tentative_agent_response",
)
ElevenLabsClientEventName = Literal[
    "audio",
    "agent_response",
    "agent_response_correction",
    "agent_chat_response_part",
    "interruption",
    "user_transcript",
    "tentative_user_transcript",
    "conversation_initiation_metadata",
    "client_tool_call",
    "agent_tool_request",
    "agent_tool_response",
    "mcp_tool_call",
    "mcp_connection_status",
    "vad_score",
    "ping",
    "asr_initiation_metadata",
    "guardrail_triggered",
    "internal_turn_probability",
    "internal_tentative_agent_response",
]


class ElevenLabsKnowledgeBaseLocator(_ElevenModel):
    type: str
    name: str
    id: str
    usage_mode: str | None = None


class ElevenLabsPromptOverride(_ElevenModel):
    prompt: str | None = None
    llm: str | None = None
    reasoning_effort: str | None = None
    tool_ids: list[str] | None = None
    tool_ids_strict: bool | None = None
    native_mcp_server_ids: list[str] | None = Field(default=None, max_length=10)
    knowledge_base: list[ElevenLabsKnowledgeBaseLocator] | None = None


class ElevenLabsAgentOverride(_ElevenModel):
    first_message: str | None = None
    language: str | None = None
    max_conversation_duration_message: str | None = None
    prompt: ElevenLabsPromptOverride | None = None
    native_mcp_server_ids: list[str] | None = Field(default=None, max_length=10)


class ElevenLabsSupportedVoice(_ElevenModel):
    label: str
    voice_id: str
    description: str | None = None
    language: str | None = None
    model_family: str | None = None
    optimize_streaming_latency: int | str | None = None
    stability: float | None = None
    speed: float | None = None
    similarity_boost: float | None = None
    clone_strength: float | None = None


class ElevenLabsDictionaryLocator(_ElevenModel):
    pronunciation_dictionary_id: str
    version_id: str | None = None


class ElevenLabsTtsOverride(_ElevenModel):
    model_id: str | None = None
    voice_id: str | None = None
    supported_voices: list[ElevenLabsSupportedVoice] | None = None
    stability: float | None = Field(default=None, ge=0.0, le=1.0)
    speed: float | None = Field(default=None, ge=0.7, le=5.0)
    similarity_boost: float | None = Field(default=None, ge=0.0, le=1.0)
    clone_strength: float | None = None
    pronunciation_dictionary_locators: list[ElevenLabsDictionaryLocator] | None = None


class ElevenLabsAsrOverride(_ElevenModel):
    keywords: list[str] | None = None


class ElevenLabsSoftTimeoutOverride(_ElevenModel):
    message: str | None = None
    additional_soft_timeout_messages: list[str] | None = None


class ElevenLabsTurnOverride(_ElevenModel):
    soft_timeout_config: ElevenLabsSoftTimeoutOverride | None = None
    noisy_environment_message: str | None = None


class ElevenLabsConversationOverride(_ElevenModel):
    text_only: bool | None = None
    max_duration_seconds: int | None = None
    client_events: list[ElevenLabsClientEventName] | None = Field(default=None, min_length=1)


class ElevenLabsConfigOverride(_ElevenModel):
    agent: ElevenLabsAgentOverride | None = None
    tts: ElevenLabsTtsOverride | None = None
    asr: ElevenLabsAsrOverride | None = None
    turn: ElevenLabsTurnOverride | None = None
    conversation: ElevenLabsConversationOverride | None = None


class ElevenLabsSourceInfo(_ElevenModel):
    source: str | None = None
    version: str | None = None


class ElevenLabsInitiation(_ElevenModel):
    type: Literal["conversation_initiation_client_data"]
    conversation_config_override: ElevenLabsConfigOverride | None = None
    custom_llm_extra_body: dict[str, Any] | None = None
    dynamic_variables: dict[str, str | int | float | bool] | None = None
    user_id: str | None = None
    source_info: ElevenLabsSourceInfo | None = None
    tool_mock_config: dict[str, Any] | None = None
    branch_id: str | None = None
    environment: str | None = None
    starting_workflow_node_id: str | None = None
    procedure_ids: list[str] | None = None
    start_procedure_ids: list[str] | None = None


class ElevenLabsPong(_ElevenModel):
    type: Literal["pong"]
    event_id: int


class ElevenLabsUserMessage(_ElevenModel):
    type: Literal["user_message"]
    text: str | None = None
    rich_content_id: str | None = None


class ElevenLabsUserActivity(_ElevenModel):
    type: Literal["user_activity"]


class ElevenLabsFeedback(_ElevenModel):
    type: Literal["feedback"]
    event_id: int
    score: Literal["like", "dislike"]


class ElevenLabsClientToolResult(_ElevenModel):
    type: Literal["client_tool_result"]
    tool_call_id: str
    result: str
    is_error: bool


class ElevenLabsMcpToolApproval(_ElevenModel):
    type: Literal["mcp_tool_approval_result"]
    tool_call_id: str
    is_approved: bool


class ElevenLabsContextualUpdate(_ElevenModel):
    type: Literal["contextual_update"]
    text: str
    context_id: str | None = None


class ElevenLabsFileInput(_ElevenModel):
    type: Literal["file_input"]
    file_id: str


class ElevenLabsMultimodalText(_ElevenModel):
    type: Literal["user_message"]
    text: str | None = None


class ElevenLabsMultimodalMessage(_ElevenModel):
    type: Literal["multimodal_message"]
    text: ElevenLabsMultimodalText | None = None
    file: ElevenLabsFileInput | None = None
    files: list[ElevenLabsFileInput] | None = None


class ElevenLabsUserAudioChunk(_ElevenModel):
    """The one client message without ``type`` (AsyncAPI: "sent without type field for
    performance (detected by presence of user_audio_chunk)"): base64 PCM or mu-law."""

    user_audio_chunk: Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]*={0,2}$")]

    @model_validator(mode="after")
    def _whole_base64(self) -> ElevenLabsUserAudioChunk:
        if len(self.user_audio_chunk) % 4:
            raise ValueError("user_audio_chunk is not base64 (length is not a multiple of 4)")
        return self


_ELEVENLABS_CLIENT: Final = _Schema(
    "elevenlabs client message",
    Annotated[
        ElevenLabsInitiation
        | ElevenLabsPong
        | ElevenLabsUserMessage
        | ElevenLabsUserActivity
        | ElevenLabsFeedback
        | ElevenLabsClientToolResult
        | ElevenLabsMcpToolApproval
        | ElevenLabsContextualUpdate
        | ElevenLabsMultimodalMessage,
        Field(discriminator="type"),
    ],
)
_ELEVENLABS_AUDIO: Final = _Schema("elevenlabs client message", ElevenLabsUserAudioChunk)


def validate_elevenlabs_client_message(raw: str | bytes) -> None:
    """Check one ElevenLabs Agents client frame: ``{"user_audio_chunk": b64}`` (no ``type``)
    or one of the typed client messages of the AsyncAPI contract, with the initiation's
    override tree as in the ``elevenlabs`` SDK models. Unknown fields are errors. Raises
    WireSchemaError."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise WireSchemaError(f"elevenlabs client message: not JSON: {error}") from None
    if isinstance(data, dict) and "user_audio_chunk" in data and "type" not in data:
        _ELEVENLABS_AUDIO.validate(raw)
    else:
        _ELEVENLABS_CLIENT.validate(raw)


# Server events (AsyncAPI ``publish`` side), used to check what the fake sends.


class _ElevenAudioEvent(_ElevenModel):
    audio_base_64: str
    event_id: int
    alignment: dict[str, list[Any]] | None = None


class _ElevenMetadataEvent(_ElevenModel):
    conversation_id: str
    agent_output_audio_format: Literal[
        "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000"
    ]
    user_input_audio_format: Literal[
        "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000"
    ]


class _ElevenTranscriptEvent(_ElevenModel):
    user_transcript: str
    event_id: int


class _ElevenAgentResponseEvent(_ElevenModel):
    agent_response: str
    event_id: int


class _ElevenCorrectionEvent(_ElevenModel):
    original_agent_response: str
    corrected_agent_response: str
    event_id: int


class _ElevenEventId(_ElevenModel):
    event_id: int


class _ElevenPingEvent(_ElevenModel):
    event_id: int
    ping_ms: int | None = None


class _ElevenToolCall(_ElevenModel):
    tool_name: str
    tool_call_id: str
    parameters: dict[str, Any]
    event_id: int


class _ElevenToolResponse(_ElevenModel):
    tool_name: str
    tool_call_id: str
    tool_type: str
    is_error: bool
    is_called: bool
    event_id: int


class _ElevenVadScore(_ElevenModel):
    vad_score: float = Field(ge=0.0, le=1.0)


class _ElevenTentativeAgentResponse(_ElevenModel):
    tentative_agent_response: str


class _ElevenError(_ElevenModel):
    code: Literal[1000, 1002, 1008, 1011]
    message: str | None = None
    error_type: str | None = None
    reason: str | None = None
    debug_message: str | None = None
    details: dict[str, Any] | None = None


class ElevenLabsAudio(_ElevenModel):
    type: Literal["audio"]
    audio_event: _ElevenAudioEvent


class ElevenLabsMetadata(_ElevenModel):
    type: Literal["conversation_initiation_metadata"]
    conversation_initiation_metadata_event: _ElevenMetadataEvent


class ElevenLabsUserTranscript(_ElevenModel):
    type: Literal["user_transcript"]
    user_transcription_event: _ElevenTranscriptEvent


class ElevenLabsTentativeUserTranscript(_ElevenModel):
    type: Literal["tentative_user_transcript"]
    tentative_user_transcription_event: _ElevenTranscriptEvent


class ElevenLabsAgentResponse(_ElevenModel):
    type: Literal["agent_response"]
    agent_response_event: _ElevenAgentResponseEvent


class ElevenLabsAgentResponseCorrection(_ElevenModel):
    type: Literal["agent_response_correction"]
    agent_response_correction_event: _ElevenCorrectionEvent


class ElevenLabsInterruption(_ElevenModel):
    type: Literal["interruption"]
    interruption_event: _ElevenEventId


class ElevenLabsPing(_ElevenModel):
    type: Literal["ping"]
    ping_event: _ElevenPingEvent


class ElevenLabsClientToolCall(_ElevenModel):
    type: Literal["client_tool_call"]
    client_tool_call: _ElevenToolCall


class ElevenLabsAgentToolResponse(_ElevenModel):
    type: Literal["agent_tool_response"]
    agent_tool_response: _ElevenToolResponse


class ElevenLabsVadScore(_ElevenModel):
    type: Literal["vad_score"]
    vad_score_event: _ElevenVadScore


class ElevenLabsTentativeAgentResponse(_ElevenModel):
    type: Literal["internal_tentative_agent_response"]
    tentative_agent_response_internal_event: _ElevenTentativeAgentResponse


class ElevenLabsError(_ElevenModel):
    type: Literal["error"]
    error_event: _ElevenError


_ELEVENLABS_SERVER: Final = _Schema(
    "elevenlabs server message",
    Annotated[
        ElevenLabsAudio
        | ElevenLabsMetadata
        | ElevenLabsUserTranscript
        | ElevenLabsTentativeUserTranscript
        | ElevenLabsAgentResponse
        | ElevenLabsAgentResponseCorrection
        | ElevenLabsInterruption
        | ElevenLabsPing
        | ElevenLabsClientToolCall
        | ElevenLabsAgentToolResponse
        | ElevenLabsVadScore
        | ElevenLabsTentativeAgentResponse
        | ElevenLabsError,
        Field(discriminator="type"),
    ],
)


def validate_elevenlabs_server_message(raw: str | bytes) -> None:
    """Check one ElevenLabs Agents server frame against the AsyncAPI contract (the events
    the fake sends; unknown fields are errors). Raises WireSchemaError."""
    _ELEVENLABS_SERVER.validate(raw)
