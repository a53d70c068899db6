"""roomvoice.lib.env: typed environment readers that fail loudly, naming the variable."""

from __future__ import annotations

import pytest

from roomvoice.lib.env import (
    EnvError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_optional_str,
    env_str,
    env_url,
)

DB_SCHEMES = frozenset({"postgres", "postgresql", "sqlite"})
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})

# --- env_str / env_optional_str --------------------------------------------------------------


def test_env_str_returns_the_default_when_unset() -> None:
    assert env_str("NAME", "fallback", environ={}) == "fallback"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_env_str_treats_a_blank_value_as_unset(blank: str) -> None:
    assert env_str("NAME", "fallback", environ={"NAME": blank}) == "fallback"


def test_env_str_strips_the_value() -> None:
    assert env_str("NAME", "fallback", environ={"NAME": "  value \n"}) == "value"


def test_env_str_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROOMVOICE_TEST_ENV_STR", "from-os")

    assert env_str("ROOMVOICE_TEST_ENV_STR", "fallback") == "from-os"


def test_env_optional_str_is_none_when_unset_or_blank() -> None:
    assert env_optional_str("NAME", environ={}) is None
    assert env_optional_str("NAME", environ={"NAME": "  "}) is None


def test_env_optional_str_returns_the_stripped_value() -> None:
    assert env_optional_str("NAME", environ={"NAME": " x "}) == "x"


# --- env_bool ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "True", "yes", "on", " On "])
def test_env_bool_reads_true_spellings(value: str) -> None:
    assert env_bool("FLAG", False, environ={"FLAG": value}) is True


@pytest.mark.parametrize("value", ["0", "false", "FALSE", "no", "off", " Off "])
def test_env_bool_reads_false_spellings(value: str) -> None:
    assert env_bool("FLAG", True, environ={"FLAG": value}) is False


@pytest.mark.parametrize(("default", "environ"), [(True, {}), (False, {"FLAG": " "})])
def test_env_bool_returns_the_default_when_unset_or_blank(
    default: bool, environ: dict[str, str]
) -> None:
    assert env_bool("FLAG", default, environ=environ) is default


@pytest.mark.parametrize("value", ["ture", "2", "y", "enabled"])
def test_env_bool_rejects_other_values_naming_the_variable(value: str) -> None:
    with pytest.raises(EnvError) as caught:
        env_bool("DEBUG", False, environ={"DEBUG": value})

    assert str(caught.value) == (
        f"environment variable DEBUG={value!r} is invalid: "
        "expected one of 1/0, true/false, yes/no, on/off"
    )
    assert (caught.value.name, caught.value.value) == ("DEBUG", value)


def test_env_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="DEBUG"):
        env_bool("DEBUG", False, environ={"DEBUG": "maybe"})


# --- env_int ----------------------------------------------------------------------------------


def test_env_int_parses_an_integer() -> None:
    assert env_int("PORT", 8000, environ={"PORT": " 9000 "}) == 9000


def test_env_int_parses_a_negative_integer() -> None:
    assert env_int("OFFSET", 0, environ={"OFFSET": "-3"}) == -3


@pytest.mark.parametrize("environ", [{}, {"PORT": ""}])
def test_env_int_returns_the_default_when_unset_or_blank(environ: dict[str, str]) -> None:
    assert env_int("PORT", 8000, environ=environ) == 8000


@pytest.mark.parametrize("value", ["eighty", "1.5", "1e3", "0x10"])
def test_env_int_rejects_a_non_integer_naming_the_variable(value: str) -> None:
    with pytest.raises(EnvError) as caught:
        env_int("PORT", 8000, environ={"PORT": value})

    assert str(caught.value) == (
        f"environment variable PORT={value!r} is invalid: expected an integer"
    )


def test_env_int_accepts_the_bounds() -> None:
    assert env_int("N", 5, minimum=1, maximum=10, environ={"N": "1"}) == 1
    assert env_int("N", 5, minimum=1, maximum=10, environ={"N": "10"}) == 10


def test_env_int_below_the_minimum_names_the_variable_and_bound() -> None:
    with pytest.raises(EnvError) as caught:
        env_int("WORKERS", 4, minimum=1, environ={"WORKERS": "0"})

    assert str(caught.value) == "environment variable WORKERS='0' is invalid: expected a value >= 1"


def test_env_int_above_the_maximum_names_the_variable_and_bound() -> None:
    with pytest.raises(EnvError) as caught:
        env_int("WORKERS", 4, maximum=64, environ={"WORKERS": "65"})

    assert str(caught.value) == (
        "environment variable WORKERS='65' is invalid: expected a value <= 64"
    )


def test_env_int_default_is_not_range_checked() -> None:
    assert env_int("N", 0, minimum=1, environ={}) == 0


# --- env_float --------------------------------------------------------------------------------


def test_env_float_parses_a_number() -> None:
    assert env_float("RATIO", 0.5, environ={"RATIO": "0.25"}) == 0.25
    assert env_float("RATIO", 0.5, environ={"RATIO": "2"}) == 2.0


def test_env_float_returns_the_default_when_unset_or_blank() -> None:
    assert env_float("RATIO", 0.5, environ={"RATIO": "  "}) == 0.5


@pytest.mark.parametrize("value", ["half", "1,5", "-"])
def test_env_float_rejects_a_non_number_naming_the_variable(value: str) -> None:
    with pytest.raises(EnvError) as caught:
        env_float("RATIO", 0.5, environ={"RATIO": value})

    assert str(caught.value) == (
        f"environment variable RATIO={value!r} is invalid: expected a number"
    )


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_env_float_rejects_nan_and_infinity(value: str) -> None:
    with pytest.raises(EnvError) as caught:
        env_float("RATIO", 0.5, environ={"RATIO": value})

    assert str(caught.value) == (
        f"environment variable RATIO={value!r} is invalid: expected a finite number"
    )


def test_env_float_outside_the_range_names_the_variable_and_bound() -> None:
    with pytest.raises(EnvError) as low:
        env_float("RATIO", 0.5, minimum=0.0, maximum=1.0, environ={"RATIO": "-0.1"})
    with pytest.raises(EnvError) as high:
        env_float("RATIO", 0.5, minimum=0.0, maximum=1.0, environ={"RATIO": "1.5"})

    assert str(low.value) == "environment variable RATIO='-0.1' is invalid: expected a value >= 0.0"
    assert str(high.value) == "environment variable RATIO='1.5' is invalid: expected a value <= 1.0"


# --- env_list ---------------------------------------------------------------------------------


def test_env_list_splits_on_commas_and_strips_items() -> None:
    assert env_list("HOSTS", [], environ={"HOSTS": "a.example, b.example ,c"}) == [
        "a.example",
        "b.example",
        "c",
    ]


def test_env_list_of_one_item() -> None:
    assert env_list("HOSTS", [], environ={"HOSTS": "only"}) == ["only"]


def test_env_list_returns_a_copy_of_the_default_when_unset() -> None:
    default = ["localhost"]

    result = env_list("HOSTS", default, environ={"HOSTS": ""})
    result.append("mutated")

    assert default == ["localhost"]


@pytest.mark.parametrize("value", ["a,,b", "a,", ",a", "a, ,b"])
def test_env_list_rejects_empty_items_naming_the_variable(value: str) -> None:
    with pytest.raises(EnvError) as caught:
        env_list("ALLOWED_HOSTS", [], environ={"ALLOWED_HOSTS": value})

    assert str(caught.value) == (
        f"environment variable ALLOWED_HOSTS={value!r} is invalid: "
        "expected a comma-separated list without empty items"
    )


# --- env_url ----------------------------------------------------------------------------------


@pytest.mark.parametrize("environ", [{}, {"REDIS_URL": "  "}])
def test_env_url_is_none_when_unset_or_blank(environ: dict[str, str]) -> None:
    assert env_url("REDIS_URL", schemes=REDIS_SCHEMES, environ=environ) is None


@pytest.mark.parametrize(
    ("schemes", "value"),
    [
        (REDIS_SCHEMES, "redis://localhost:6379/0"),
        (REDIS_SCHEMES, "rediss://:p%40ss@cache.example:6380/1"),
        (REDIS_SCHEMES, "unix:///run/redis.sock"),
        (DB_SCHEMES, "postgres://app:secret@db.example:5432/roomvoice"),
        (DB_SCHEMES, "sqlite:////var/lib/roomvoice/db.sqlite3"),
    ],
)
def test_env_url_returns_a_url_with_an_allowed_scheme(schemes: frozenset[str], value: str) -> None:
    assert env_url("URL", schemes=schemes, environ={"URL": f" {value} "}) == value


@pytest.mark.parametrize("value", ["localhost:6379", "http://localhost:6379", "localhost"])
def test_env_url_rejects_another_scheme_naming_the_variable(value: str) -> None:
    with pytest.raises(EnvError) as caught:
        env_url("REDIS_URL", schemes=REDIS_SCHEMES, environ={"REDIS_URL": value})

    assert str(caught.value) == (
        f"environment variable REDIS_URL={value!r} is invalid: "
        "expected a URL with scheme redis, rediss, unix"
    )


def test_env_url_rejects_a_url_without_host_or_path() -> None:
    with pytest.raises(EnvError) as caught:
        env_url("REDIS_URL", schemes=REDIS_SCHEMES, environ={"REDIS_URL": "redis://"})

    assert str(caught.value) == (
        "environment variable REDIS_URL='redis://' is invalid: expected a URL naming a host"
    )


def test_env_url_masks_the_password_when_the_scheme_is_wrong() -> None:
    with pytest.raises(EnvError) as caught:
        env_url(
            "DATABASE_URL",
            schemes=DB_SCHEMES,
            environ={"DATABASE_URL": "mysql://app:hunter2@db.example/roomvoice"},
        )

    assert str(caught.value) == (
        "environment variable DATABASE_URL='mysql://app:***@db.example/roomvoice' is invalid: "
        "expected a URL with scheme postgres, postgresql, sqlite"
    )
    assert caught.value.value == "mysql://app:***@db.example/roomvoice"


def test_env_url_masks_a_password_without_a_user_when_the_host_is_missing() -> None:
    with pytest.raises(EnvError) as caught:
        env_url("REDIS_URL", schemes=REDIS_SCHEMES, environ={"REDIS_URL": "redis://:hunter2@"})

    assert "hunter2" not in str(caught.value)
    assert caught.value.value == "redis://:***@"


@pytest.mark.parametrize(
    ("value", "masked", "problem"),
    [
        (
            "redis://app:hunter2@[::1/0",
            "redis://***@[::1/0",
            "Invalid IPv6 URL",
        ),
        (
            "redis://app:hunter2@cache.example:63x9/0",
            "redis://app:***@cache.example:63x9/0",
            "Port could not be cast to integer value as '63x9'",
        ),
        (
            "redis://cache.example:99999/0",
            "redis://cache.example:99999/0",
            "Port out of range 0-65535",
        ),
    ],
)
def test_env_url_rejects_an_unparseable_url_naming_the_variable_with_the_password_masked(
    value: str, masked: str, problem: str
) -> None:
    with pytest.raises(EnvError) as caught:
        env_url("REDIS_URL", schemes=REDIS_SCHEMES, environ={"REDIS_URL": value})

    assert str(caught.value) == (
        f"environment variable REDIS_URL={masked!r} is invalid: "
        f"expected a parseable URL ({problem})"
    )
    assert "hunter2" not in str(caught.value)
