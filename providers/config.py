"""Shared base and helpers for per-vendor ``provider_config`` schemas.

An Agent stores ``provider_config`` as a JSON object and a session may override it. Each
vendor module defines a strict, frozen :class:`ProviderConfig` subclass; callers validate
with :func:`validate_config` (which only ever raises :class:`ProviderConfigError`) and store
with :func:`config_to_dict` (only the keys the operator set, so an explicit ``null`` survives).

Convention for vendor modules: tagged unions use callable discriminators whose tags are
written ``"<name>"``; such tags are dropped from error paths, so a message names the option
the operator typed (``turn_detection.threshold``), not pydantic's union bookkeeping.
No Django imports here: this module must import without settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

__all__ = [
    "LANGUAGE_CODE_PATTERN",
    "LanguageCode",
    "ROOT_FIELD",
    "ProviderConfig",
    "ProviderConfigError",
    "config_to_dict",
    "cross_field_error",
    "validate_config",
]

# BCP-47-ish: "en", "fr", "pt-br", "en-US", "zh-Hant-TW".
LANGUAGE_CODE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
LanguageCode = Annotated[str, Field(pattern=LANGUAGE_CODE_PATTERN)]

# Field name used for errors about the config as a whole (e.g. it is not a JSON object).
ROOT_FIELD = "provider_config"


class ProviderConfig(BaseModel):
    """Base for vendor ``provider_config`` schemas: unknown keys rejected, immutable.

    ``strict`` keeps JSON types honest ("800" is not an int, 1.0 is not an int, true is not
    a number); ``allow_inf_nan=False`` rejects NaN/Infinity that Python's json accepts.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        strict=True,
        allow_inf_nan=False,
    )


class ProviderConfigError(ValueError):
    """Invalid ``provider_config``; ``errors`` lists ``{"field": ..., "message": ...}``.

    ``field`` is a dotted path such as ``turn_detection.threshold`` (list items as ``[i]``).
    ``str(err)`` is every error as ``field: message`` joined by ``"; "``.
    """

    def __init__(self, errors: Sequence[dict[str, str]]) -> None:
        self.errors: list[dict[str, str]] = [dict(e) for e in errors]
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in self.errors))

    def __reduce__(self) -> tuple[type[ProviderConfigError], tuple[list[dict[str, str]]]]:
        return (type(self), (self.errors,))


ConfigT = TypeVar("ConfigT", bound=ProviderConfig)


def validate_config(schema: type[ConfigT], data: object) -> ConfigT:
    """Validate ``data`` (a JSON object) against ``schema``.

    Raises ProviderConfigError for non-dict input, unknown keys, wrong types and
    out-of-range values; never pydantic's ValidationError.
    """
    if not isinstance(data, dict):
        raise ProviderConfigError(
            [{"field": ROOT_FIELD, "message": f"must be a JSON object, not {_json_type(data)}"}]
        )
    bad_keys = [key for key in data if not isinstance(key, str)]
    if bad_keys:
        raise ProviderConfigError(
            [
                {"field": ROOT_FIELD, "message": f"option names must be strings, got {k!r}"}
                for k in bad_keys
            ]
        )
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ProviderConfigError([_convert(err) for err in exc.errors()]) from None


def config_to_dict(config: ProviderConfig) -> dict[str, Any]:
    """The keys the operator set (nested too), as JSON-primitive values.

    Unset keys are left out, explicit ``None`` is kept, so
    ``validate_config(type(c), config_to_dict(c)) == c`` and a round trip through a JSON
    field does not turn "not set" into "set to null" or the reverse.
    """
    return config.model_dump(mode="json", exclude_unset=True)


def cross_field_error(model: str, errors: Sequence[tuple[str, str, object]]) -> ValidationError:
    """Build a ValidationError for cross-field checks in ``model_validator(mode="after")``.

    Each item is ``(field, message, value)``; raising the result from a validator keeps
    the field in the error path (nested models get their parent path prepended).
    """
    return ValidationError.from_exception_data(
        model,
        [
            InitErrorDetails(
                type=PydanticCustomError("config_conflict", message),
                loc=(field,),
                input=value,
            )
            for field, message, value in errors
        ],
    )


# -- error conversion ---------------------------------------------------------------------

_TYPE_MESSAGES: dict[str, str] = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
    "missing": "is required",
    "frozen_instance": "cannot be changed",
}

_BOUND_WORDS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


def _convert(err: ErrorDetails) -> dict[str, str]:
    loc = [part for part in err["loc"] if not _is_union_tag(part)]
    if len(loc) >= 2 and loc[-1] == "[key]":
        # A dict key failed (e.g. an empty variable name): name the dict, quote the key.
        key = loc[-2]
        return {"field": _dotted(loc[:-2]), "message": f"key {key!r} {_message(err, loc)}"}
    return {"field": _dotted(loc), "message": _message(err, loc)}


def _is_union_tag(part: int | str) -> bool:
    return isinstance(part, str) and len(part) > 2 and part.startswith("<") and part.endswith(">")


def _dotted(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path or ROOT_FIELD


def _message(err: ErrorDetails, loc: Sequence[int | str]) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    if kind == "extra_forbidden":
        return f"unknown option '{loc[-1]}'" if loc else "unknown option"
    if kind in _BOUND_WORDS:
        key, symbol = _BOUND_WORDS[kind]
        return f"must be {symbol} {_number(ctx.get(key))}"
    if kind == "literal_error":
        expected = str(ctx.get("expected"))
        single = " or " not in expected and ", " not in expected
        return f"must be {expected}" if single else f"must be one of {expected}"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else err["msg"]
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == LANGUAGE_CODE_PATTERN:
            return "must be a language code such as 'en' or 'en-US'"
        return f"must match the pattern {ctx.get('pattern')}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    msg = err["msg"]
    for prefix in ("Input should be ", "Value should be "):
        if msg.startswith(prefix):
            return "must be " + msg[len(prefix) :]
    return msg


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__
