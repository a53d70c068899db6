"""providers.local.brain: what the offline provider says or calls for what the caller said."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest

from providers.local.brain import (
    MAX_REPLY_CHARS,
    Brain,
    CallTool,
    Rule,
    Say,
    compile_rules,
    normalise,
)

# Tuesday, March 5, 2024, 3:42 PM
NOW = datetime(2024, 3, 5, 15, 42)


def clock() -> datetime:
    return NOW


def function(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A tool definition as the engine gives it to providers (voice.kit.Tool.definition)."""
    return {
        "type": "function",
        "name": name,
        "description": f"The {name} tool.",
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


GET_WEATHER = function(
    "get_weather",
    {
        "city": {"type": "string", "description": "The city."},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    ["city"],
)
SET_TIMER = function(
    "set_timer",
    {"minutes": {"type": "integer"}, "label": {"type": "string"}},
    ["minutes"],
)
BOOK_TABLE = function(
    "book_table",
    {"people": {"type": "integer"}, "time": {"type": "string"}, "outdoor": {"type": "boolean"}},
    ["people", "time"],
)
LOOKUP_ORDER = function("lookup_order", {"order_number": {"type": "string"}}, ["order_number"])
SET_THERMOSTAT = function("set_thermostat", {"temperature": {"type": "number"}}, ["temperature"])
TOOLS = [GET_WEATHER, SET_TIMER, BOOK_TABLE, LOOKUP_ORDER, SET_THERMOSTAT]


def brain(**options: Any) -> Brain:
    options.setdefault("agent_name", "Ava")
    options.setdefault("clock", clock)
    return Brain(**options)


def said(decision: Say | CallTool) -> str:
    assert isinstance(decision, Say), decision
    return decision.text


# -- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heard", "normalised"),
    [
        ("What's the weather in Paris?", "what is the weather in paris"),
        ("Set a timer for 10 minutes.", "set a timer for 10 minutes"),
        ("Set a timer for ten minutes.", "set a timer for 10 minutes"),
        ("My number is 5, 5, 1, 2, 3, 4.", "my number is 5 5 1 2 3 4"),
        ("five five five", "5 5 5"),
        ("twenty two", "22"),
        ("twenty-two people", "22 people"),
        ("two hundred and five", "205"),
        ("three point five", "3.5"),
        ("10 thousand", "10000"),
        ("It costs 5,000 dollars, or 3.5%.", "it costs 5000 dollars or 3.5 percent"),
        ("$20 & change", "20 dollars and change"),
        ("At 7:30 p.m.!", "at 7:30 pm"),
        ("I'm sure it's fine", "i am sure it is fine"),
        (
            "Don't, won't, can't, let's, you're, I'll, we've",
            ("do not will not can not let us you are i will we have"),
        ),
        ("Today’s date", "todays date"),
        ("No one knows which one", "no one knows which one"),
        ("  Hello,   WORLD!!  ", "hello world"),
        ("mail bob@example.com", "mail bob@example.com"),
        ("...", ""),
    ],
)
def test_normalise_reads_whisper_text_as_spoken_words(heard: str, normalised: str) -> None:
    assert normalise(heard) == normalised


# -- built-in answers ---------------------------------------------------------------------


def test_greeting_names_the_agent_and_its_tools() -> None:
    assert said(brain(tools=[GET_WEATHER, SET_TIMER]).respond("Hello!")) == (
        "Hello, I'm Ava. I can get the weather or set the timer."
    )


def test_greeting_without_tools_hints_at_the_time_or_a_joke() -> None:
    assert said(brain().respond("Good morning.")) == (
        "Good morning, I'm Ava. You can ask me the time, or for a joke."
    )


def test_greeting_first_is_the_same_greeting_and_can_be_repeated() -> None:
    ava = brain(tools=[GET_WEATHER])
    assert ava.greeting() == "Hello, I'm Ava. I can get the weather."
    assert said(ava.respond("Can you say that again?")) == "Hello, I'm Ava. I can get the weather."


@pytest.mark.parametrize(
    ("heard", "reply"),
    [
        ("What time is it?", "It is 3:42 PM."),
        ("what's the time", "It is 3:42 PM."),
        ("What's the date today?", "Today is Tuesday, March 5, 2024."),
        ("What day is it?", "Today is Tuesday, March 5, 2024."),
        ("What's your name?", "I'm Ava."),
        ("Who are you?", "I'm Ava."),
        ("Thank you.", "You're welcome."),
        ("Thanks, bye!", "Goodbye!"),
        ("Goodbye.", "Goodbye!"),
        ("How are you?", "I'm doing well, thank you. How can I help?"),
    ],
)
def test_builtin_answers(heard: str, reply: str) -> None:
    assert said(brain().respond(heard)) == reply


def test_time_is_read_from_the_clock_in_twelve_hours() -> None:
    morning = brain(clock=lambda: datetime(2024, 12, 31, 0, 5))
    assert said(morning.respond("what time is it")) == "It is 12:05 AM."
    assert said(morning.respond("what's the date")) == "Today is Tuesday, December 31, 2024."


def test_help_lists_the_tools_and_the_builtin_abilities() -> None:
    assert said(brain(tools=[GET_WEATHER, BOOK_TABLE]).respond("What can you do?")) == (
        "I can get the weather or book the table. "
        "I can also tell you the time or the date, or tell you a joke."
    )
    assert said(brain().respond("help")) == (
        "I can tell you the time or the date, tell you a joke, or say again what I just said."
    )


def test_jokes_rotate_deterministically() -> None:
    ava = brain()
    first = said(ava.respond("Tell me a joke."))
    second = said(ava.respond("Another joke, please."))
    assert first == "Why did the scarecrow win an award? Because he was outstanding in his field."
    assert second == "Why don't skeletons fight each other? They don't have the guts."
    assert said(brain().respond("tell me a joke")) == first


def test_repeat_says_the_last_thing_again() -> None:
    ava = brain()
    assert said(ava.respond("repeat that")) == "I haven't said anything yet."
    ava.respond("What time is it?")
    assert said(ava.respond("Sorry, what did you say?")) == "It is 3:42 PM."
    assert said(ava.respond("Could you repeat?")) == "It is 3:42 PM."
    assert said(ava.respond("Please repeat after me: the green garden.")) == (
        'I heard: "Please repeat after me: the green garden."'
    )


def test_builtin_rules_can_be_turned_off() -> None:
    ava = brain(builtin_rules=False)
    assert said(ava.respond("What time is it?")) == 'I heard: "What time is it?"'
    assert ava.greeting() == "Hello, I'm Ava. You can ask me the time, or for a joke."


def test_the_default_agent_name() -> None:
    assert said(Brain(clock=clock).respond("what's your name")) == "I'm the assistant."


# -- fallback -----------------------------------------------------------------------------


def test_fallback_says_what_it_heard_as_heard() -> None:
    assert said(brain(tools=TOOLS).respond("  Tell me about   the Eiffel Tower. ")) == (
        'I heard: "Tell me about the Eiffel Tower."'
    )


@pytest.mark.parametrize("heard", ["", "   ", "...", "\n"])
def test_nothing_heard_asks_again(heard: str) -> None:
    assert said(brain().respond(heard)) == "Sorry, I didn't catch that."


def test_a_long_utterance_is_echoed_shortened() -> None:
    reply = said(brain().respond("blah " * 100))
    assert reply.startswith('I heard: "blah blah')
    assert reply.endswith('…"')
    assert len(reply) < 230


# -- operator rules -----------------------------------------------------------------------


def test_operator_rules_win_over_tools_and_builtins() -> None:
    rules = compile_rules(
        [
            {"match": "weather", "reply": "Look out of the window."},
            {"match": "hello|hi there", "reply": "Hi from {agent}."},
        ]
    )
    ava = brain(tools=[GET_WEATHER], rules=rules)
    assert said(ava.respond("What's the weather in Paris?")) == "Look out of the window."
    assert said(ava.respond("Hello!")) == "Hi from Ava."


def test_the_first_matching_rule_wins() -> None:
    rules = compile_rules(
        [{"match": "order", "reply": "First."}, {"match": "order status", "reply": "Second."}]
    )
    assert said(brain(rules=rules).respond("order status")) == "First."


def test_rule_reply_fills_named_groups_as_written_and_the_fields() -> None:
    rules = compile_rules(
        [
            {
                "match": r"weather in (?P<city>\w+(?: \w+)?)",
                "reply": (
                    "{agent} has no forecast for {city} at {time} on {date}. You said: {heard}"
                ),
            }
        ]
    )
    assert said(brain(rules=rules).respond("What's the weather in New York?")) == (
        "Ava has no forecast for New York at 3:42 PM on Tuesday, March 5, 2024. "
        "You said: What's the weather in New York?"
    )


def test_rule_groups_are_digits_and_unmatched_optional_groups_are_empty() -> None:
    rules = compile_rules(
        [{"match": r"room (?P<room>\d+)(?P<wing> east)?", "reply": "Room {room}{wing}."}]
    )
    assert said(brain(rules=rules).respond("Room twenty two, please")) == "Room 22."


def test_plain_word_rules_match_whole_words_as_spoken() -> None:
    rules = compile_rules([{"match": "What's up|hi there", "reply": "Not much."}])
    ava = brain(rules=rules)
    assert said(ava.respond("what is up?")) == "Not much."
    assert said(ava.respond("Hi there!")) == "Not much."
    assert said(ava.respond("this hi therefore")) != "Not much."


def test_regex_rules_are_case_insensitive() -> None:
    rules = compile_rules([{"match": r"^OPEN (the )?DOOR", "reply": "Opening."}])
    assert said(brain(rules=rules).respond("Open the door.")) == "Opening."


def test_set_rules_replaces_the_rules() -> None:
    ava = brain(rules=compile_rules([{"match": "ping", "reply": "Pong."}]))
    ava.set_rules(compile_rules([{"match": "ping", "reply": "Pong again."}]))
    assert said(ava.respond("ping")) == "Pong again."


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [{"match": "hi", "reply": "ok"}, {"match": "wea(ther", "reply": "x"}],
            "rule 2 (match 'wea(ther'): the match is not a valid regular expression: "
            "missing ), unterminated subpattern at position 3",
        ),
        ([{"match": "hi", "reply": "   "}], "rule 1 (match 'hi'): the reply is empty"),
        (
            [{"match": "hi", "reply": "Hello {name}"}],
            "rule 1 (match 'hi'): the reply uses {name}, which is not a field: use {agent}, "
            "{time}, {date}, {heard} or a named group of the match, such as (?P<name>...)",
        ),
        (
            [{"match": "hi", "reply": "Hello {"}],
            "rule 1 (match 'hi'): the reply has an unmatched { or }; "
            "write {{ or }} for a literal brace",
        ),
        (
            [{"match": "hi", "reply": "{}"}],
            "rule 1 (match 'hi'): the reply has an empty {}; name a field in it, such as {agent}",
        ),
        (
            [{"match": "hi", "reply": "{time!r}"}],
            "rule 1 (match 'hi'): the reply field {time} has a conversion or format after its "
            "name; write just {time}",
        ),
        (
            [{"match": "hi", "reply": "{heard.upper}"}],
            "rule 1 (match 'hi'): the reply uses {heard.upper}, which is not a field: use "
            "{agent}, {time}, {date}, {heard} or a named group of the match",
        ),
        (
            [{"match": "hi|", "reply": "x"}],
            "rule 1 (match 'hi|'): the match has an empty alternative (a stray \"|\"?)",
        ),
        ([{"match": "  ", "reply": "x"}], "rule 1 (match '  '): the match is empty"),
        ([{"reply": "x"}], 'rule 1: "match" is missing'),
        ([{"match": "hi", "reply": 3}], "rule 1 (match 'hi'): \"reply\" must be text, not int"),
        (
            [{"match": "hi", "replay": "x"}],
            'rule 1 (match \'hi\'): unknown key "replay" (a rule has "match" and "reply")',
        ),
        ([["hi", "x"]], 'rule 1: a rule is an object with "match" and "reply", not list'),
        ("hi", 'rules must be a list of {"match": ..., "reply": ...} objects'),
    ],
)
def test_compile_rules_names_the_bad_rule(items: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        compile_rules(items)
    assert str(raised.value) == message


def test_compile_rules_accepts_an_empty_table() -> None:
    assert compile_rules([]) == []


def test_a_rule_built_directly_is_checked_too() -> None:
    with pytest.raises(ValueError, match=r"the reply uses \{city\}"):
        Rule(re.compile("weather"), "It is sunny in {city}.")
    rule = Rule(re.compile(r"weather in (?P<city>\w+)"), "It is sunny in {city}.")
    assert said(brain(rules=[rule]).respond("weather in Oslo")) == "It is sunny in Oslo."


# -- tools: naming and arguments ----------------------------------------------------------


@pytest.mark.parametrize(
    ("heard", "name", "arguments"),
    [
        ("What's the weather in Paris?", "get_weather", {"city": "Paris"}),
        ("weather for San Francisco today", "get_weather", {"city": "San Francisco"}),
        (
            "What's the weather in Oslo in Fahrenheit?",
            "get_weather",
            {"city": "Oslo", "unit": "fahrenheit"},
        ),
        ("get weather in lima", "get_weather", {"city": "lima"}),
        ("Set a timer for 10 minutes.", "set_timer", {"minutes": 10}),
        (
            "Set a timer for ten minutes called pasta.",
            "set_timer",
            {"minutes": 10, "label": "pasta"},
        ),
        ("set a timer for 5", "set_timer", {"minutes": 5}),
        ("Book a table for two people at 7 PM.", "book_table", {"people": 2, "time": "7 PM"}),
        ("Book a table for 4 at 7:30 p.m.", "book_table", {"people": 4, "time": "7:30 p.m."}),
        (
            "Book a table for 2 at 8, outdoor please.",
            "book_table",
            {"people": 2, "time": "8", "outdoor": True},
        ),
        (
            "Book a table for 2 at 8, not outdoor.",
            "book_table",
            {"people": 2, "time": "8", "outdoor": False},
        ),
        ("Where is my order 1234?", "lookup_order", {"order_number": "1234"}),
        ("My order number is 5, 5, 1, 2, 3, 4.", "lookup_order", {"order_number": "551234"}),
        ("look up order number one two three four", "lookup_order", {"order_number": "1234"}),
        ("Set the thermostat to 21.5 degrees.", "set_thermostat", {"temperature": 21.5}),
        ("thermostat to twenty", "set_thermostat", {"temperature": 20.0}),
    ],
)
def test_a_named_tool_is_called_with_the_arguments_heard(
    heard: str, name: str, arguments: dict[str, Any]
) -> None:
    decision = brain(tools=TOOLS).respond(heard)
    assert decision == CallTool(name, arguments)


def test_arguments_are_typed_as_the_schema_says() -> None:
    timer = brain(tools=TOOLS).respond("set a timer for 10 minutes")
    thermostat = brain(tools=TOOLS).respond("set the thermostat to 20")
    assert isinstance(timer, CallTool) and isinstance(thermostat, CallTool)
    assert type(timer.arguments["minutes"]) is int
    assert type(thermostat.arguments["temperature"]) is float


def test_a_reservation_names_a_booking_tool_by_its_stem() -> None:
    reserve = function("make_reservation", {"people": {"type": "integer"}}, ["people"])
    assert brain(tools=[GET_WEATHER, reserve]).respond("I want to reserve for 3 people") == (
        CallTool("make_reservation", {"people": 3})
    )


def test_a_number_in_another_unit_is_not_taken() -> None:
    assert said(brain(tools=TOOLS).respond("Set a timer for 10 seconds.")) == (
        "To set the timer, I need the minutes."
    )


def test_a_time_is_not_taken_for_a_count() -> None:
    assert said(brain(tools=TOOLS).respond("Book a table at 8.")) == (
        "To book the table, I need the people."
    )


def test_a_missing_required_argument_is_asked_for_never_invented() -> None:
    ava = brain(tools=TOOLS)
    assert said(ava.respond("What's the weather like?")) == "To get the weather, I need the city."
    assert said(ava.respond("Weather in my city")) == "To get the weather, I need the city."
    assert said(ava.respond("Book a table")) == (
        "To book the table, I need the people and the time."
    )


def test_the_answer_to_a_question_completes_the_call() -> None:
    ava = brain(tools=TOOLS)
    ava.respond("What's the weather?")
    assert ava.respond("In Paris, please.") == CallTool("get_weather", {"city": "Paris"})
    ava.respond("Book a table for two people")
    assert ava.respond("At 8 PM.") == CallTool("book_table", {"people": 2, "time": "8 PM"})
    ava.respond("set a timer")
    assert ava.respond("Fifteen.") == CallTool("set_timer", {"minutes": 15})


def test_naming_the_tool_again_keeps_what_was_said_and_takes_the_new() -> None:
    ava = brain(tools=TOOLS)
    ava.respond("Book a table for 2 people")
    assert ava.respond("book the table at 9 for 3 people") == (
        CallTool("book_table", {"people": 3, "time": "9"})
    )


def test_a_question_can_be_cancelled_and_is_forgotten_after_another_topic() -> None:
    ava = brain(tools=TOOLS)
    ava.respond("What's the weather?")
    assert said(ava.respond("Never mind.")) == "Okay, never mind."
    assert said(ava.respond("Paris")) == 'I heard: "Paris."'
    ava.respond("What's the weather?")
    assert said(ava.respond("What time is it?")) == "It is 3:42 PM."
    assert said(ava.respond("Paris")) == 'I heard: "Paris."'


def test_a_new_request_is_not_taken_for_an_answer() -> None:
    ava = brain(tools=TOOLS)
    ava.respond("What's the weather?")
    assert said(ava.respond("Check the garden")) == 'I heard: "Check the garden."'


def test_several_tools_named_the_most_specific_wins() -> None:
    lookup = function("get_order", {"order_id": {"type": "string"}}, ["order_id"])
    cancel = function("cancel_order", {"order_id": {"type": "string"}}, ["order_id"])
    tools = [lookup, cancel]
    assert brain(tools=tools).respond("Please cancel order 42") == (
        CallTool("cancel_order", {"order_id": "42"})
    )
    assert brain(tools=tools).respond("Where is order 42?") == (
        CallTool("get_order", {"order_id": "42"})
    )


def test_ties_go_to_the_first_tool() -> None:
    first = function("find_order", {}, [])
    second = function("show_order", {}, [])
    assert brain(tools=[first, second]).respond("my order") == CallTool("find_order", {})


@pytest.mark.parametrize(
    "heard",
    [
        "Tell me about the Eiffel Tower.",
        "What's the time in Tokyo?",  # "time" is no "timer"
        "Whether or not you like it",  # "whether" is no "weather"
    ],
)
def test_an_utterance_naming_no_tool_calls_none(heard: str) -> None:
    assert isinstance(brain(tools=TOOLS).respond(heard), Say)


def test_a_tool_beats_a_builtin_answer() -> None:
    get_time = function("get_current_time", {"timezone": {"type": "string"}}, [])
    assert brain(tools=[get_time]).respond("What time is it in Tokyo?") == (
        CallTool("get_current_time", {"timezone": "Tokyo"})
    )


def test_tool_definitions_flat_wrapped_or_camel_case_and_native_tools_ignored() -> None:
    wrapped = {"type": "function", "function": {"name": "bookTable", "parameters": {}}}
    native = {"type": "web_search"}
    nameless = {"type": "function", "parameters": {}}
    ava = brain(tools=[native, nameless, wrapped, "junk"])
    assert ava.respond("a table please") == CallTool("bookTable", {})


def test_set_tools_replaces_the_tools() -> None:
    ava = brain(tools=[GET_WEATHER])
    ava.set_tools([SET_TIMER])
    assert isinstance(ava.respond("weather in Paris"), Say)
    assert ava.respond("timer for 3 minutes") == CallTool("set_timer", {"minutes": 3})


def test_an_enum_value_heard_is_given_as_the_schema_spells_it() -> None:
    mode = function(
        "set_mode", {"mode": {"type": "string", "enum": ["Eco", "Turbo_Boost"]}}, ["mode"]
    )
    assert brain(tools=[mode]).respond("set mode to turbo boost") == (
        CallTool("set_mode", {"mode": "Turbo_Boost"})
    )
    assert said(brain(tools=[mode]).respond("set mode to fast")) == (
        "To set the mode, I need the mode."
    )


def test_a_required_argument_the_schema_does_not_describe_is_asked_for() -> None:
    odd = {"name": "send_report", "parameters": {"type": "object", "required": ["recipients"]}}
    assert said(brain(tools=[odd]).respond("send the report")) == (
        "To send the report, I need the recipients."
    )


def test_a_tool_not_named_by_a_verb_is_asked_about_as_a_tool() -> None:
    weather = function("weather", {"city": {"type": "string"}}, ["city"])
    assert said(brain(tools=[weather]).respond("weather")) == (
        "To use the weather tool, I need the city."
    )


# -- tool results -------------------------------------------------------------------------


def test_a_json_object_is_read_as_key_value_pairs() -> None:
    result = json.dumps({"temperature_c": 21.0, "conditions": "sunny", "wind": {"speed": 5}})
    assert said(brain(tools=TOOLS).after_tool("get_weather", {"city": "Paris"}, result)) == (
        "Get weather says temperature c: 21, conditions: sunny, wind speed: 5."
    )


def test_a_long_json_object_is_summarised() -> None:
    result = json.dumps(
        {
            "a": 1,
            "b": True,
            "c": None,
            "d": [1, 2, 3, 4, 5],
            "e": [{"x": 1}, {"y": 2}],
            "f": {},
            "g": 7,
        }
    )
    assert said(brain().after_tool("fetch_data", {}, result)) == (
        "Fetch data says a: 1, b: yes, c: none, d: 1, 2, 3 and 2 more, e: 2 items, f: none, "
        "and more."
    )


def test_a_message_in_a_json_object_is_said_as_it_is() -> None:
    result = json.dumps({"ok": True, "message": "Timer set for **10 minutes** ⏰"})
    assert said(brain().after_tool("set_timer", {}, result)) == "Timer set for 10 minutes."


@pytest.mark.parametrize(
    ("result", "reply"),
    [
        ('{"error": "City not found"}', "The get weather tool failed: City not found."),
        (
            '{"error": "Tool \'get_weather\' timed out after 10 s"}',
            "The get weather tool failed: Tool 'get_weather' timed out after 10 s.",
        ),
        ('{"error": {"message": "bad key", "code": 3}}', "The get weather tool failed: bad key."),
        (
            '{"error": true, "message": "no such city"}',
            "The get weather tool failed: no such city.",
        ),
        ("Error: the service is down.", "The get weather tool failed: the service is down."),
        ("error", "The get weather tool failed."),
        ("false", "The get weather tool failed."),
    ],
)
def test_an_error_result_says_the_tool_failed(result: str, reply: str) -> None:
    assert said(brain(tools=TOOLS).after_tool("get_weather", {}, result)) == reply


@pytest.mark.parametrize(
    ("result", "reply"),
    [
        ('"It is sunny in Paris"', "It is sunny in Paris."),
        ("42", "42."),
        ("3.14159", "3.14."),
        ("It is sunny.", "It is sunny."),
        ("Errors: none", "Errors: none."),
        ("[1, 2, 3]", "Get weather returned 1, 2 and 3."),
        ('{"result": "sunny"}', "sunny."),
        ('{"error": null, "temp": 3}', "Get weather says temp: 3."),
        ("{}", "Done."),
        ("null", "Done."),
        ("", "Done."),
        ("# Title\n- **bold** item\n- [a link](http://x)", "Title bold item a link."),
    ],
)
def test_a_result_is_said_in_plain_words(result: str, reply: str) -> None:
    assert said(brain().after_tool("get_weather", {}, result)) == reply


@pytest.mark.parametrize(
    "result",
    [
        "[" * 100_000,
        '{"a":' * 5000 + "1" + "}" * 5000,
        "{not json",
        "\x00\x01\x02 garbage \ud800",
        "word " * 100_000,
        json.dumps({"k": "v" * 10_000}),
        json.dumps(list(range(100_000))),
        "x" * 2_000_000,
        "1" * 5000,
        "NaN",
    ],
)
def test_any_result_gives_a_short_reply_and_never_raises(result: str) -> None:
    reply = said(brain().after_tool("get_weather", {}, result))
    assert 0 < len(reply) <= MAX_REPLY_CHARS


def test_a_long_result_is_cut_on_a_word_boundary() -> None:
    reply = said(brain().after_tool("read_news", {}, "news " * 200))
    assert reply.endswith("news…")
    assert len(reply) <= MAX_REPLY_CHARS


def test_a_result_that_is_not_text_does_not_raise() -> None:
    ava = brain()
    assert said(ava.after_tool("get_weather", {}, 42)) == "42."  # type: ignore[arg-type]
    assert said(ava.after_tool(None, {}, None)) == "None."  # type: ignore[arg-type]


def test_the_last_result_can_be_repeated() -> None:
    ava = brain()
    ava.after_tool("get_weather", {}, "It is sunny.")
    assert said(ava.respond("Repeat that, please.")) == "It is sunny."


def test_replies_carry_no_emoji_or_markdown() -> None:
    rules = compile_rules([{"match": "party", "reply": "**Party** time 🎉!"}])
    assert said(brain(rules=rules).respond("party")) == "Party time !"
