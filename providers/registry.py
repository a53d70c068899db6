"""Provider kinds → their client class and config schema, by dotted path (imported lazily).

Pure Python: no Django, no vendor imports until a kind is actually used. Adding a provider is
one entry here plus its package under ``providers/<vendor>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

__all__ = [
    "PROVIDERS",
    "ProviderSpec",
    "UnknownProviderError",
    "get_spec",
    "validate_provider_config",
]


class UnknownProviderError(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    kind: str
    label: str
    client_path: str  # "package.module:ClassName"
    config_path: str  # "package.module:SchemaName"
    secret_label: str  # what the credential's secret is called by the vendor
    #: False for providers that run here and need no API key (mock, echo).
    needs_credential: bool = True

    def config_schema(self) -> Any:
        return _load(self.config_path)

    def client_class(self) -> Any:
        return _load(self.client_path)


def _load(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    return getattr(import_module(module_name), attribute)


PROVIDERS: dict[str, ProviderSpec] = {
    spec.kind: spec
    for spec in (
        ProviderSpec(
            "openai",
            "OpenAI Realtime",
            "providers.openai:OpenAIRealtimeProvider",
            "providers.openai.config:OpenAIProviderConfig",
            "API key",
        ),
        ProviderSpec(
            "xai",
            "xAI Grok Realtime",
            "providers.xai:XAIRealtimeProvider",
            "providers.xai.config:XAIProviderConfig",
            "API key",
        ),
        ProviderSpec(
            "gemini",
            "Google Gemini Live",
            "providers.gemini:GeminiLiveProvider",
            "providers.gemini.config:GeminiProviderConfig",
            "API key",
        ),
        ProviderSpec(
            "elevenlabs",
            "ElevenLabs Conversational AI",
            "providers.elevenlabs:ElevenLabsRealtimeProvider",
            "providers.elevenlabs.config:ElevenLabsProviderConfig",
            "API key",
        ),
        ProviderSpec(
            "mock",
            "Mock (testing)",
            "voice.mock:MockRealtimeProvider",
            "providers.mock.config:MockProviderConfig",
            "unused",
            needs_credential=False,
        ),
        ProviderSpec(
            "local",
            "Offline (speech on this server, no key)",
            "providers.local:LocalRealtimeProvider",
            "providers.local.config:LocalProviderConfig",
            "unused",
            needs_credential=False,
        ),
        ProviderSpec(
            "echo",
            "Echo test (no AI)",
            "providers.echo:EchoRealtimeProvider",
            "providers.echo.config:EchoProviderConfig",
            "unused",
            needs_credential=False,
        ),
    )
}


def get_spec(kind: str) -> ProviderSpec:
    try:
        return PROVIDERS[kind]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise UnknownProviderError(
            f"unknown provider kind {kind!r}; known kinds: {known}"
        ) from None


def validate_provider_config(kind: str, data: object) -> dict[str, Any]:
    """The config normalised to the keys the user set; raises ProviderConfigError."""
    from providers.config import config_to_dict, validate_config

    schema = get_spec(kind).config_schema()
    return config_to_dict(validate_config(schema, data))
