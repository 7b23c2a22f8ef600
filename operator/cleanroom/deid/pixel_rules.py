"""Where burned-in text sits, by the kind of image: rules kept as data (``data/ctp-pixel-regions.json``).

Each rule is a condition on the original header (modality, manufacturer, model, image size, and whatever
else the vendor's screens are known by) and the rectangles to blank when it holds. The rules are RSNA CTP's
DicomPixelAnonymizer library, converted once by ``hack/ctp_pixel_rules.py`` and evaluated here as CTP
evaluates them: an attribute's value as text (absent reads as "", several values joined by a backslash),
CTP's tests (``containsIgnoreCase`` and the rest), and the first rule that holds wins. PS3.15 E.3.1 (Clean
Pixel Data Option) asks for burned-in identifying information to be removed; this says where it is.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

RULES_FILE = "ctp-pixel-regions.json"

# An attribute's value as text, by keyword or "(GGGG,EEEE)": "" when absent (CTP's reading).
Values = Callable[[str], str]


@dataclass(frozen=True)
class Region:
    """A rectangle of the image in pixels, as CTP writes it: a negative x or y counts from the right or
    bottom edge."""

    x: int
    y: int
    width: int
    height: int

    def within(self, rows: int, columns: int) -> Region | None:
        """The part of the rectangle inside a rows x columns image (CTP's adjustment), or None if none is."""
        x = max(self.x + columns if self.x < 0 else self.x, 0)
        y = max(self.y + rows if self.y < 0 else self.y, 0)
        width = min(self.width, columns - x)
        height = min(self.height, rows - y)
        if width <= 0 or height <= 0:
            return None
        return Region(x, y, width, height)

    def __str__(self) -> str:
        return f"(x={self.x}, y={self.y}, width={self.width}, height={self.height})"


@dataclass(frozen=True)
class Test:
    attribute: str
    test: str
    value: str

    def holds(self, values: Values) -> bool:
        return _TESTS[self.test](values(self.attribute), self.value)


@dataclass(frozen=True)
class All:
    parts: tuple[Condition, ...]

    def holds(self, values: Values) -> bool:
        return all(part.holds(values) for part in self.parts)


@dataclass(frozen=True)
class Any_:
    parts: tuple[Condition, ...]

    def holds(self, values: Values) -> bool:
        return any(part.holds(values) for part in self.parts)


@dataclass(frozen=True)
class Not:
    part: Condition

    def holds(self, values: Values) -> bool:
        return not self.part.holds(values)


@dataclass(frozen=True)
class Const:
    value: bool

    def holds(self, values: Values) -> bool:
        return self.value


Condition = Test | All | Any_ | Not | Const


@dataclass(frozen=True)
class PixelRule:
    """One kind of image and where its burned-in text is."""

    name: str
    when: Condition
    regions: tuple[Region, ...]

    def attributes(self) -> frozenset[str]:
        """Every attribute the condition reads."""
        return _attributes(self.when)


def _number(text: str) -> float:
    # CTP strips everything but digits and dots before comparing numbers.
    return float(re.sub(r"[^0-9.]", "", text.lower()))


def _compare(text: str, other: str, less: bool) -> bool:
    try:
        a, b = _number(text), _number(other)
    except ValueError:
        return False
    return a < b if less else a > b


_TESTS: Mapping[str, Callable[[str, str], bool]] = {
    "equals": lambda a, b: a == b,
    "equalsIgnoreCase": lambda a, b: a.lower() == b.lower(),
    # Java's String.matches: the whole value matches the expression.
    "matches": lambda a, b: re.fullmatch(b, a) is not None,
    "contains": lambda a, b: b in a,
    "containsIgnoreCase": lambda a, b: b.lower() in a.lower(),
    "startsWith": lambda a, b: a.startswith(b),
    "startsWithIgnoreCase": lambda a, b: a.lower().startswith(b.lower()),
    "endsWith": lambda a, b: a.endswith(b),
    "endsWithIgnoreCase": lambda a, b: a.lower().endswith(b.lower()),
    "isLessThan": lambda a, b: _compare(a, b, less=True),
    "isGreaterThan": lambda a, b: _compare(a, b, less=False),
}


def _attributes(condition: Condition) -> frozenset[str]:
    if isinstance(condition, Test):
        return frozenset({condition.attribute})
    if isinstance(condition, All | Any_):
        return frozenset().union(*(_attributes(part) for part in condition.parts))
    if isinstance(condition, Not):
        return _attributes(condition.part)
    return frozenset()


def _condition(data: Mapping[str, Any]) -> Condition:
    if "all" in data:
        return All(tuple(_condition(part) for part in data["all"]))
    if "any" in data:
        return Any_(tuple(_condition(part) for part in data["any"]))
    if "not" in data:
        return Not(_condition(data["not"]))
    if "const" in data:
        return Const(bool(data["const"]))
    if data["test"] not in _TESTS:
        raise ValueError(f"unknown test {data['test']!r} in the pixel rules")
    return Test(str(data["attribute"]), str(data["test"]), str(data["value"]))


def parse_rules(document: Mapping[str, Any]) -> tuple[PixelRule, ...]:
    """The rules of a rules document (the format ``hack/ctp_pixel_rules.py`` writes)."""
    return tuple(
        PixelRule(
            name=str(rule["name"]),
            when=_condition(rule["when"]),
            regions=tuple(Region(*(int(n) for n in region)) for region in rule["regions"]),
        )
        for rule in document["rules"]
    )


@functools.cache
def shipped_rules() -> tuple[PixelRule, ...]:
    """The rules cleanroom ships (CTP's library), read once per process."""
    text = resources.files("cleanroom.deid").joinpath(f"data/{RULES_FILE}").read_text(encoding="utf-8")
    return parse_rules(json.loads(text))


def matching_rule(rules: Sequence[PixelRule], values: Values) -> PixelRule | None:
    """The first rule whose condition the header holds (CTP's order), or None."""
    return next((rule for rule in rules if rule.when.holds(values)), None)
