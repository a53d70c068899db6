"""An ``Agent`` row becomes a configured ``RealtimeVoiceChannel`` (no code needed per agent).

``agent_config_load`` reads everything a session needs once, in one place, into a frozen
dataclass (the ORM stays off the audio path); ``channel_for_agent`` builds the provider from
the registry and the tenant's credential, the tools from their rows, and the channel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from providers.base import RealtimeVoiceProvider
from providers.models import ProviderCredential
from providers.registry import get_spec
from providers.services import credential_reveal
from rooms.models import Tenant
from voice.channels import RealtimeVoiceChannel
from voice.kit import RoomKit, Tool, current_tool_call_id
from voice.kit import kit as process_kit
from voice.models import Agent, ToolExecution
from voice.store import SessionStore
from voice.tools.dispatch import CeleryExecution
from voice.tools.runner import ToolSpec, run_handler
from voice.transports.base import RealtimeTransport

logger = logging.getLogger(__name__)


class ProviderUnavailable(RuntimeError):
    """The agent's provider cannot be built (not in this build, or no credential)."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    tenant_id: Any
    agent_id: Any
    slug: str
    provider_kind: str
    model: str
    voice: str
    system_prompt: str
    temperature: float | None
    provider_config: dict[str, Any]
    input_sample_rate: int
    output_sample_rate: int
    transport_sample_rate: int | None
    mute_on_tool_call: bool
    tool_result_max_length: int
    emit_transcription_events: bool
    tools: tuple[ToolSpec, ...]
    api_key: str = field(default="", repr=False)
    base_url: str = ""  # the credential's endpoint override ("" = the vendor's)


def agent_config_load(*, tenant: Tenant, agent: Agent) -> AgentConfig:
    """Everything a session of ``agent`` needs, read once (sync: call it off the event loop)."""
    if agent.tenant_id != tenant.pk:
        raise PermissionError("the agent belongs to another tenant")
    api_key = base_url = ""
    if agent.credential_id is not None:
        credential = ProviderCredential.objects.get(pk=agent.credential_id, tenant=tenant)
        api_key = credential_reveal(tenant=tenant, credential=credential)
        base_url = credential.base_url
    tools = tuple(
        ToolSpec.from_row(tool) for tool in agent.tools.filter(enabled=True).order_by("name")
    )
    return AgentConfig(
        tenant_id=tenant.pk,
        agent_id=agent.pk,
        slug=agent.slug,
        provider_kind=agent.provider_kind,
        model=agent.model,
        voice=agent.voice,
        system_prompt=agent.system_prompt,
        temperature=agent.temperature,
        provider_config=dict(agent.provider_config or {}),
        input_sample_rate=agent.input_sample_rate,
        output_sample_rate=agent.output_sample_rate,
        transport_sample_rate=agent.transport_sample_rate,
        mute_on_tool_call=agent.mute_on_tool_call,
        tool_result_max_length=agent.tool_result_max_length,
        emit_transcription_events=agent.emit_transcription_events,
        tools=tools,
        api_key=api_key,
        base_url=base_url,
    )


def provider_for(config: AgentConfig) -> RealtimeVoiceProvider:
    spec = get_spec(config.provider_kind)
    try:
        provider_class = spec.client_class()
    except (ImportError, AttributeError):
        raise ProviderUnavailable(
            f"the {spec.label} provider is not available in this build"
        ) from None
    if not spec.needs_credential:  # runs here: no key, no vendor options
        provider: RealtimeVoiceProvider = provider_class(model=config.model or None)
        return provider
    if not config.api_key:
        raise ProviderUnavailable(f"agent {config.slug!r} has no {spec.label} credential")
    options: dict[str, Any] = {"api_key": config.api_key}
    if config.model:
        options["model"] = config.model
    if config.base_url:
        options["base_url"] = config.base_url
    provider = provider_class(**options)
    return provider


def tool_for(spec: ToolSpec) -> Tool:
    """The engine's Tool for a Tool row: run here (inline, under the tool's timeout) or in
    a Celery worker (``execution = celery``). A handler that cannot be loaded gives the
    model a clear error when called, never a crash."""
    options: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "parameters": spec.parameters,
        "timeout": spec.timeout_seconds,
        "progress_message": spec.progress_message,
        "progress_delay": spec.progress_delay_seconds,
        "on_barge_in": spec.on_barge_in,
    }
    if spec.execution == ToolExecution.CELERY:
        return Tool(**options, remote=CeleryExecution(spec))

    async def handle(**arguments: Any) -> Any:
        return await run_handler(spec, arguments, call_id=current_tool_call_id())

    return Tool(**options, handler=handle)


def channel_for_agent(
    config: AgentConfig,
    *,
    transport: RealtimeTransport,
    store: SessionStore | None = None,
    provider: RealtimeVoiceProvider | None = None,
    channel_id: str = "voice",
    hooks_kit: RoomKit | None = None,
) -> RealtimeVoiceChannel:
    """The channel for one agent. Its hooks are the process-wide kit's (the apps'
    ``hooks.py``) unless another kit is given. Many agent channels share the channel id
    "voice", so they use the kit's hooks without being registered in it by id."""
    channel = RealtimeVoiceChannel(
        channel_id,
        provider=provider or provider_for(config),
        transport=transport,
        system_prompt=config.system_prompt or None,
        voice=config.voice or None,
        tools=[tool_for(spec) for spec in config.tools] or None,
        temperature=config.temperature,
        input_sample_rate=config.input_sample_rate,
        output_sample_rate=config.output_sample_rate,
        transport_sample_rate=config.transport_sample_rate,
        emit_transcription_events=config.emit_transcription_events,
        mute_on_tool_call=config.mute_on_tool_call,
        tool_result_max_length=config.tool_result_max_length,
        provider_config=config.provider_config,
        tool_timeout=max((spec.timeout_seconds for spec in config.tools), default=30.0),
        store=store,
    )
    channel.kit = hooks_kit if hooks_kit is not None else process_kit
    return channel
