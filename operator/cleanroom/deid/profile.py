"""The PS3.15 Annex E profile as data: Table E.1-1 compiled for a chosen set of options.

Actions (PS3.15 Table E.1-1 legend): D dummy value, Z zero-length or dummy, X remove, K keep, C clean,
U replace UID consistently. Combined codes are resolved per PS3.15 E.3.1, which lets a de-identifier replace
where it may remove: without per-IOD type information we pick the member that keeps every IOD conformant
(a Type 1 attribute needs D, a Type 2 attribute needs Z), so X/Z becomes Z, X/D, Z/D and X/Z/D become D, and
X/Z/U* becomes U (a sequence kept so the UIDs inside it are replaced). X/Z stays distinct: it is Z for a
value, and for a sequence Z at the top level (Type 2 there) but X when nested (Type 3 in macros).
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cleanroom.api import DeidentificationOption


class Action(enum.Enum):
    DUMMY = "D"
    ZERO = "Z"
    REMOVE = "X"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"
    # X/Z kept apart from Z: for a sequence it is the one place where removal and emptying differ in validity.
    ZERO_OR_REMOVE = "X/Z"


COMBINED = {
    "X/Z": Action.ZERO_OR_REMOVE,
    "X/D": Action.DUMMY,
    "Z/D": Action.DUMMY,
    "X/Z/D": Action.DUMMY,
    "X/Z/U*": Action.UID,
}

OPTION_COLUMNS: Mapping[DeidentificationOption, str] = {
    DeidentificationOption.RETAIN_SAFE_PRIVATE: "rtnSafePrivOpt",
    DeidentificationOption.RETAIN_UIDS: "rtnUIDsOpt",
    DeidentificationOption.RETAIN_DEVICE_IDENTITY: "rtnDevIdOpt",
    DeidentificationOption.RETAIN_INSTITUTION_IDENTITY: "rtnInstIdOpt",
    DeidentificationOption.RETAIN_PATIENT_CHARACTERISTICS: "rtnPatCharsOpt",
    DeidentificationOption.RETAIN_LONGITUDINAL_FULL_DATES: "rtnLongFullDatesOpt",
    DeidentificationOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: "rtnLongModifDatesOpt",
    DeidentificationOption.CLEAN_DESCRIPTORS: "cleanDescOpt",
    DeidentificationOption.CLEAN_STRUCTURED_CONTENT: "cleanStructContOpt",
    DeidentificationOption.CLEAN_GRAPHICS: "cleanGraphOpt",
}


def parse_action(code: str) -> Action:
    """One Table E.1-1 action code, combined codes resolved as the module docstring explains."""
    return COMBINED.get(code) or Action(code)


@dataclass(frozen=True)
class TableEntry:
    name: str
    tag: str
    basic: str
    options: Mapping[str, str]


@functools.cache
def table() -> tuple[TableEntry, ...]:
    """Table E.1-1 as vendored in ``cleanroom/deid/data`` (read beside this module: importlib.resources would
    bring tempfile, shutil and the compression modules into every command's start-up)."""
    raw = json.loads((Path(__file__).parent / "data" / "ps3.15-table-e1-1.json").read_text(encoding="utf-8"))
    return tuple(
        TableEntry(
            name=row["name"],
            tag=row["tag"],
            basic=row["basicProfile"],
            options={column: row[column] for column in OPTION_COLUMNS.values() if column in row},
        )
        for row in raw
    )


def resolve(entry: TableEntry, options: Iterable[DeidentificationOption]) -> Action:
    """The action for one attribute under the basic profile plus ``options``.

    An option column overrides the basic profile. Where several chosen options name the attribute, a
    retaining option (K) wins over a cleaning one (C): choosing to retain is the more specific request.
    """
    chosen = [entry.options[OPTION_COLUMNS[o]] for o in options if OPTION_COLUMNS[o] in entry.options]
    if "K" in chosen:
        return Action.KEEP
    if "C" in chosen:
        return Action.CLEAN
    return parse_action(entry.basic)


@dataclass(frozen=True)
class Profile:
    """Table E.1-1 compiled for one set of options: exact tags plus repeating-group masks (50xx, 60xx)."""

    options: frozenset[DeidentificationOption]
    exact: Mapping[int, Action]
    masked: tuple[tuple[int, int, Action], ...]

    def action(self, tag: int) -> Action | None:
        """The action for ``tag``, or None when the table does not list it (it is then kept)."""
        found = self.exact.get(tag)
        if found is not None:
            return found
        for mask, value, action in self.masked:
            if tag & mask == value:
                return action
        return None


@functools.cache
def compile_profile(options: frozenset[DeidentificationOption]) -> Profile:
    exact: dict[int, Action] = {}
    masked: list[tuple[int, int, Action]] = []
    for entry in table():
        if "WHERE GGGG IS ODD" in entry.tag.upper():
            # The private-attributes row (X, or C under Retain Safe Private) is applied by the engine's
            # private-tag rule, which needs the private creator to judge an attribute.
            continue
        digits = entry.tag.strip("()").replace(",", "")
        action = resolve(entry, options)
        if "X" in digits.upper():
            mask = int("".join("0" if c in "xX" else "F" for c in digits), 16)
            value = int("".join("0" if c in "xX" else c for c in digits), 16)
            masked.append((mask, value, action))
        else:
            exact[int(digits, 16)] = action
    return Profile(options=options, exact=exact, masked=tuple(masked))
