"""Converts RSNA CTP's DicomPixelAnonymizer script into cleanroom's pixel-region rules, once.

CTP (the RSNA Clinical Trial Processor) keeps its library of known burned-in text regions as a script:
free text, then for each signature a boolean expression in braces and the rectangles after it,

    { Modality.equals("US") * ManufacturerModelName.containsIgnoreCase("iU22") * Rows.equals("480") }
    (0,0,640,47)

read by CTP's PixelScript (every ``{...}``, and every ``(...)`` between it and the next ``{``) and evaluated
by its DicomObject.matches: operands ``Name.method("value")`` or ``[gggg,eeee].method("value")``, ``*`` for
and, ``+`` for or, ``!`` for not (not binds tightest, then and, then or), parentheses, ``//`` comments; a
missing attribute reads as "", a multi-valued one as its values joined by a backslash; the first signature
that matches wins. This script parses the same way and writes the result as data
(operator/cleanroom/deid/data/ctp-pixel-regions.json), which ``cleanroom.deid.pixel_rules`` reads:

    python3 hack/ctp_pixel_rules.py CTP_CHECKOUT COMMIT > operator/cleanroom/deid/data/ctp-pixel-regions.json

CTP_CHECKOUT is a checkout of github.com/johnperry/CTP at COMMIT (the commit is only recorded). Attribute
names are checked against pydicom's data dictionary and tags written as keywords; anything this parser does
not understand stops it, so the data never silently differs from what CTP would do.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword

SCRIPT = "source/files/scripts/DicomPixelAnonymizer.script"
# CTP's Java files carry this licence; the script file itself carries none and says it was compiled from
# the contributions of many users.
LICENCE = "RSNA Public License (http://mirc.rsna.org/rsnapubliclicense.pdf), as CTP's sources state"
METHODS = {
    "equals",
    "equalsIgnoreCase",
    "matches",
    "contains",
    "containsIgnoreCase",
    "startsWith",
    "startsWithIgnoreCase",
    "endsWith",
    "endsWithIgnoreCase",
    "isLessThan",
    "isGreaterThan",
}
SIGNATURE = re.compile(r"\{[^}]*\}")
REGION = re.compile(r"\([^)]*\)")
OPERAND = re.compile(
    r'\s*(\[[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\]|[A-Za-z][A-Za-z0-9]*)\.(\w+)\s*\(\s*"([^"]*)"\s*\)'
)


class Expression:
    """CTP's match expression as a recursive descent parser: or of ands of (possibly negated) factors."""

    def __init__(self, text: str) -> None:
        self.text = re.sub(r"//[^\n]*", "", text)
        self.at = 0

    def parse(self) -> dict[str, Any]:
        found = self._or()
        self._skip()
        if self.at != len(self.text):
            raise ValueError(f"unexpected text at {self.text[self.at :]!r}")
        return found

    def _skip(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def _peek(self) -> str:
        self._skip()
        return self.text[self.at] if self.at < len(self.text) else ""

    def _or(self) -> dict[str, Any]:
        terms = [self._and()]
        while self._peek() == "+":
            self.at += 1
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else {"any": _flatten("any", terms)}

    def _and(self) -> dict[str, Any]:
        factors = [self._factor()]
        while self._peek() == "*":
            self.at += 1
            factors.append(self._factor())
        return factors[0] if len(factors) == 1 else {"all": _flatten("all", factors)}

    def _factor(self) -> dict[str, Any]:
        char = self._peek()
        if char == "!":
            self.at += 1
            return {"not": self._factor()}
        if char == "(":
            self.at += 1
            inner = self._or()
            if self._peek() != ")":
                raise ValueError(f"')' expected at {self.text[self.at :]!r}")
            self.at += 1
            return inner
        for constant in ("true", "false"):
            if self.text.startswith(constant, self.at):
                self.at += len(constant)
                return {"const": constant == "true"}
        match = OPERAND.match(self.text, self.at)
        if match is None:
            raise ValueError(f"operand expected at {self.text[self.at :]!r}")
        self.at = match.end()
        name, method, value = match.groups()
        if method not in METHODS:
            raise ValueError(f"CTP has no method {method!r}")
        return {"attribute": _keyword(name), "test": method, "value": value}


def _flatten(kind: str, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for part in parts:
        flat.extend(part[kind] if set(part) == {kind} else [part])
    return flat


def _keyword(name: str) -> str:
    """The DICOM keyword CTP's name or [gggg,eeee] tag stands for, or the tag as (GGGG,EEEE) where its
    keyword names a repeating group (60xx); an unknown name stops the conversion."""
    if name.startswith("["):
        tag = int(name[1:5] + name[6:10], 16)
        keyword = keyword_for_tag(tag)
        if not keyword:
            raise ValueError(f"{name} is not in pydicom's dictionary")
        return keyword if tag_for_keyword(keyword) == tag else f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if tag_for_keyword(name) is None:
        raise ValueError(f"{name} is not a DICOM keyword in pydicom's dictionary")
    return name


def _regions(text: str) -> list[list[int]]:
    regions = []
    for found in REGION.findall(text):
        parts = found[1:-1].split(",")
        if len(parts) != 4 or not all(re.fullmatch(r"\s*-?\d+\s*", p) for p in parts):
            raise ValueError(f"{found!r} is not a region (x,y,width,height)")
        regions.append([int(p) for p in parts])
    return regions


def _labels(text: str, section: str, stack: list[tuple[int, str]]) -> tuple[str, list[tuple[int, str]]]:
    """The section (a heading between lines of asterisks) and the indented comment lines naming a rule."""
    lines = REGION.sub("", text).splitlines()
    for index, line in enumerate(lines):
        words = line.strip()
        if not words or set(words) <= {"*"}:
            continue
        neighbours = [lines[i].strip() for i in (index - 1, index + 1) if 0 <= i < len(lines)]
        if len(neighbours) == 2 and all(n and set(n) <= {"*"} for n in neighbours):
            section, stack = words, []
            continue
        indent = len(line) - len(line.lstrip())
        stack = [(i, w) for i, w in stack if i < indent] + [(indent, words)]
    return section, stack


def convert(script: str, commit: str) -> dict[str, Any]:
    signatures = list(SIGNATURE.finditer(script))
    rules = []
    section, stack = "", []
    previous_end = 0
    for index, signature in enumerate(signatures):
        # Regions of the previous signature and this one's comment share the text between the two.
        section, stack = _labels(script[previous_end : signature.start()], section, stack)
        end = signatures[index + 1].start() if index + 1 < len(signatures) else len(script)
        regions = _regions(script[signature.end() : end])
        # What follows the regions (the next rule's comment) is read with the next signature.
        previous_end = _last_region_end(script, signature.end(), end)
        rules.append(
            {
                "name": " / ".join([section, *(w for _, w in stack)]),
                "line": script.count("\n", 0, signature.start()) + 1,
                "when": Expression(signature.group()[1:-1]).parse(),
                "regions": regions,
            }
        )
    return {
        "about": (
            "Known burned-in text regions: the first rule whose condition the original header satisfies "
            "gives the rectangles (x, y, width, height; a negative x or y counts from the right or bottom "
            "edge) blanked in every frame and sample. Read by cleanroom.deid.pixel_rules."
        ),
        "source": {
            "project": "RSNA Clinical Trial Processor (CTP)",
            "repository": "https://github.com/johnperry/CTP",
            "path": SCRIPT,
            "commit": commit,
            "licence": LICENCE,
        },
        "generated_by": "hack/ctp_pixel_rules.py (not edited by hand)",
        "condition": (
            "{'attribute': keyword, 'test': CTP's method, 'value': text} on the attribute's value as text "
            "(absent: ''; several values joined by a backslash; file meta attributes from the file meta), "
            "combined with 'all', 'any', 'not', or a 'const'"
        ),
        "rules": rules,
    }


def _last_region_end(script: str, start: int, end: int) -> int:
    last = start
    for found in REGION.finditer(script, start, end):
        last = found.end()
    return last


def main() -> None:
    checkout, commit = Path(sys.argv[1]), sys.argv[2]
    script = (checkout / SCRIPT).read_text(encoding="utf-8")
    text = json.dumps(convert(script, commit), indent=1)
    # A rectangle on one line: [x, y, width, height].
    sys.stdout.write(
        re.sub(r"\[\s+(-?\d+),\s+(-?\d+),\s+(-?\d+),\s+(-?\d+)\s+\]", r"[\1, \2, \3, \4]", text) + "\n"
    )


if __name__ == "__main__":
    main()
