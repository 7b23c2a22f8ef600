"""Header layouts seen before: the slices of one series share one layout (the same elements, VRs and value
lengths in the same places), so a file whose layout was parsed once is split into its elements by slicing,
without walking it element by element again.

A layout is the sequence of every header the parser read: element headers (tag, VR, length), item headers
and delimiters, and the pixel data tag where reading stopped. The parser's every decision (where an element
ends, its VR, whether it is a sequence, where reading stops) depends on those bytes alone, so a file that has
the same bytes in those places parses into the same elements at the same offsets. A layout holds no value:
every value is sliced out of the file in hand, and what the policy makes of it is decided afresh (a cached
layout can never carry one file's value, or one file's decision, into another).
"""

from __future__ import annotations

import operator
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
UNDEFINED = 0xFFFFFFFF
# A handful of layouts a worker process keeps: the series it is working through, and a few it meets again.
KEPT_LAYOUTS = 8

# A level of the element tree: runs of plain elements (tags, VRs, how many), and sequences (tag, VR, items).
Run = tuple[tuple[int, ...], tuple[str, ...], int]
Sequence = tuple[int, str, list["Level"]]
Level = list[Run | Sequence]


@dataclass(frozen=True, eq=False)
class Layout:
    """One header layout: where it starts and stops, the header bytes it was read from, and the tree of its
    elements with the slices their values come from."""

    start: int
    stop: int
    implicit: bool
    headers: Callable[[bytes], Any]
    header_bytes: bytes
    values: Callable[[bytes], Any]
    tree: Level
    # Whether the file ended where reading stopped (no pixel data); else the pixel tag is in ``header_bytes``.
    at_end: bool

    def matches(self, data: bytes, start: int, implicit: bool) -> bool:
        if start != self.start or implicit != self.implicit:
            return False
        if self.at_end:
            if len(data) != self.stop:
                return False
        elif len(data) < self.stop + 8:
            return False
        return _joined(self.headers(data)) == self.header_bytes

    def elements(self, data: bytes) -> list[Any]:
        return _fill(self.tree, iter(_as_tuple(self.values(data))))


class Layouts:
    """The layouts a process has seen, most recent first. The operator may clean files in more than one thread
    (a small ingest runs in its handler's thread): the list is only read and reordered under a lock."""

    def __init__(self, kept: int = KEPT_LAYOUTS) -> None:
        self.kept = kept
        self.layouts: list[Layout] = []
        self._lock = threading.Lock()
        # A worker forked while another thread held the lock would wait for it for ever.
        os.register_at_fork(after_in_child=self._unlock)

    def _unlock(self) -> None:
        self._lock = threading.Lock()

    def find(self, data: bytes, start: int, implicit: bool) -> Layout | None:
        with self._lock:
            for index, layout in enumerate(self.layouts):
                if layout.matches(data, start, implicit):
                    if index:
                        self.layouts.insert(0, self.layouts.pop(index))
                    return layout
        return None

    def remember(self, layout: Layout) -> None:
        with self._lock:
            self.layouts.insert(0, layout)
            del self.layouts[self.kept :]

    def forget(self) -> None:
        with self._lock:
            self.layouts.clear()


def learn(
    data: bytes, start: int, stop: int, implicit: bool, elements: list[Any], read: Callable[[int, str], bool]
) -> Layout | None:
    """The layout of ``elements``, parsed from ``data[start:stop]``, giving back those of the top level that
    ``read(tag, VR)`` wants (every header is still compared); None when replaying it does not give back
    exactly those (then nothing is cached for it)."""
    headers: list[slice] = []
    values: list[slice] = []
    try:
        tree, position = _walk(data, start, elements, implicit, headers, values, read)
    except (IndexError, struct.error, ValueError):
        return None
    if position != stop:
        return None
    at_end = stop == len(data)
    if not at_end:
        headers.append(slice(stop, stop + 4))
    layout = Layout(
        start=start,
        stop=stop,
        implicit=implicit,
        headers=_getter(headers),
        header_bytes=_joined(_getter(headers)(data)),
        values=_getter(values),
        tree=tree,
        at_end=at_end,
    )
    wanted = [e for e in elements if read(e[0], e[1])]
    if not layout.matches(data, start, implicit) or layout.elements(data) != wanted:
        return None
    return layout


def _walk(
    data: bytes,
    position: int,
    elements: list[Any],
    implicit: bool,
    headers: list[slice],
    values: list[slice],
    read: Callable[[int, str], bool] | None = None,
) -> tuple[Level, int]:
    """The tree of ``elements`` read from ``position`` (of this level, only those ``read`` wants), the slices
    of their headers and values appended to ``headers`` and ``values``; and where they end."""
    level: Level = []
    tags: list[int] = []
    vrs: list[str] = []
    for tag, vr, value in elements:
        header = 8 if implicit or vr not in LONG_VRS else 12
        headers.append(slice(position, position + header))
        wanted = read is None or read(tag, vr)
        if not isinstance(value, list):
            if wanted:
                values.append(slice(position + header, position + header + len(value)))
                tags.append(tag)
                vrs.append(vr)
            position += header + len(value)
            continue
        if tags:
            level.append((tuple(tags), tuple(vrs), len(tags)))
            tags, vrs = [], []
        length = struct.unpack_from("<L", data, position + header - 4)[0]
        position += header
        # The values of a sequence left out are walked past, not sliced.
        sliced = values if wanted else []
        items: list[Level] = []
        for item in value:
            headers.append(slice(position, position + 8))
            item_length = struct.unpack_from("<L", data, position + 4)[0]
            item_tree, position = _walk(data, position + 8, item, implicit, headers, sliced)
            if item_length == UNDEFINED:
                headers.append(slice(position, position + 8))
                position += 8
            items.append(item_tree)
        if length == UNDEFINED:
            headers.append(slice(position, position + 8))
            position += 8
        if wanted:
            level.append((tag, vr, items))
    if tags:
        level.append((tuple(tags), tuple(vrs), len(tags)))
    return level, position


def _fill(level: Level, values: Iterator[bytes]) -> list[Any]:
    found: list[Any] = []
    for part in level:
        if isinstance(part[2], int):
            tags, vrs, count = part
            found.extend(zip(tags, vrs, islice(values, count), strict=True))
        else:
            tag, vr, items = part
            found.append((tag, vr, [_fill(item, values) for item in items]))
    return found


def _getter(slices: list[slice]) -> Callable[[bytes], Any]:
    return operator.itemgetter(*slices) if slices else (lambda _data: ())


def _as_tuple(got: Any) -> tuple[bytes, ...]:
    # itemgetter of one slice gives the slice's bytes, not a tuple of one.
    return got if isinstance(got, tuple) else (got,)


def _joined(got: Any) -> bytes:
    return b"".join(_as_tuple(got))
