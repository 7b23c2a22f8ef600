"""CSV that a spreadsheet opens as data: a modeller controls several fields (paths, reasons, workspace names)
through the hub's intake, and a cell beginning with = + - @, a tab or a carriage return is run as a formula by
Excel, LibreOffice and Google Sheets (OWASP "CSV Injection"). Such a cell is written with a leading
apostrophe, which every one of them shows as text."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

_ACTIVE = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    text = str(value)
    return "'" + text if text.startswith(_ACTIVE) else text


def write_csv(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
