"""Phone numbers, SIP trunks and Twilio accounts in the admin, scoped by tenant like the rest.

Passwords and auth tokens are write-only: typed into a password field, stored encrypted by
the services, shown back only as a masked hint.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from rooms.admin_base import TenantScopedAdmin
from telephony import services
from telephony.models import PhoneNumber, SipTrunk, TwilioAccount


def _secret_field(help_text: str, *, required: bool = False) -> forms.CharField:
    return forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        required=required,
        strip=True,
        help_text=help_text,
    )


class SipTrunkForm(forms.ModelForm):  # type: ignore[type-arg]
    password = _secret_field(
        "The SIP digest password callers authenticate with. Stored encrypted; never shown "
        "again. Leave blank to keep the current one."
    )
    clear_password = forms.BooleanField(
        required=False, help_text="Remove the credentials: calls are then checked by address only."
    )

    class Meta:
        model = SipTrunk
        fields = [
            "tenant",
            "name",
            "allowed_sources",
            "username",
            "registrar",
            "register_expires",
            "enabled",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "register_expires" in self.fields:  # absent on a read-only view
            self.fields["register_expires"].required = False  # blank: the default

    def clean_register_expires(self) -> int:
        value = self.cleaned_data.get("register_expires")
        return int(value) if value else SipTrunk._meta.get_field("register_expires").default

    def clean_password(self) -> str:
        password: str = self.cleaned_data.get("password", "")
        if not password:
            return ""
        try:
            return services.trunk_clean_password(password)
        except ValidationError as error:
            raise forms.ValidationError(error.message_dict["password"]) from None

    def _post_clean(self) -> None:
        # The model's own checks (a user name needs a password; a trunk open to anyone is
        # refused) see the password typed here; the instance only ever holds it encrypted.
        if self.cleaned_data.get("clear_password"):
            services.trunk_put_password(self.instance, "")
            self.instance.username = ""
            self.cleaned_data["username"] = ""
        elif self.cleaned_data.get("password"):
            services.trunk_put_password(self.instance, self.cleaned_data["password"])
        super()._post_clean()  # type: ignore[misc]


@admin.register(SipTrunk)
class SipTrunkAdmin(TenantScopedAdmin):
    form = SipTrunkForm
    list_display = [
        "name",
        "tenant",
        "sources",
        "username",
        "password_hint",
        "registrar",
        "enabled",
    ]
    list_filter = ["enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "username", "allowed_sources"]
    readonly_fields = ["password_hint"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "enabled"]}),
        ("Who may call", {"fields": ["allowed_sources"]}),
        (
            "Digest authentication",
            {"fields": ["username", "password", "password_hint", "clear_password"]},
        ),
        ("Registration (optional)", {"fields": ["registrar", "register_expires"]}),
    ]

    @admin.display(description="sources")
    def sources(self, obj: SipTrunk) -> str:
        lines = [line.strip() for line in obj.allowed_sources.splitlines() if line.strip()]
        return ", ".join(lines[:3]) + (" …" if len(lines) > 3 else "") if lines else "any"


@admin.register(PhoneNumber)
class PhoneNumberAdmin(TenantScopedAdmin):
    list_display = ["number", "label", "tenant", "room", "agent_used", "trunk", "enabled"]
    list_filter = ["enabled", "tenant"]
    list_select_related = ["tenant", "room", "agent", "trunk", "room__default_agent"]
    search_fields = ["number", "label", "room__key"]
    fields = ["tenant", "number", "label", "room", "agent", "trunk", "enabled"]

    @admin.display(description="agent")
    def agent_used(self, obj: PhoneNumber) -> str:
        agent = obj.agent or obj.room.default_agent
        if agent is None:
            return "— (none: calls are refused)"
        suffix = "" if obj.agent else " (room default)"
        return f"{agent.name} · {agent.get_provider_kind_display()}{suffix}"


class TwilioAccountForm(forms.ModelForm):  # type: ignore[type-arg]
    auth_token = _secret_field(
        "The account's auth token (Twilio console): it checks every webhook Twilio sends. "
        "Stored encrypted; never shown again. Leave blank to keep the current one."
    )

    class Meta:
        model = TwilioAccount
        fields = ["tenant", "account_sid", "enabled"]

    def clean_auth_token(self) -> str:
        token: str = self.cleaned_data.get("auth_token", "")
        if not token:
            if not self.instance.encrypted_auth_token:
                raise forms.ValidationError("Enter the account's auth token.")
            return ""
        try:
            return services.twilio_clean_auth_token(token)
        except ValidationError as error:
            raise forms.ValidationError(error.message_dict["auth_token"]) from None

    def _post_clean(self) -> None:
        if self.cleaned_data.get("auth_token"):
            services.twilio_put_auth_token(self.instance, self.cleaned_data["auth_token"])
        super()._post_clean()  # type: ignore[misc]


@admin.register(TwilioAccount)
class TwilioAccountAdmin(TenantScopedAdmin):
    form = TwilioAccountForm
    list_display = ["account_sid", "tenant", "auth_token_hint", "enabled"]
    list_filter = ["enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["account_sid"]
    readonly_fields = ["auth_token_hint"]
    fields = ["tenant", "account_sid", "auth_token", "auth_token_hint", "enabled"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("account_sid")  # the SID names the account; add another instead
        return fields
