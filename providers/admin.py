from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from providers import services
from providers.models import ProviderCredential
from rooms.admin_base import TenantScopedAdmin


class ProviderCredentialForm(forms.ModelForm):  # type: ignore[type-arg]
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        required=False,
        strip=True,
        help_text="The vendor API key. Stored encrypted; never shown again. "
        "Leave blank when editing to keep the current one.",
    )

    class Meta:
        model = ProviderCredential
        fields = ["tenant", "name", "kind", "base_url"]

    def clean_secret(self) -> str:
        secret: str = self.cleaned_data.get("secret", "")
        if self.instance._state.adding and not secret:
            raise forms.ValidationError("A new credential needs its secret.")
        if secret:
            # The service's own checks (length, whitespace), as a form error, not a 500.
            try:
                secret = services.credential_clean_secret(secret)
            except ValidationError as error:
                raise forms.ValidationError(error.message_dict["secret"]) from None
        return secret


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(TenantScopedAdmin):
    form = ProviderCredentialForm
    list_display = ["name", "tenant", "kind", "secret_hint", "base_url", "secret_updated_at"]
    list_filter = ["kind", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = ["secret_hint", "secret_updated_at"]
        return fields if obj is None else ["tenant", "kind", *fields]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["tenant", "name", "kind", "secret", "base_url"]
        return [
            "tenant",
            "name",
            "kind",
            "secret",
            "base_url",
            "secret_hint",
            "secret_updated_at",
        ]

    def save_model(
        self, request: HttpRequest, obj: ProviderCredential, form: Any, change: bool
    ) -> None:
        secret = form.cleaned_data.get("secret", "")
        if not change:
            created = services.credential_create(
                tenant=obj.tenant,
                name=obj.name,
                kind=obj.kind,
                secret=secret,
                base_url=obj.base_url,
            )
            obj.__dict__.update({k: v for k, v in created.__dict__.items() if k != "_state"})
            obj._state.adding = False
            obj._state.db = created._state.db
            return
        ProviderCredential.objects.filter(pk=obj.pk).update(name=obj.name, base_url=obj.base_url)
        if secret:
            services.credential_set_secret(tenant=obj.tenant, credential=obj, secret=secret)
