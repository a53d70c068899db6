"""``manage.py check_providers``: can each provider credential open a session?"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Field

from providers.base import ProviderError
from providers.models import ProviderCredential
from providers.services import credential_reveal
from rooms.models import Tenant
from roomvoice.lib.commandline import (
    EXIT_FAILED,
    EXIT_USAGE,
    format_table,
    one_line,
    quiet_logging,
)
from voice.agents import AgentConfig, agent_config_load, provider_for
from voice.models import Agent
from voice.session import LiveSession

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 300.0
DISCONNECT_TIMEOUT_S = 5.0
PARALLEL_CHECKS = 8


@dataclass(frozen=True, slots=True)
class Check:
    """One credential to check, loaded before any connection is made (no ORM afterwards)."""

    tenant: str
    credential: str
    kind: str
    endpoint: str
    agent: str  # the agent whose settings the session uses, "" when none uses the credential
    config: AgentConfig | None = field(default=None, repr=False)
    load_error: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    detail: str


def load_check(credential: ProviderCredential) -> Check:
    """The session settings to check ``credential`` with: those of an agent that uses it
    (active ones first), else the provider's defaults."""
    tenant = credential.tenant
    used_by = (
        Agent.objects.filter(tenant=tenant, credential=credential)
        .order_by("-is_active", "slug")
        .first()
    )
    base = Check(
        tenant=tenant.slug,
        credential=credential.name,
        kind=credential.kind,
        endpoint=credential.base_url,
        agent=used_by.slug if used_by is not None else "",
    )
    try:
        if used_by is not None:
            config = agent_config_load(tenant=tenant, agent=used_by)
        else:
            config = _default_config(credential)
    except Exception as error:  # an undecryptable secret, say: reported, never raised
        return replace(base, load_error=f"{type(error).__name__}: {error}")
    return replace(base, config=config)


def _default_config(credential: ProviderCredential) -> AgentConfig:
    def default(name: str) -> Any:
        model_field = Agent._meta.get_field(name)
        assert isinstance(model_field, Field)
        return model_field.get_default()

    return AgentConfig(
        tenant_id=credential.tenant_id,
        agent_id=None,
        slug="",
        provider_kind=credential.kind,
        model="",
        voice="",
        system_prompt="",
        temperature=None,
        provider_config={},
        input_sample_rate=default("input_sample_rate"),
        output_sample_rate=default("output_sample_rate"),
        transport_sample_rate=None,
        mute_on_tool_call=False,
        tool_result_max_length=default("tool_result_max_length"),
        emit_transcription_events=True,
        tools=(),
        api_key=credential_reveal(tenant=credential.tenant, credential=credential),
        base_url=credential.base_url,
    )


async def run_check(check: Check, limit_s: float) -> Outcome:
    """Connect a session with the credential, then disconnect; the reason when it fails."""
    if check.config is None:
        return Outcome(False, check.load_error or "the credential could not be loaded")
    config = check.config
    outcome = await _connect(config, limit_s)
    if config.api_key and config.api_key in outcome.detail:  # never print a secret
        outcome = Outcome(outcome.ok, outcome.detail.replace(config.api_key, "…"))
    return outcome


async def _connect(config: AgentConfig, limit_s: float) -> Outcome:
    try:
        provider = provider_for(config)
    except Exception as error:
        return Outcome(False, f"{type(error).__name__}: {error}")
    session = LiveSession(
        room_id="check_providers", participant_id="check_providers", channel_id="voice"
    )
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit_s):
            await provider.connect(
                session,
                system_prompt=config.system_prompt or None,
                voice=config.voice or None,
                tools=None,
                temperature=config.temperature,
                input_sample_rate=config.input_sample_rate,
                output_sample_rate=config.output_sample_rate,
                server_vad=True,
                provider_config=config.provider_config,
            )
    except TimeoutError:
        return Outcome(False, f"no session within {limit_s:g} s")
    except ProviderError as error:
        return Outcome(False, f"{error.code}: {error.message}")
    except Exception as error:
        return Outcome(False, f"{type(error).__name__}: {error}")
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await provider.disconnect(session)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await provider.close()
    elapsed_ms = (time.monotonic() - started) * 1000
    vendor_session = f", vendor session {session.provider_session_id}"
    return Outcome(
        True,
        f"connected in {elapsed_ms:.0f} ms{vendor_session if session.provider_session_id else ''}",
    )


async def run_checks(checks: list[Check], limit_s: float) -> list[Outcome]:
    limit = asyncio.Semaphore(PARALLEL_CHECKS)

    async def one(check: Check) -> Outcome:
        async with limit:
            return await run_check(check, limit_s)

    return list(await asyncio.gather(*(one(check) for check in checks)))


class Command(BaseCommand):
    help = (
        "For each provider credential, open a session with the vendor (with the settings of "
        "an agent that uses the credential, else the provider's defaults) and close it "
        "again, within --timeout seconds each; print ok or failed with the reason, per "
        "credential, in a table. Secrets are never printed. Exit codes: 0 all ok (or no "
        "credentials), 1 any failed, 2 bad input."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant's credentials.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            metavar="S",
            help=f"Seconds each session may take to open (default {DEFAULT_TIMEOUT_S:g}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        timeout: float = options["timeout"]
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise CommandError(
                f"--timeout must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds",
                returncode=EXIT_USAGE,
            )
        credentials = ProviderCredential.objects.select_related("tenant").order_by(
            "tenant__slug", "name"
        )
        if options["tenant"] is not None:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant {options['tenant']!r}", returncode=EXIT_USAGE)
            credentials = credentials.filter(tenant=tenant)
        checks = [load_check(credential) for credential in credentials]
        if not checks:
            self.stdout.write("no provider credentials to check")
            return
        with quiet_logging(options["verbosity"]):
            outcomes = asyncio.run(run_checks(checks, timeout))
        rows = [
            [
                check.tenant,
                check.credential,
                check.kind,
                check.endpoint or "(vendor's)",
                check.agent or "-",
                "ok" if outcome.ok else "FAILED",
                one_line(outcome.detail, limit=160),
            ]
            for check, outcome in zip(checks, outcomes, strict=True)
        ]
        headers = ["TENANT", "CREDENTIAL", "KIND", "ENDPOINT", "AGENT", "RESULT", "DETAIL"]
        for line in format_table(headers, rows):
            self.stdout.write(line)
        failed = sum(not outcome.ok for outcome in outcomes)
        self.stdout.write(
            f"{len(checks)} credential(s) checked: {len(checks) - failed} ok, {failed} failed"
        )
        if failed:
            raise CommandError(
                f"{failed} of {len(checks)} credential(s) failed", returncode=EXIT_FAILED
            )
