"""OpenAPI pieces drf-spectacular cannot infer (loaded by ApiConfig.ready)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "api.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "rv_<prefix>_<secret>",
            "description": "A tenant API key (read or write scope).",
        }


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "Validation errors by field name.",
                },
                "retry_after_s": {"type": "integer"},
            },
        }
    },
}

ERRORS = {
    "400": "Invalid request: see error.fields",
    "401": "Missing, invalid, revoked or expired credentials",
    "403": "Not allowed (a read-only key or role writing)",
    "404": "No such object in this tenant",
    "405": "Method not allowed",
    "409": "Conflicts with the current state",
    "413": "Request body too large",
    "415": "Unsupported media type (send JSON)",
    "422": "Idempotency-Key reused with a different request",
    "429": "Rate limited: retry after error.retry_after_s",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: Any) -> Any:
    """Every operation documents the error body it can answer with (one shape for all)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in schemas.items():
        # Unknown fields are refused (api.serializers.StrictMixin): say so.
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
    schemas["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method.startswith("x-") or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for code, description in ERRORS.items():
                responses.setdefault(
                    code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
            if method == "post":
                parameters = operation.setdefault("parameters", [])
                parameters.append(
                    {
                        "in": "header",
                        "name": "Idempotency-Key",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 255},
                        "description": "A retry with the same key gets the first answer.",
                    }
                )
    return result
