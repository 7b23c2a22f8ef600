"""Replacement values by value representation (PS3.5 6.2): dummies, empties and shifted dates."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR: dict[str, Any] = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000D",
    "IS": "0",
    "DS": "0",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "UN": b"\x00\x00",
}
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
)
STRING_VRS = TEXT_VRS | {"UI"}
# Text where an identifier can be replaced by a marker inside the value; in other VRs the value's form is
# fixed (a code, a date, a number, an AE title) and the whole value becomes the dummy instead.
FREE_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
# Maximum characters of one value (PS3.5 Table 6.2-1); PN's 64 are per component group, taken for the whole.
MAX_CHARACTERS = {"SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240}


def dummy_value(vr: str) -> Any:
    """A non-zero-length value that identifies nothing (action D)."""
    return DUMMY_BY_VR.get(vr, DUMMY_TEXT)


def empty_value(vr: str) -> Any:
    """A zero-length value (action Z)."""
    return b"" if vr in {"OB", "OW", "OD", "OF", "OL", "OV", "UN"} else ("" if vr in STRING_VRS else None)


def shift_da(value: str, days: int) -> str:
    """Move a DA value (YYYYMMDD, or a YYYYMMDD-YYYYMMDD range) back by ``days``; malformed input becomes the dummy."""
    parts = value.strip().split("-")
    shifted = []
    for part in parts:
        if not part:
            shifted.append("")
            continue
        try:
            moved = datetime.strptime(part[:8], "%Y%m%d").date() - timedelta(days=days)
        except ValueError:
            return str(DUMMY_BY_VR["DA"])
        shifted.append(_da(moved))
    return "-".join(shifted)


def shift_dt(value: str, days: int) -> str:
    """Move a DT value back by ``days``, keeping its time, fraction and offset parts."""
    text = value.strip()
    if len(text) < 8:
        return str(DUMMY_BY_VR["DT"])
    try:
        moved = datetime.strptime(text[:8], "%Y%m%d").date() - timedelta(days=days)
    except ValueError:
        return str(DUMMY_BY_VR["DT"])
    return _da(moved) + text[8:]


def _da(moment: date) -> str:
    return f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
