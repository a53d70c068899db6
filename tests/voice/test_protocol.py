"""voice.protocol: parsing client frames into audio and control messages, the error code each
bad frame is answered with (docs/protocol.md, "Bad input"), sample rates, and the flood
guard's token buckets on a fake clock."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from voice.protocol import (
    MAX_BINARY_FRAME_BYTES,
    MAX_TEXT_CHARS,
    MAX_TEXT_FRAME_BYTES,
    Audio,
    Control,
    FloodGuard,
    ProtocolError,
    Verdict,
    parse_binary,
    parse_sample_rate,
    parse_text,
)

PCM = b"\x01\x00\x02\x00\xff\x7f"  # three PCM16 samples


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1024.0

    def __call__(self) -> float:
        return self.now


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def problem_of(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_text(text)
    return caught.value


# -- valid frames ---------------------------------------------------------------------------


def test_a_binary_frame_parses_to_its_raw_audio() -> None:
    assert parse_binary(PCM) == Audio(PCM)


def test_an_empty_binary_frame_parses_to_empty_audio() -> None:
    assert parse_binary(b"") == Audio(b"")


def test_a_binary_frame_of_exactly_the_limit_is_accepted() -> None:
    data = b"\x00" * MAX_BINARY_FRAME_BYTES

    assert parse_binary(data) == Audio(data)


def test_an_audio_message_parses_to_its_decoded_pcm() -> None:
    assert parse_text(encode({"type": "audio", "data": b64(PCM)})) == Audio(PCM)


@pytest.mark.parametrize("kind", ["interrupt", "end"])
def test_a_control_without_fields_parses_with_empty_fields(kind: str) -> None:
    assert parse_text(encode({"type": kind})) == Control(kind, {})


def test_a_text_message_keeps_only_its_text() -> None:
    parsed = parse_text(encode({"type": "text", "text": "Hello there", "extra": 1}))

    assert parsed == Control("text", {"text": "Hello there"})


def test_a_text_message_of_exactly_the_character_limit_is_accepted() -> None:
    text = "a" * MAX_TEXT_CHARS

    assert parse_text(encode({"type": "text", "text": text})) == Control("text", {"text": text})


@pytest.mark.parametrize(("played", "expected"), [(0, 0), (1234, 1234), (1500.0, 1500)])
def test_a_playback_message_parses_its_played_ms_as_an_int(played: Any, expected: int) -> None:
    parsed = parse_text(encode({"type": "playback", "played_ms": played}))

    assert parsed == Control("playback", {"played_ms": expected})
    assert isinstance(parsed, Control)
    assert type(parsed.fields["played_ms"]) is int


def test_a_hello_parses_its_rate_and_format() -> None:
    parsed = parse_text(encode({"type": "hello", "sample_rate": 48000, "audio_format": "binary"}))

    assert parsed == Control("hello", {"sample_rate": 48000, "audio_format": "binary"})


def test_a_hello_without_fields_parses_with_empty_fields() -> None:
    assert parse_text(encode({"type": "hello"})) == Control("hello", {})


# -- bad_json -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["not json", "{", "", '{"type": "audio",}'])
def test_text_that_is_not_json_is_bad_json(text: str) -> None:
    problem = problem_of(text)

    assert (problem.code, problem.message) == ("bad_json", "the frame is not valid JSON")


@pytest.mark.parametrize("text", ["[1, 2]", '"audio"', "42", "null"])
def test_json_that_is_not_an_object_is_bad_json(text: str) -> None:
    problem = problem_of(text)

    assert (problem.code, problem.message) == (
        "bad_json",
        "a JSON object with a 'type' was expected",
    )


def test_json_nested_too_deep_to_decode_is_bad_json() -> None:
    problem = problem_of("[" * 50_000)

    assert problem.code == "bad_json"


# -- unknown_type ---------------------------------------------------------------------------


def test_a_type_the_protocol_does_not_have_is_unknown_type() -> None:
    problem = problem_of(encode({"type": "dance"}))

    assert (problem.code, problem.message) == ("unknown_type", "unknown message type 'dance'")


@pytest.mark.parametrize(
    ("message", "shown"), [({}, "NoneType"), ({"type": 5}, "int"), ({"type": ["end"]}, "list")]
)
def test_a_missing_or_non_string_type_is_unknown_type_named_by_its_python_type(
    message: dict[str, Any], shown: str
) -> None:
    problem = problem_of(encode(message))

    assert (problem.code, problem.message) == ("unknown_type", f"unknown message type {shown!r}")


def test_an_unknown_type_is_shown_cut_to_forty_characters() -> None:
    problem = problem_of(encode({"type": "x" * 500}))

    assert problem.message == f"unknown message type {'x' * 40!r}"


def test_server_message_types_are_unknown_when_a_client_sends_them() -> None:
    problem = problem_of(encode({"type": "session_started"}))

    assert problem.code == "unknown_type"


# -- bad_message ----------------------------------------------------------------------------


@pytest.mark.parametrize("message", [{"type": "audio"}, {"type": "audio", "data": 12}])
def test_an_audio_message_without_string_data_is_bad_message(message: dict[str, Any]) -> None:
    problem = problem_of(encode(message))

    assert (problem.code, problem.message) == ("bad_message", "audio needs 'data': base64 PCM16")


@pytest.mark.parametrize("played", [-1, "12", True, 1.5, None, [1]])
def test_a_playback_without_a_non_negative_integer_is_bad_message(played: Any) -> None:
    problem = problem_of(encode({"type": "playback", "played_ms": played}))

    assert (problem.code, problem.message) == (
        "bad_message",
        "'played_ms' must be a non-negative integer",
    )


def test_a_playback_without_played_ms_is_bad_message() -> None:
    assert problem_of(encode({"type": "playback"})).code == "bad_message"


@pytest.mark.parametrize("text", [None, "", "   \n", 42])
def test_a_text_message_without_non_blank_text_is_bad_message(text: Any) -> None:
    message: dict[str, Any] = {"type": "text"}
    if text is not None:
        message["text"] = text

    problem = problem_of(encode(message))

    assert (problem.code, problem.message) == ("bad_message", "'text' must be a non-empty string")


def test_a_text_message_over_the_character_limit_is_bad_message() -> None:
    problem = problem_of(encode({"type": "text", "text": "a" * (MAX_TEXT_CHARS + 1)}))

    assert (problem.code, problem.message) == (
        "bad_message",
        "'text' is limited to 4000 characters",
    )


@pytest.mark.parametrize("rate", [7999, 96000, "fast", 16000.5, True])
def test_a_hello_with_a_bad_sample_rate_is_bad_message(rate: Any) -> None:
    problem = problem_of(encode({"type": "hello", "sample_rate": rate}))

    assert problem.code == "bad_message"
    assert problem.message.startswith("'sample_rate' must be")


@pytest.mark.parametrize("audio_format", ["opus", "", None, 1])
def test_a_hello_with_an_unknown_audio_format_is_bad_message(audio_format: Any) -> None:
    problem = problem_of(encode({"type": "hello", "audio_format": audio_format}))

    assert (problem.code, problem.message) == (
        "bad_message",
        "'audio_format' must be one of ('base64_json', 'binary')",
    )


# -- bad_audio ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", ["@@@@", "AQ", "AQID!", "not base64 at all"])
def test_audio_data_that_is_not_valid_base64_is_bad_audio(data: str) -> None:
    problem = problem_of(encode({"type": "audio", "data": data}))

    assert (problem.code, problem.message) == ("bad_audio", "audio 'data' is not valid base64")


def test_base64_audio_with_an_odd_number_of_bytes_is_bad_audio() -> None:
    problem = problem_of(encode({"type": "audio", "data": b64(b"\x01\x02\x03")}))

    assert (problem.code, problem.message) == (
        "bad_audio",
        "PCM16 audio has 2 bytes per sample; got an odd 3 bytes",
    )


def test_a_binary_frame_with_an_odd_number_of_bytes_is_bad_audio() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_binary(b"\x01\x02\x03")

    assert (caught.value.code, caught.value.message) == (
        "bad_audio",
        "PCM16 audio has 2 bytes per sample; got an odd 3 bytes",
    )


# -- frame_too_large ------------------------------------------------------------------------


def test_a_binary_frame_over_the_limit_is_frame_too_large() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_binary(b"\x00" * (MAX_BINARY_FRAME_BYTES + 2))

    assert (caught.value.code, caught.value.message) == (
        "frame_too_large",
        "binary frames are limited to 65536 bytes, got 65538",
    )


def test_a_text_frame_over_the_limit_is_frame_too_large_before_it_is_decoded() -> None:
    # Not even JSON: the size check comes before the parse.
    problem = problem_of("x" * (MAX_TEXT_FRAME_BYTES + 1))

    assert (problem.code, problem.message) == (
        "frame_too_large",
        "text frames are limited to 98304 bytes",
    )


def test_a_text_frame_of_exactly_the_limit_is_parsed() -> None:
    text = encode({"type": "end", "pad": ""})
    text = text[:-2] + "x" * (MAX_TEXT_FRAME_BYTES - len(text)) + text[-2:]
    assert len(text) == MAX_TEXT_FRAME_BYTES

    assert parse_text(text) == Control("end", {})


def test_a_protocol_error_renders_as_an_error_message() -> None:
    problem = ProtocolError("busy", "too many messages waiting")

    assert problem.as_message() == {
        "type": "error",
        "code": "busy",
        "message": "too many messages waiting",
    }
    assert str(problem) == "too many messages waiting"


# -- sample rates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(8000, 8000), (16000, 16000), (48000, 48000), ("44100", 44100), (" 16000 ", 16000)],
)
def test_parse_sample_rate_accepts_ints_and_digit_strings_within_bounds(
    value: Any, expected: int
) -> None:
    assert parse_sample_rate(value) == expected


@pytest.mark.parametrize("value", [7999, 48001, 0, -16000, "7999", "48001"])
def test_parse_sample_rate_refuses_rates_outside_8000_to_48000(value: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_sample_rate(value)

    assert (caught.value.code, caught.value.message) == (
        "bad_message",
        "'sample_rate' must be between 8000 and 48000 Hz",
    )


@pytest.mark.parametrize("value", ["16k", "", "-16000", "16000.0", 16000.0, True, None, [16000]])
def test_parse_sample_rate_refuses_what_is_not_an_integer(value: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_sample_rate(value)

    assert (caught.value.code, caught.value.message) == (
        "bad_message",
        "'sample_rate' must be an integer number of Hz",
    )


# -- the flood guard ------------------------------------------------------------------------


def guard(clock: FakeClock, **options: Any) -> FloodGuard:
    settings: dict[str, Any] = {"frames_per_s": 10.0, "bytes_per_s": 1_000_000.0, "burst_s": 1.0}
    settings.update(options)
    return FloodGuard(clock=clock, **settings)


def test_the_guard_admits_traffic_within_the_rate() -> None:
    clock = FakeClock()
    flood = guard(clock)

    verdicts = []
    for _ in range(50):  # 10 frames/s for 5 s: exactly the rate
        verdicts.append(flood.admit(640))
        clock.now += 0.1

    assert verdicts == [Verdict.ADMIT] * 50
    assert flood.dropped == 0


def test_the_guard_admits_a_burst_up_to_its_capacity_then_drops() -> None:
    clock = FakeClock()
    flood = guard(clock, burst_s=2.0)  # 20 frames

    verdicts = [flood.admit(640) for _ in range(23)]

    assert verdicts == [Verdict.ADMIT] * 20 + [Verdict.DROP] * 3
    assert flood.dropped == 3


def test_the_guard_refills_over_time_and_never_beyond_its_capacity() -> None:
    clock = FakeClock()
    flood = guard(clock)
    assert [flood.admit(1) for _ in range(11)] == [Verdict.ADMIT] * 10 + [Verdict.DROP]

    clock.now += 0.5  # five frames' worth
    assert [flood.admit(1) for _ in range(6)] == [Verdict.ADMIT] * 5 + [Verdict.DROP]

    clock.now += 60.0  # a long pause refills to the burst capacity, not more
    assert [flood.admit(1) for _ in range(11)] == [Verdict.ADMIT] * 10 + [Verdict.DROP]


def test_the_guard_drops_audio_beyond_the_byte_rate_even_when_frames_are_few() -> None:
    clock = FakeClock()
    flood = guard(clock, bytes_per_s=100.0, burst_s=2.0)  # 200 bytes of burst

    assert flood.admit(150) == Verdict.ADMIT
    assert flood.admit(100) == Verdict.DROP
    assert flood.admit(50) == Verdict.ADMIT
    clock.now += 1.0
    assert flood.admit(100) == Verdict.ADMIT
    assert flood.dropped == 1


def test_a_dropped_frame_costs_no_tokens() -> None:
    clock = FakeClock()
    flood = guard(clock, bytes_per_s=100.0, burst_s=2.0)

    assert flood.admit(500) == Verdict.DROP  # larger than the whole bucket
    assert flood.admit(200) == Verdict.ADMIT


def test_the_guard_says_close_after_more_than_flood_drops_within_the_window() -> None:
    clock = FakeClock()
    flood = guard(clock, frames_per_s=1.0, burst_s=1.0, flood_drops=3, flood_window_s=5.0)
    assert flood.admit(1) == Verdict.ADMIT

    verdicts = [flood.admit(1) for _ in range(4)]

    assert verdicts == [Verdict.DROP, Verdict.DROP, Verdict.DROP, Verdict.CLOSE]
    assert flood.dropped == 4


def test_the_default_guard_closes_on_the_five_hundred_and_first_drop() -> None:
    clock = FakeClock()
    flood = FloodGuard(bytes_per_s=1_000_000.0, clock=clock)  # 100 frames/s, 2 s burst

    verdicts = [flood.admit(2) for _ in range(200 + 501)]

    assert verdicts[:200] == [Verdict.ADMIT] * 200
    assert verdicts[200:700] == [Verdict.DROP] * 500
    assert verdicts[700] == Verdict.CLOSE


def test_drops_spread_out_over_more_than_the_window_never_close() -> None:
    clock = FakeClock()
    # Every frame is larger than the byte bucket: all of them are dropped.
    flood = guard(clock, bytes_per_s=10.0, flood_drops=3, flood_window_s=5.0)

    verdicts = []
    for _ in range(20):
        verdicts.append(flood.admit(1000))
        clock.now += 2.0  # three drops at most in any 5 s

    assert verdicts == [Verdict.DROP] * 20
    assert flood.dropped == 20


def test_a_drop_exactly_one_window_old_no_longer_counts() -> None:
    clock = FakeClock()
    flood = guard(clock, bytes_per_s=10.0, flood_drops=3, flood_window_s=5.0)
    verdicts = []
    for step in (0.0, 1.0, 1.0):  # drops at t, t+1, t+2
        clock.now += step
        verdicts.append(flood.admit(1000))

    clock.now += 3.0  # t+5: the drop at t leaves the window
    verdicts.append(flood.admit(1000))
    verdicts.append(flood.admit(1000))  # a fourth drop within (t, t+5]

    assert verdicts == [Verdict.DROP] * 4 + [Verdict.CLOSE]


def test_should_warn_is_true_at_most_once_a_second() -> None:
    clock = FakeClock()
    flood = guard(clock)

    answers = []
    for step in (0.0, 0.0, 0.5, 0.5, 0.2, 0.9, 0.1, 5.0):
        clock.now += step
        answers.append(flood.should_warn())

    # t: 0 → yes, 0 → no, 0.5 → no, 1.0 → yes, 1.2 → no, 2.1 → yes, 2.2 → no, 7.2 → yes
    assert answers == [True, False, False, True, False, True, False, True]
