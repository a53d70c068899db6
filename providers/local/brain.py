"""The offline provider's brain: from what the caller said to a reply or a tool call.

Pure Python and deterministic (the clock is injected): no Django, no I/O, no model. One
:class:`Brain` per session (it remembers the last thing it said, for "say that again", and a
tool call waiting for a missing argument).

What the caller said (Whisper's text, or typed text) is first **normalised**
(:func:`normalise`): lower case, contractions expanded ("what's" -> "what is"), number words
as digits ("twenty two" -> "22", "five five five" -> "5 5 5"), thousands separators dropped
("5,000" -> "5000"), punctuation dropped (a decimal point or a clock's colon inside a number
stays: "3.5", "7:30"), spaces collapsed. Whisper's "5, 5, 1, 2" therefore reads "5 5 1 2",
as spoken digits do; a value taken for a tool argument joins such a run of single digits
(or hyphenated groups, "555-1234") into one number, "5512".

:meth:`Brain.respond` then decides, in this order:

1. the operator's rules (:func:`compile_rules`), first match wins;
2. a tool the utterance names (all the significant words of its name: ``get_weather`` is
   named by "weather", ``book_table`` by "table"), with its arguments taken from the
   utterance by the tool's JSON Schema; a required argument not found is asked for, and the
   next utterance may answer it ("In Paris.");
3. the built-in answers (greeting, time, date, name, help, a joke, thanks, goodbye, repeat);
4. the answer to a question asked in 2;
5. otherwise it says what it heard.

:meth:`Brain.after_tool` turns a tool's result (usually JSON) into a short sentence. Every
reply is plain text for speech synthesis: no markdown, no emoji.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import string
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

__all__ = [
    "MAX_REPLY_CHARS",
    "TEMPLATE_FIELDS",
    "Brain",
    "CallTool",
    "Rule",
    "Say",
    "compile_rules",
    "normalise",
]

#: The fields every rule reply may use, besides the named groups of its pattern.
TEMPLATE_FIELDS: Final = ("agent", "time", "date", "heard")
#: A tool result is said in at most this many characters.
MAX_REPLY_CHARS: Final = 300

_DEFAULT_AGENT: Final = "the assistant"
_MAX_HEARD_CHARS: Final = 2000  # the rest of a longer utterance is ignored
_MAX_ECHO_CHARS: Final = 200  # of the fallback "I heard: ..."
_MAX_JSON_CHARS: Final = 1_000_000  # a longer tool result is not parsed
_MAX_RESULT_PAIRS: Final = 6
_MAX_RESULT_DEPTH: Final = 3
_MAX_VALUE_CHARS: Final = 80
_MAX_VALUE_WORDS: Final = 8
_MAX_ANSWER_WORDS: Final = 4  # a bare answer to "I need the city"
_MAX_LISTED_TOOLS: Final = 5


# --- replies ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    """Say ``text`` (plain text for speech synthesis)."""

    text: str


@dataclass(frozen=True, slots=True)
class CallTool:
    """Call the tool ``name`` with ``arguments`` (typed by its JSON Schema)."""

    name: str
    arguments: dict[str, Any]


# --- normalisation ---------------------------------------------------------------------------

_RAW_TOKEN: Final = re.compile(
    r"""
    (?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)
    |(?P<meridiem>(?<![\w.])[aApP]\.[ ]?[mM]\b\.?)
    |(?P<number>\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:[.:]\d+)*)
    |(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)*)
    |(?P<symbol>[%&°$€£])
    """,
    re.VERBOSE,
)
_SYMBOL_WORDS: Final = {"%": "percent", "&": "and", "°": "degrees"}
_CURRENCY_WORDS: Final = {"$": "dollars", "€": "euros", "£": "pounds"}
_IS_BEFORE_S: Final = frozenset(
    "it that what who where when how why there here he she this".split()
)
_WHOLE_CONTRACTIONS: Final = {
    "won't": ("will", "not"),
    "can't": ("can", "not"),
    "shan't": ("shall", "not"),
    "ain't": ("is", "not"),
    "let's": ("let", "us"),
}
_CONTRACTION_SUFFIXES: Final = (
    ("n't", "not"),
    ("'re", "are"),
    ("'ve", "have"),
    ("'ll", "will"),
    ("'d", "would"),
    ("'m", "am"),
)

_UNITS: Final = {
    word: value
    for value, word in enumerate("zero one two three four five six seven eight nine".split())
}
_TEENS: Final = {
    word: value + 10
    for value, word in enumerate(
        "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS: Final = {
    word: (value + 2) * 10
    for value, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_SCALES: Final = {"thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}
#: "one" stays a word after these ("no one", "which one").
_ONE_IS_A_WORD_AFTER: Final = frozenset(
    "no any some every each this that which the another little last first".split()
)
_INTEGER: Final = re.compile(r"\d+")
_NUMERIC: Final = re.compile(r"\d+(?:\.\d+)?")
_DIGIT_LIKE: Final = re.compile(r"\d[\d.:]*")


@dataclass(frozen=True, slots=True)
class _Token:
    """A normalised word and the span of the raw text it came from."""

    text: str
    start: int
    end: int


def _expand(word: str) -> list[str]:
    """A lower-case word with its contraction expanded, apostrophes dropped."""
    if "'" not in word:
        return [word]
    whole = _WHOLE_CONTRACTIONS.get(word)
    if whole is not None:
        return list(whole)
    for suffix, full in _CONTRACTION_SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix):
            return [*_expand(word[: -len(suffix)]), full]
    if word.endswith("'s") and word[:-2] in _IS_BEFORE_S:
        return [word[:-2], "is"]
    return [word.replace("'", "")]  # a possessive or a name: "today's", "o'clock"


def _raw_tokens(raw: str) -> list[_Token]:
    tokens: list[_Token] = []
    currency: str | None = None  # "$" waits for its amount: "$20" -> "20 dollars"
    for found in _RAW_TOKEN.finditer(raw):
        text, start, end, kind = found.group(), found.start(), found.end(), found.lastgroup
        if kind == "number":
            tokens.append(_Token(text.replace(",", ""), start, end))
            if currency is not None:
                tokens.append(_Token(currency, start, end))
        elif kind == "word":
            words = _expand(text.lower().replace("’", "'"))
            tokens.extend(_Token(word, start, end) for word in words if word)
        elif kind == "meridiem":
            tokens.append(_Token(f"{text[0].lower()}m", start, end))
        elif kind == "email":
            tokens.append(_Token(text.lower(), start, end))
        elif text in _SYMBOL_WORDS:
            tokens.append(_Token(_SYMBOL_WORDS[text], start, end))
        currency = _CURRENCY_WORDS.get(text) if kind == "symbol" else None
    return tokens


def _read_number(tokens: Sequence[_Token], first: int) -> tuple[str, int] | None:
    """The number that number words starting at ``first`` say, and the index after them.

    Units in a row are separate numbers ("five five" is 5 then 5, as digits are read);
    "twenty two", "two hundred and five", "three point five", "10 thousand" are one."""
    count = len(tokens)
    if tokens[first].text == "one" and first and tokens[first - 1].text in _ONE_IS_A_WORD_AFTER:
        return None
    total = current = 0
    last = ""  # the kind of the last word read
    decimals = ""
    index = first
    word = tokens[first].text
    if _INTEGER.fullmatch(word) and first + 1 < count:
        following = tokens[first + 1].text
        if following == "hundred" or following in _SCALES:
            current, last, index = int(word), "digits", first + 1
    while index < count:
        word = tokens[index].text
        following = tokens[index + 1].text if index + 1 < count else ""
        if word in _UNITS and last in ("", "hundred", "scale", "tens"):
            current, last = current + _UNITS[word], "unit"
        elif word in _TEENS and last in ("", "hundred", "scale"):
            current, last = current + _TEENS[word], "teen"
        elif word in _TENS and last in ("", "hundred", "scale"):
            current, last = current + _TENS[word], "tens"
        elif word == "hundred" and last in ("", "unit", "teen", "tens", "digits"):
            if current >= 100:
                break
            current, last = (current or 1) * 100, "hundred"
        elif word in _SCALES and last in ("", "unit", "teen", "tens", "hundred", "digits"):
            total, current, last = total + (current or 1) * _SCALES[word], 0, "scale"
        elif (
            word == "and"
            and last in ("hundred", "scale")
            and (following in _UNITS or following in _TEENS or following in _TENS)
        ):
            pass
        elif word == "point" and last and following in _UNITS:
            index += 1
            while index < count and tokens[index].text in _UNITS:
                decimals += str(_UNITS[tokens[index].text])
                index += 1
            break
        else:
            break
        index += 1
    if index == first or not last:
        return None
    value = str(total + current)
    return (f"{value}.{decimals}" if decimals else value), index


def _tokens(raw: str) -> list[_Token]:
    """The normalised words of ``raw``, number words merged into digits."""
    tokens = _raw_tokens(raw)
    merged: list[_Token] = []
    index = 0
    while index < len(tokens):
        number = _read_number(tokens, index)
        if number is None:
            merged.append(tokens[index])
            index += 1
            continue
        value, end = number
        merged.append(_Token(value, tokens[index].start, tokens[end - 1].end))
        index = end
    return merged


def normalise(text: str) -> str:
    """``text`` as rules see it: lower case, no punctuation, contractions expanded, number
    words as digits, single spaces. "What's the weather in Paris?" -> "what is the weather
    in paris"; "Set a timer for ten minutes." -> "set a timer for 10 minutes"."""
    return " ".join(token.text for token in _tokens(text))


@dataclass(frozen=True, slots=True)
class _Utterance:
    raw: str
    tokens: tuple[_Token, ...]
    text: str  # the normalised text
    offsets: tuple[int, ...]  # where each token starts in ``text``

    @classmethod
    def of(cls, raw: str) -> _Utterance:
        tokens = tuple(_tokens(raw))
        offsets: list[int] = []
        position = 0
        for token in tokens:
            offsets.append(position)
            position += len(token.text) + 1
        return cls(raw, tokens, " ".join(token.text for token in tokens), tuple(offsets))

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(token.text for token in self.tokens)

    def joins(self, left: int) -> bool:
        """Whether the integer tokens ``left`` and ``left + 1`` are one number (spoken or
        comma-separated digits "5 5 1"; hyphenated groups "555-1234")."""
        first, second = self.tokens[left], self.tokens[left + 1]
        if not (_INTEGER.fullmatch(first.text) and _INTEGER.fullmatch(second.text)):
            return False
        if len(first.text) == 1 and len(second.text) == 1:
            return True
        return "-" in self.raw[first.end : second.start]

    def numbers(self) -> Iterator[tuple[int, int, str]]:
        """Each number in the utterance as (first token, end token, digits)."""
        index, count = 0, len(self.tokens)
        while index < count:
            if not _NUMERIC.fullmatch(self.tokens[index].text):
                index += 1
                continue
            end = index + 1
            while end < count and self.joins(end - 1):
                end += 1
            yield index, end, "".join(token.text for token in self.tokens[index:end])
            index = end

    def phrase(self, first: int, end: int) -> str:
        """Tokens ``first`` to ``end`` as the caller wrote them (capitals, inner punctuation),
        numbers as digits ("five five one" -> "551", "seven thirty" -> "7 30")."""
        parts: list[str] = []
        index = first
        while index < end:
            if _DIGIT_LIKE.fullmatch(self.tokens[index].text):
                stop = index + 1
                while stop < end and self.joins(stop - 1):
                    stop += 1
                parts.append("".join(token.text for token in self.tokens[index:stop]))
                index = stop
                continue
            stop = index + 1
            while stop < end and not _DIGIT_LIKE.fullmatch(self.tokens[stop].text):
                stop += 1
            parts.append(self.raw[self.tokens[index].start : self.tokens[stop - 1].end])
            index = stop
        return " ".join(" ".join(parts).split())

    def span_phrase(self, start: int, end: int) -> str:
        """The text of ``text[start:end]`` (a regex group) as the caller wrote it, when it
        is whole words; otherwise as normalised."""
        piece = self.text[start:end]
        start += len(piece) - len(piece.lstrip())
        end -= len(piece) - len(piece.rstrip())
        if start >= end:
            return ""
        ends = [
            offset + len(token.text)
            for offset, token in zip(self.offsets, self.tokens, strict=True)
        ]
        if start in self.offsets and end in ends:
            return self.phrase(self.offsets.index(start), ends.index(end) + 1)
        return self.text[start:end]


# --- operator rules --------------------------------------------------------------------------

_FORMATTER: Final = string.Formatter()
#: A match of only words, spaces, apostrophes and "|" is a list of phrases, normalised like
#: utterances and matched as whole words; anything else is a regular expression.
_PLAIN_MATCH: Final = re.compile(r"[\w\s'’|]+")


def _check_template(reply: str, groups: frozenset[str]) -> None:
    try:
        parsed = list(_FORMATTER.parse(reply))
    except ValueError:
        raise ValueError(
            "the reply has an unmatched { or }; write {{ or }} for a literal brace"
        ) from None
    fields = ", ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS)
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name:
            raise ValueError("the reply has an empty {}; name a field in it, such as {agent}")
        if spec or conversion:
            raise ValueError(
                f"the reply field {{{name}}} has a conversion or format after its name; "
                f"write just {{{name}}}"
            )
        if name not in TEMPLATE_FIELDS and name not in groups:
            hint = f", such as (?P<{name}>...)" if name.isidentifier() else ""
            raise ValueError(
                f"the reply uses {{{name}}}, which is not a field: use {fields} "
                f"or a named group of the match{hint}"
            )


@dataclass(frozen=True, slots=True)
class Rule:
    """When ``pattern`` is found in the normalised utterance, say ``reply``: a template with
    {agent}, {time}, {date}, {heard} (what the caller said, as said) and the pattern's named
    groups (as the caller wrote them when they are whole words). ValueError for an empty
    reply or a field that is none of these."""

    pattern: re.Pattern[str]
    reply: str

    def __post_init__(self) -> None:
        if not self.reply.strip():
            raise ValueError("the reply is empty")
        _check_template(self.reply, frozenset(self.pattern.groupindex))


def _compile_match(match: str) -> re.Pattern[str]:
    if _PLAIN_MATCH.fullmatch(match):
        phrases = [normalise(phrase) for phrase in match.split("|")]
        if not all(phrases):
            raise ValueError('the match has an empty alternative (a stray "|"?)')
        return re.compile(r"\b(?:" + "|".join(map(re.escape, phrases)) + r")\b")
    try:
        return re.compile(match, re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"the match is not a valid regular expression: {error}") from None


def _compile_rule(item: object) -> Rule:
    if not isinstance(item, Mapping):
        raise ValueError(f'a rule is an object with "match" and "reply", not {type(item).__name__}')
    unknown = sorted(str(key) for key in item if key not in ("match", "reply"))
    if unknown:
        raise ValueError(f'unknown key "{unknown[0]}" (a rule has "match" and "reply")')
    match, reply = _text_field(item, "match"), _text_field(item, "reply")
    if not match.strip():
        raise ValueError("the match is empty")
    return Rule(_compile_match(match.strip()), reply.strip())


def _text_field(item: Mapping[Any, Any], key: str) -> str:
    value = item.get(key)
    if value is None:
        raise ValueError(f'"{key}" is missing')
    if not isinstance(value, str):
        raise ValueError(f'"{key}" must be text, not {type(value).__name__}')
    return value


def _rule_label(number: int, item: object) -> str:
    if isinstance(item, Mapping) and isinstance(item.get("match"), str):
        return f"rule {number} (match {item['match']!r})"
    return f"rule {number}"


def compile_rules(items: Sequence[Mapping[str, str]]) -> list[Rule]:
    """Rules from ``provider_config``: ``[{"match": "<regex>", "reply": "<template>"}]``.

    A match of plain words and "|" ("hello|hi there") matches those phrases as whole words,
    written as a caller would say them ("what's the time" works); any other match is a
    regular expression, case-insensitive, searched in the normalised utterance. ValueError
    names the bad rule by its position and match, and says what is wrong."""
    collected = _as_list(items)
    if collected is None:
        raise ValueError('rules must be a list of {"match": ..., "reply": ...} objects')
    rules: list[Rule] = []
    for number, item in enumerate(collected, start=1):
        try:
            rules.append(_compile_rule(item))
        except ValueError as error:
            raise ValueError(f"{_rule_label(number, item)}: {error}") from None
    return rules


def _as_list(items: object) -> list[object] | None:
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        return None
    return list(items)


# --- tools -----------------------------------------------------------------------------------

_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_STOPWORDS: Final = frozenset(
    "the a an my your our their his her its this that these those for to of in on at by with "
    "and or from is are be me i it about up into".split()
)
#: Verbs and nouns that say nothing about which tool is meant ("set" a timer, "get" the
#: weather, "book" a table): a tool is named by its other words.
_GENERIC: Final = frozenset(
    "get set fetch check lookup look find do make run call tool tools info information data "
    "current create show retrieve query search list book reserve schedule add start details "
    "status new api request".split()
)
#: A tool name starting with one of these reads as an action: "get the weather".
_NOT_VERBS: Final = frozenset(
    "tool tools info information data current details status new api request".split()
)
_ACTION_VERBS: Final = (_GENERIC - _NOT_VERBS) | frozenset(
    "cancel send remove delete update stop transfer play open close save reset pause resume "
    "turn order pay submit track convert translate calculate report register read write edit "
    "change move end".split()
)
_RESPELL: Final = {"lookup": "look up", "signup": "sign up", "checkin": "check in"}
_IRREGULAR: Final = {
    "people": "person",
    "persons": "person",
    "children": "child",
    "men": "man",
    "women": "woman",
}
_WORD_SUFFIXES: Final = tuple("ations ation ments ment ings ing ers er es ed s e".split())


@functools.lru_cache(maxsize=4096)
def _stems(word: str) -> frozenset[str]:
    """The word and what is left of it without one common ending, when 4 letters or more:
    "booking" and "book" share "book", "reservation" and "reserve" share "reserv", but
    "timer" and "time" share nothing."""
    word = _IRREGULAR.get(word, word)
    stems = {word}
    for suffix in _WORD_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            stems.add(word[: -len(suffix)])
    if word.endswith("ies") and len(word) > 5:
        stems.add(word[:-3] + "y")
    return frozenset(stems)


def _same_word(first: str, second: str) -> bool:
    return first == second or not _stems(first).isdisjoint(_stems(second))


def _same_noun(first: str, second: str) -> bool:
    """The same word, or its plural: a property's name ("minute", "person") stands next to
    its value as a noun; "ordered" is no "order"."""
    first, second = _IRREGULAR.get(first, first), _IRREGULAR.get(second, second)
    if len(first) > len(second):
        first, second = second, first
    return second in (first, f"{first}s", f"{first}es")


def _name_words(name: str) -> tuple[str, ...]:
    """``get_weather``, ``getWeather``, ``get-weather`` -> ("get", "weather")."""
    return tuple(word.lower() for word in re.split(r"[\W_]+", _CAMEL.sub(" ", name)) if word)


def _readable(name: str) -> str:
    return " ".join(_RESPELL.get(word, word) for word in _name_words(name)) or name


def _join(items: Sequence[str], conjunction: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


@dataclass(frozen=True, slots=True)
class _Property:
    name: str
    kind: str  # string, integer, number, boolean or other (arrays, objects)
    words: tuple[str, ...]  # the words of its name that may stand next to its value
    enum: tuple[Any, ...]

    @property
    def readable(self) -> str:
        return _readable(self.name)


@dataclass(frozen=True, slots=True)
class _Tool:
    name: str
    words: tuple[str, ...]  # of its name, stopwords left out
    significant: tuple[str, ...]  # the words that must be heard for it to be named
    properties: tuple[_Property, ...]
    required: frozenset[str]

    @property
    def spoken(self) -> str:
        return _readable(self.name)

    @property
    def purpose(self) -> str:
        """What it does, to finish "To ...": "get the weather", "use the weather tool"."""
        words = _name_words(self.name)
        if len(words) > 1 and words[0] in _ACTION_VERBS:
            verb, rest = _RESPELL.get(words[0], words[0]), " ".join(words[1:])
            return f"{verb} {rest}" if words[1] in _STOPWORDS else f"{verb} the {rest}"
        return f"use the {self.spoken} tool"


def _property_kind(schema: Mapping[str, Any], enum: tuple[Any, ...]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((kind for kind in declared if kind != "null"), None)
    if declared in ("string", "integer", "number", "boolean"):
        return str(declared)
    if declared is None and enum:
        if all(isinstance(value, bool) for value in enum):
            return "boolean"
        if all(isinstance(value, int) and not isinstance(value, bool) for value in enum):
            return "integer"
        return "string"
    return "string" if declared is None and not schema.get("anyOf") else "other"


def _parse_property(name: str, schema: object) -> _Property:
    schema = schema if isinstance(schema, Mapping) else {}
    enum_values = schema.get("enum")
    enum = tuple(enum_values) if isinstance(enum_values, list) else ()
    all_words = _name_words(name)
    words = tuple(word for word in all_words if word not in _STOPWORDS) or all_words
    return _Property(name, _property_kind(schema, enum), words, enum)


def _parse_tool(item: object) -> _Tool | None:
    """A tool from an engine definition, flat ({"type": "function", "name", "parameters"})
    or wrapped ({"type": "function", "function": {...}}); None for native tools and junk."""
    if not isinstance(item, Mapping):
        return None
    definition = item.get("function")
    if not isinstance(definition, Mapping):
        if item.get("type", "function") != "function":
            return None
        definition = item
    name = definition.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    parameters = definition.get("parameters")
    parameters = parameters if isinstance(parameters, Mapping) else {}
    schemas = parameters.get("properties")
    schemas = schemas if isinstance(schemas, Mapping) else {}
    listed = parameters.get("required")
    required = (
        frozenset(key for key in listed if isinstance(key, str))
        if isinstance(listed, list)
        else frozenset()
    )
    properties = [_parse_property(key, schemas[key]) for key in schemas if isinstance(key, str)]
    known = {prop.name for prop in properties}
    properties += [_parse_property(key, {}) for key in sorted(required - known)]
    all_words = _name_words(name)
    words = tuple(dict.fromkeys(word for word in all_words if word not in _STOPWORDS))
    significant = tuple(word for word in words if word not in _GENERIC) or words or all_words
    return _Tool(name, words, significant, tuple(properties), required)


# --- arguments -------------------------------------------------------------------------------

_CONNECTORS: Final = frozenset("is are was of to for at as called named equals be".split())
_VALUE_PREPOSITIONS: Final = frozenset("in at for to about called named from".split())
_VALUE_STOPS: Final = _VALUE_PREPOSITIONS | frozenset(
    "on with without by and but or please thanks thank because so no not yes".split()
)
_TRAILING_FILLERS: Final = frozenset(
    "please now today tonight then ok okay right like there again though anyway".split()
)
_DAY_WORDS: Final = frozenset({"today", "tonight"})
#: Properties about when or how long: they keep "today" and take "for 10 minutes".
_WHEN_WORDS: Final = frozenset({"date", "day", "when", "time", "period", "duration", "length"})
_LEADING_FILLERS: Final = frozenset(
    "um uh erm er well oh so ok okay yes yeah sure it is its that i think said "
    "in at for to from called named".split()
)
_FALSE_WORDS: Final = frozenset(
    {"no", "not", "false", "off", "disable", "disabled", "without", "never"}
)
_UNIT_WORDS: Final = frozenset(
    "second minute hour day week month year person guest percent dollar euro pound degree "
    "time am pm oclock mile kilometer meter kilo gram item".split()
)
_CLOCK_WORDS: Final = frozenset({"time", "hour", "when", "clock"})
_CANCEL: Final = re.compile(
    r"^(?:no |oh )?(?:never mind|nevermind|cancel(?: that| it)?|forget (?:about )?it|"
    r"stop|no thanks|nothing)(?: please| then)?$"
)


def _is_unit(word: str) -> bool:
    return any(_same_word(word, unit) for unit in _UNIT_WORDS)


def _to_number(digits: str, kind: str) -> int | float | None:
    if kind == "integer":
        if _INTEGER.fullmatch(digits):
            return int(digits)
        if digits.endswith(".0") and _INTEGER.fullmatch(digits[:-2]):
            return int(digits[:-2])
        return None
    return float(digits) if _NUMERIC.fullmatch(digits) else None


class _Extraction:
    """Arguments for some properties of a tool, from one utterance. Each token gives at most
    one value; tokens that name the tool (``taken``) give none."""

    def __init__(
        self, utterance: _Utterance, properties: Sequence[_Property], taken: frozenset[int]
    ) -> None:
        self.utterance = utterance
        self.words = utterance.words
        self.properties = properties
        self.taken = taken
        self.used: set[int] = set(taken)
        self.anchors = {
            prop.name: [
                index
                for index, word in enumerate(self.words)
                if any(_same_noun(word, name_word) for name_word in prop.words)
            ]
            for prop in properties
        }
        self.all_anchors = {index for indexes in self.anchors.values() for index in indexes}

    def run(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        first = (
            [(prop, self._enum) for prop in self.properties if prop.enum]
            + [(prop, self._boolean) for prop in self.properties if self._is(prop, "boolean")]
            + [(prop, self._near_number) for prop in self.properties if self._numeric(prop)]
            + [(prop, self._after_name) for prop in self.properties if self._is(prop, "string")]
        )
        second = [(prop, self._any_number) for prop in self.properties if self._numeric(prop)] + [
            (prop, self._after_preposition) for prop in self.properties if self._is(prop, "string")
        ]
        for prop, find in first + second:
            if prop.name not in values:
                value = find(prop)
                if value is not None:
                    values[prop.name] = value
        return values

    @classmethod
    def is_text(cls, prop: _Property) -> bool:
        return cls._is(prop, "string")

    @staticmethod
    def _is(prop: _Property, kind: str) -> bool:
        return prop.kind == kind and not prop.enum

    @staticmethod
    def _numeric(prop: _Property) -> bool:
        return prop.kind in ("integer", "number") and not prop.enum

    def _free(self, first: int, end: int) -> bool:
        return not any(index in self.used for index in range(first, end))

    def _enum(self, prop: _Property) -> Any:
        best: tuple[int, int, Any] | None = None
        for value in prop.enum:
            if value is None or isinstance(value, dict | list):
                continue
            words = normalise(str(value)).split()
            if not words:
                continue
            for start in range(len(self.words) - len(words) + 1):
                end = start + len(words)
                if not self._free(start, end):
                    continue
                pairs = zip(self.words[start:end], words, strict=True)
                if all(_same_word(heard, wanted) for heard, wanted in pairs):
                    if best is None or start < best[0]:
                        best = (start, end, value)
                    break
        if best is None:
            return None
        self.used.update(range(best[0], best[1]))
        return best[2]

    def _boolean(self, prop: _Property) -> bool | None:
        anchors = self.anchors[prop.name]
        if not anchors:
            return None
        for anchor in anchors:
            near = set(self.words[max(0, anchor - 3) : anchor + 4])
            if near & _FALSE_WORDS:
                return False
        return True

    def _near_number(self, prop: _Property) -> int | float | None:
        return self._number(prop, anywhere=False)

    def _any_number(self, prop: _Property) -> int | float | None:
        return self._number(prop, anywhere=True)

    def _number(self, prop: _Property, *, anywhere: bool) -> int | float | None:
        """A number next to the property's name ("10 minutes", "party of 4", "number is
        55"), or with ``anywhere`` the first one that is not someone else's: not a time
        ("at 7") unless this is a time, not in another unit ("10 minutes" for seconds)."""
        anchors = set(self.anchors[prop.name])
        own_units = any(_is_unit(word) for word in prop.words)
        clock = any(word in _CLOCK_WORDS for word in prop.words)
        best: tuple[int, int, int, int | float] | None = None
        for first, end, digits in self.utterance.numbers():
            value = _to_number(digits, prop.kind)
            if value is None or not self._free(first, end):
                continue
            before = self.words[first - 1] if first else ""
            after = self.words[end] if end < len(self.words) else ""
            if end in anchors:
                rank = 0
            elif first - 1 in anchors or (first - 2 in anchors and before in _CONNECTORS):
                rank = 1
            elif not anywhere:
                continue
            elif before == "at" and not clock:
                continue
            elif end in self.all_anchors or (after and own_units and _is_unit(after)):
                continue
            else:
                rank = 2
            if best is None or rank < best[0]:
                best = (rank, first, end, value)
        if best is None:
            return None
        self.used.update(range(best[1], best[2]))
        return best[3]

    def _collect(self, prop: _Property, start: int) -> str | None:
        """The words from ``start`` up to a stop (a preposition, "and", another property's
        name, a used word), fillers at the end left out; None if nothing of substance."""
        words = self.words
        own = set(self.anchors[prop.name])
        end = start
        while (
            end < len(words)
            and end - start < _MAX_VALUE_WORDS
            and end not in self.used
            and end not in self.all_anchors
            and words[end] not in _VALUE_STOPS
        ):
            end += 1
        fillers = _TRAILING_FILLERS
        if _WHEN_WORDS.intersection(prop.words):
            fillers = fillers - _DAY_WORDS
        while end > start and words[end - 1] in fillers:
            end -= 1
        if end == start or all(words[index] in _STOPWORDS for index in range(start, end)):
            return None
        if own.intersection(range(start, end)):
            return None
        self.used.update(range(start, end))
        return self.utterance.phrase(start, end)

    def _after_name(self, prop: _Property) -> str | None:
        """The words after the property's name: "order number 1234", "my city is Paris"."""
        for anchor in reversed(self.anchors[prop.name]):
            start = anchor + 1
            while start < len(self.words) and self.words[start] in _CONNECTORS:
                start += 1
            value = self._collect(prop, start)
            if value is not None:
                return value
        return None

    def _after_preposition(self, prop: _Property) -> str | None:
        """The words after the last preposition that does not lead to the tool's name:
        "weather in Paris", "a table at 7 pm", "a timer called pasta"."""
        for index in range(len(self.words) - 1, -1, -1):
            if self.words[index] not in _VALUE_PREPOSITIONS or index in self.used:
                continue
            if index + 1 < len(self.words) and index + 1 in self.taken:
                continue
            if self._amount_follows(prop, index + 1):
                continue
            value = self._collect(prop, index + 1)
            if value is not None:
                return value
        return None

    def _amount_follows(self, prop: _Property, start: int) -> bool:
        """An amount ("10 seconds", "2 people") is no name or place, unless ``prop`` is
        about when or how long."""
        words = self.words
        return (
            start + 1 < len(words)
            and _NUMERIC.fullmatch(words[start]) is not None
            and _is_unit(words[start + 1])
            and not _WHEN_WORDS.intersection(prop.words)
        )

    def whole(self) -> str | None:
        """The whole (short) utterance as the answer to a question: "In Paris, please."."""
        start, end = 0, len(self.words)
        while start < end and self.words[start] in _LEADING_FILLERS:
            start += 1
        while end > start and (self.words[end - 1] in _TRAILING_FILLERS | _VALUE_STOPS):
            end -= 1
        if end == start or end - start > _MAX_ANSWER_WORDS or not self._free(start, end):
            return None
        if all(self.words[index] in _STOPWORDS for index in range(start, end)):
            return None
        if self.words[start] in _ACTION_VERBS:  # a new request, not an answer
            return None
        return self.utterance.phrase(start, end)


# --- built-in answers ------------------------------------------------------------------------

_WEEKDAYS: Final = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_MONTHS: Final = (
    "January February March April May June July August September October November December"
).split()
_JOKES: Final = (
    "Why did the scarecrow win an award? Because he was outstanding in his field.",
    "Why don't skeletons fight each other? They don't have the guts.",
    "What do you call a fake noodle? An impasta.",
)
_BUILTINS: Final = (
    (
        "repeat",
        re.compile(
            r"\b(?:repeat (?:that|it|yourself|again|the last)|say (?:that|it) again|"
            r"come again|pardon|what did you (?:just )?say)\b|"
            r"^(?:please |can you |could you )*repeat(?: please)?$|^(?:what|sorry|huh)$"
        ),
    ),
    (
        "time",
        re.compile(
            r"\b(?:what time is it|what is the time|tell me the time|what time it is|"
            r"the time please|current time|time is it)\b|^(?:the )?time$"
        ),
    ),
    (
        "date",
        re.compile(
            r"\b(?:what is the date|what is todays date|todays date|what date is it|"
            r"(?:what|which) day is (?:it|today)|what is today|the date today|date today|"
            r"what is the day)\b|^(?:the )?date$"
        ),
    ),
    (
        "name",
        re.compile(
            r"\b(?:what is your name|who are you|your name|who am i (?:talking|speaking) "
            r"(?:to|with)|what are you called|what (?:should|do) i call you)\b"
        ),
    ),
    ("how_are_you", re.compile(r"\b(?:how are you|how is it going|how are things)\b")),
    (
        "help",
        re.compile(
            r"\b(?:help|what can you do|what do you do|how can you help|what are you able to do|"
            r"what are your (?:skills|abilities|capabilities|tools)|what can i ask)\b"
        ),
    ),
    ("joke", re.compile(r"\b(?:jokes?|make me laugh|something funny)\b")),
    (
        "goodbye",
        re.compile(r"\b(?:goodbye|good bye|bye|see you|farewell|good night|hang up)\b"),
    ),
    ("thanks", re.compile(r"\b(?:thanks|thank you|thank u|cheers|much appreciated)\b")),
    (
        "greeting",
        re.compile(
            r"\b(?:hello|hi|hey|hiya|howdy|greetings|good (?P<part>morning|afternoon|evening))\b"
        ),
    ),
)


def _local_now() -> datetime:
    return datetime.now().astimezone()


def _time_text(moment: datetime) -> str:
    return f"{moment.hour % 12 or 12}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"


def _date_text(moment: datetime) -> str:
    return f"{_WEEKDAYS[moment.weekday()]}, {_MONTHS[moment.month - 1]} {moment.day}, {moment.year}"


# --- speakable text --------------------------------------------------------------------------

_MARKDOWN_LINK: Final = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_MARKDOWN_LINE: Final = re.compile(r"(?m)^[ \t]*(?:#{1,6}[ \t]+|>[ \t]*|[-*+][ \t]+)")
_MARKDOWN_MARKS: Final = re.compile(r"\*{1,3}|_{2,3}|`+|~~")
_UNSPOKEN_CATEGORIES: Final = frozenset({"So", "Sk", "Cs", "Co", "Cn", "Cf", "Me"})


def _speakable(text: str) -> str:
    """Plain text for speech synthesis: markdown marks, emoji and controls removed,
    whitespace collapsed."""
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _MARKDOWN_LINE.sub("", text)
    text = _MARKDOWN_MARKS.sub("", text)
    text = text.replace("°C", " degrees Celsius").replace("°F", " degrees Fahrenheit")
    text = text.replace("°", " degrees")
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            kept.append(" ")
        elif category not in _UNSPOKEN_CATEGORIES and not "\ufe00" <= char <= "\ufe0f":
            kept.append(char)
    return " ".join("".join(kept).split())


def _shorten(text: str, limit: int) -> str:
    """``text`` cut on a word boundary to at most ``limit`` characters, with "…"."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?…" else f"{text}."


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- tool results ----------------------------------------------------------------------------

_MESSAGE_KEYS: Final = ("speech", "say", "message", "answer", "summary", "text")
_SINGLE_VALUE_KEYS: Final = ("result", "output", "response", "reply", "content", "value")


def _number_text(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 0.01:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _scalar_text(value: Any) -> str | None:
    """A scalar as words, None for a list or an object."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, str):
        return _shorten(" ".join(value.split()), _MAX_VALUE_CHARS)
    if isinstance(value, list | dict):
        return None
    return _shorten(" ".join(str(value).split()), _MAX_VALUE_CHARS)


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _value_text(value: Any) -> str:
    scalar = _scalar_text(value)
    if scalar is not None:
        return scalar
    if isinstance(value, dict):
        if not value:
            return "none"
        return "1 entry" if len(value) == 1 else f"{len(value)} entries"
    items: list[Any] = value
    if not items:
        return "none"
    texts = [_scalar_text(item) for item in items[:3]]
    if any(text is None for text in texts) or any(
        isinstance(item, list | dict) for item in items[3:]
    ):
        return _count(len(items), "item")
    shown = [text for text in texts if text is not None]
    if len(items) > 3:
        return f"{', '.join(shown)} and {len(items) - 3} more"
    return _join(shown)


def _pairs(value: Mapping[Any, Any], prefix: str, depth: int) -> Iterator[str]:
    """ "key: value" for each entry, nested objects flattened ("main temp: 21")."""
    for key, item in value.items():
        label = f"{prefix} {_readable(str(key))}".strip()
        if isinstance(item, dict) and item and depth < _MAX_RESULT_DEPTH:
            yield from _pairs(item, label, depth + 1)
        else:
            yield f"{label}: {_value_text(item)}"


def _error_message(error: Any, data: Mapping[str, Any]) -> str:
    if isinstance(error, dict):
        for key in ("message", "detail", "error", "description"):
            if isinstance(error.get(key), str) and error[key].strip():
                return str(error[key])
        return ", ".join(itertools.islice(_pairs(error, "", 1), _MAX_RESULT_PAIRS))
    if error is True:
        for key in ("message", "detail", "reason"):
            if isinstance(data.get(key), str) and data[key].strip():
                return str(data[key])
        return ""
    return _value_text(error)


def _failed(spoken: str, message: str) -> str:
    message = message.strip().rstrip(".")
    return f"The {spoken} tool failed: {message}." if message else f"The {spoken} tool failed."


def _text_result(spoken: str, text: str) -> str:
    if text[:5].lower() == "error" and (len(text) == 5 or not text[5].isalpha()):
        return _failed(spoken, text[5:].lstrip(" :-"))
    return text


def _parse_json(text: str) -> tuple[bool, Any]:
    if len(text) > _MAX_JSON_CHARS or text[0] not in '{["-0123456789tfnN':
        return False, None
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


def _result_text(spoken: str, result: str) -> str:
    text = result.strip()
    if not text:
        return "Done."
    if len(text) > _MAX_JSON_CHARS:
        return f"The {spoken} tool returned a result too long to read out."
    parsed, data = _parse_json(text)
    if not parsed and text[0] in "{[":
        return f"The {spoken} tool returned a result I can't read out."
    if not parsed:
        return _text_result(spoken, text[: 8 * MAX_REPLY_CHARS])
    if isinstance(data, dict):
        error = data.get("error")
        if error not in (None, False, "", {}, []):
            return _failed(spoken, _error_message(error, data))
        data = {key: value for key, value in data.items() if key != "error"}
        for key in _MESSAGE_KEYS:
            if isinstance(data.get(key), str) and data[key].strip():
                return str(data[key])
        if len(data) == 1:
            ((key, value),) = data.items()
            scalar = _scalar_text(value)
            if str(key) in _SINGLE_VALUE_KEYS and scalar is not None:
                return scalar if isinstance(value, str) else f"{_capitalised(spoken)}: {scalar}"
        if not data:
            return "Done."
        pairs = list(itertools.islice(_pairs(data, "", 1), _MAX_RESULT_PAIRS + 1))
        if len(pairs) > _MAX_RESULT_PAIRS:
            pairs[_MAX_RESULT_PAIRS:] = ["and more"]
        return f"{_capitalised(spoken)} says {', '.join(pairs)}"
    if isinstance(data, list):
        return f"{_capitalised(spoken)} returned {_value_text(data)}"
    if isinstance(data, str):
        return _text_result(spoken, data.strip()) if data.strip() else "Done."
    if data is True or data is None:
        return "Done."
    if data is False:
        return _failed(spoken, "")
    return _value_text(data)


# --- the brain -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pending:
    """A tool call waiting for required arguments that the brain asked for."""

    tool: _Tool
    arguments: dict[str, Any]


class Brain:
    """Decides what to say or which tool to call; see the module docstring.

    ``agent_name`` and ``builtin_rules`` may be changed at any time; ``set_rules`` and
    ``set_tools`` replace the rules and tools (a live reconfigure)."""

    def __init__(
        self,
        *,
        agent_name: str = _DEFAULT_AGENT,
        rules: Sequence[Rule] = (),
        tools: Sequence[Mapping[str, Any]] = (),
        builtin_rules: bool = True,
        clock: Callable[[], datetime] = _local_now,
    ) -> None:
        self.agent_name = agent_name
        self.builtin_rules = builtin_rules
        self._clock = clock
        self._rules: tuple[Rule, ...] = ()
        self._tools: tuple[_Tool, ...] = ()
        self._last_said: str | None = None
        self._pending: _Pending | None = None
        self._jokes_told = 0
        self.set_rules(rules)
        self.set_tools(tools)

    def set_rules(self, rules: Sequence[Rule]) -> None:
        self._rules = tuple(rules)

    def set_tools(self, tools: Sequence[Mapping[str, Any]]) -> None:
        """The engine's tool definitions (flat or wrapped in "function"); native tools and
        definitions without a name are ignored."""
        parsed = (_parse_tool(tool) for tool in tools)
        self._tools = tuple(tool for tool in parsed if tool is not None)
        self._pending = None

    @property
    def _agent(self) -> str:
        return self.agent_name.strip() or _DEFAULT_AGENT

    # --- answers ------------------------------------------------------------------------------

    def respond(self, heard: str) -> Say | CallTool:
        """What to do about what the caller said (see the module docstring for the order)."""
        text = " ".join(str(heard).split())[:_MAX_HEARD_CHARS]
        utterance = _Utterance.of(text)
        pending, self._pending = self._pending, None
        if not utterance.tokens:
            self._pending = pending
            return self._say("Sorry, I didn't catch that.")
        for rule in self._rules:
            found = rule.pattern.search(utterance.text)
            if found is not None:
                return self._say(self._render(rule, found, utterance, text))
        if pending is not None and _CANCEL.match(utterance.text):
            return self._say("Okay, never mind.")
        named = self._named_tool(utterance)
        if named is not None:
            tool, taken = named
            known = pending.arguments if pending is not None and pending.tool is tool else {}
            return self._call(tool, utterance, taken, known)
        if self.builtin_rules:
            reply = self._builtin(utterance)
            if reply is not None:
                return self._say(reply)
        if pending is not None:
            answer = self._answer(pending, utterance)
            if answer is not None:
                return answer
        heard = _shorten(text, _MAX_ECHO_CHARS)
        end = "" if heard[-1:] in (".", "!", "?", "…") else "."
        return self._say(f'I heard: "{heard}{end}"')

    def after_tool(self, name: str, arguments: Mapping[str, Any], result: str) -> Say:
        """A short sentence saying a tool's ``result`` (JSON or text); never raises."""
        try:
            spoken = next(
                (tool.spoken for tool in self._tools if tool.name == name), _readable(str(name))
            )
            raw = result if isinstance(result, str) else str(result)
            text = _sentence(_speakable(_result_text(spoken, raw)))
            text = _shorten(text, MAX_REPLY_CHARS) or "Done."
        except Exception:  # a result must never end the call: say something plain
            text = "Done."
        self._pending = None
        return self._say(text)

    def greeting(self) -> str:
        """What to say when the agent speaks first."""
        return self._say(self._greeting_text("Hello")).text

    # --- internals ----------------------------------------------------------------------------

    def _say(self, text: str) -> Say:
        text = _speakable(text) or "Sorry, I didn't catch that."
        self._last_said = text
        return Say(text)

    def _render(self, rule: Rule, found: re.Match[str], utterance: _Utterance, heard: str) -> str:
        moment = self._clock()
        values = {
            "agent": self._agent,
            "time": _time_text(moment),
            "date": _date_text(moment),
            "heard": heard,
        }
        for group in rule.pattern.groupindex:
            start, end = found.span(group)
            values[group] = utterance.span_phrase(start, end) if start >= 0 else ""
        return rule.reply.format_map(values)

    def _named_tool(self, utterance: _Utterance) -> tuple[_Tool, frozenset[int]] | None:
        """The tool the utterance names, with the positions of the words that name it."""
        best: tuple[tuple[int, int], _Tool, frozenset[int]] | None = None
        words = utterance.words
        for tool in self._tools:
            positions = {
                name_word: [
                    index for index, word in enumerate(words) if _same_word(word, name_word)
                ]
                for name_word in (*tool.words, *tool.significant)
            }
            if not all(positions[name_word] for name_word in tool.significant):
                continue
            heard = [name_word for name_word in tool.words if positions[name_word]]
            score = (len(tool.significant), len(heard))
            if best is None or score > best[0]:
                taken = frozenset(index for indexes in positions.values() for index in indexes)
                best = (score, tool, taken)
        return None if best is None else (best[1], best[2])

    def _call(
        self, tool: _Tool, utterance: _Utterance, taken: frozenset[int], known: Mapping[str, Any]
    ) -> Say | CallTool:
        """Call ``tool`` with what the utterance says (over what an earlier turn said)."""
        found = _Extraction(utterance, tool.properties, taken).run()
        return self._finish(tool, {**known, **found})

    def _finish(self, tool: _Tool, found: Mapping[str, Any]) -> Say | CallTool:
        """Call ``tool``, or ask for the required arguments not ``found``."""
        arguments = {prop.name: found[prop.name] for prop in tool.properties if prop.name in found}
        missing = [
            prop.readable
            for prop in tool.properties
            if prop.name in tool.required and prop.name not in arguments
        ]
        if missing:
            self._pending = _Pending(tool, arguments)
            needs = _join([f"the {name}" for name in missing])
            return self._say(f"To {tool.purpose}, I need {needs}.")
        return CallTool(tool.name, arguments)

    def _answer(self, pending: _Pending, utterance: _Utterance) -> Say | CallTool | None:
        """The caller's answer to a question about a missing argument, if it gives one."""
        tool = pending.tool
        wanted = [prop for prop in tool.properties if prop.name not in pending.arguments]
        extraction = _Extraction(utterance, wanted, frozenset())
        found = extraction.run()
        required = [prop for prop in wanted if prop.name in tool.required]
        if not found and len(required) == 1 and extraction.is_text(required[0]):
            whole = extraction.whole()
            if whole is not None:
                found[required[0].name] = whole
        if not found:
            return None
        return self._finish(tool, {**pending.arguments, **found})

    def _abilities(self) -> list[str]:
        purposes = [tool.purpose for tool in self._tools]
        if len(purposes) > _MAX_LISTED_TOOLS:
            extra = len(purposes) - _MAX_LISTED_TOOLS
            purposes = [*purposes[:_MAX_LISTED_TOOLS], _count(extra, "other thing")]
        return purposes

    def _greeting_text(self, opening: str) -> str:
        abilities = self._abilities()
        hint = (
            f"I can {_join(abilities, 'or')}."
            if abilities
            else "You can ask me the time, or for a joke."
        )
        return f"{opening}, I'm {self._agent}. {hint}"

    def _builtin(self, utterance: _Utterance) -> str | None:
        for kind, pattern in _BUILTINS:
            found = pattern.search(utterance.text)
            if found is None:
                continue
            if kind == "repeat":
                return self._last_said or "I haven't said anything yet."
            if kind == "time":
                return f"It is {_time_text(self._clock())}."
            if kind == "date":
                return f"Today is {_date_text(self._clock())}."
            if kind == "name":
                return f"I'm {self._agent}."
            if kind == "how_are_you":
                return "I'm doing well, thank you. How can I help?"
            if kind == "help":
                return self._help_text()
            if kind == "joke":
                joke = _JOKES[self._jokes_told % len(_JOKES)]
                self._jokes_told += 1
                return joke
            if kind == "goodbye":
                return "Goodbye!"
            if kind == "thanks":
                return "You're welcome."
            part = found.group("part")
            return self._greeting_text(f"Good {part}" if part else "Hello")
        return None

    def _help_text(self) -> str:
        abilities = self._abilities()
        if not abilities:
            return (
                "I can tell you the time or the date, tell you a joke, "
                "or say again what I just said."
            )
        return (
            f"I can {_join(abilities, 'or')}. "
            "I can also tell you the time or the date, or tell you a joke."
        )
