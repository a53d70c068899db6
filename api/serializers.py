"""Serializers shared by the API's resources."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictMixin:
    """Unknown fields are an error naming them, not silently dropped (a typo in a field
    name must not look like success)."""

    initial_data: Any
    fields: Any

    def validate_unknown(self, data: Any) -> None:
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})


class StrictSerializer(StrictMixin, serializers.Serializer):  # type: ignore[type-arg]
    def to_internal_value(self, data: Any) -> Any:
        self.validate_unknown(data)
        return super().to_internal_value(data)


class StrictModelSerializer(StrictMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    def to_internal_value(self, data: Any) -> Any:
        self.validate_unknown(data)
        return super().to_internal_value(data)
