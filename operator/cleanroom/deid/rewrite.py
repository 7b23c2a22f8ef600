"""The common case, de-identified straight on the encoded bytes: the same profile as ``engine``, without
building pydicom objects for the header.

pydicom spends most of a CT slice's time parsing the header into objects and writing them back; the profile
itself touches a few dozen values. Here the header is split into (tag, VR, raw value) elements, each action
is applied to its raw value, kept values are copied as they are, and the pixel data is appended unchanged.

This path only ever produces a cleaned file. Anything it does not handle exactly as ``engine`` does (another
transfer syntax or character set, a value it cannot decode, a quarantine, a residual identifier) makes it
step aside with ``NotHandled``, and the file goes through ``engine`` instead. ``tests/unit/test_deid_rewrite``
checks that both paths give the same file for every corpus the tests have.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Union

from cleanroom.deid import dictionary, layout, policy, values
from cleanroom.deid.clean_file import CleanFile
from cleanroom.deid.instance import Instance, Where, start
from cleanroom.deid.phi import IDENTIFIER_VRS, Scanner
from cleanroom.deid.policy import (
    BODY_PART,
    BURNED_IN,
    MODALITY,
    PATIENT_ID,
    SERIES,
    SOP_CLASS,
    SOP_INSTANCE,
    STUDY,
    DeidConfig,
    Inside,
    Marker,
    Operation,
)

# An element: (tag, VR, value); a sequence's value is its items, each a list of elements.
Element = tuple[int, str, Union[bytes, "list[list[Element]]"]]


class NotHandled(Exception):
    """This file is left to the pydicom path; the message says why (for tests and debugging)."""


PREAMBLE = b"\x00" * 128
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
KNOWN_VRS = LONG_VRS | frozenset(
    {
        "AE",
        "AS",
        "AT",
        "CS",
        "DA",
        "DS",
        "DT",
        "FL",
        "FD",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "SL",
        "SS",
        "ST",
        "SV",
    }
    | {"TM", "UI", "UL", "US", "UV"}
)
# Text VRs that hold one value; the others split on backslashes (PS3.5 6.4).
SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
NUMBER_FORMATS = {
    "US": "<H",
    "SS": "<h",
    "UL": "<L",
    "SL": "<l",
    "UV": "<Q",
    "SV": "<q",
    "FL": "<f",
    "FD": "<d",
}
# Character sets (PS3.3 C.12.1.1.2) read here, by the Python codec pydicom decodes them with (its
# pydicom.charset.python_encoding, less the multi-byte sets; tests/unit/test_deid_dictionary.py holds the two
# tables equal, and this copy spares importing pydicom): the single-byte sets and UTF-8, where a backslash is
# always the value delimiter and every byte decodes on its own. The ISO 2022 names of the single-byte sets are
# the same text as long as no escape sequence switches sets (a value holding ESC steps aside). Multi-byte sets
# (Japanese, Korean, Chinese) are left to pydicom.
_SINGLE_BYTE_SETS = {
    "6": "iso8859",
    "100": "latin_1",
    "101": "iso8859_2",
    "109": "iso8859_3",
    "110": "iso8859_4",
    "126": "iso_ir_126",
    "127": "iso_ir_127",
    "138": "iso_ir_138",
    "144": "iso_ir_144",
    "148": "iso_ir_148",
    "166": "iso_ir_166",
}
CHARACTER_SETS = {
    "": "iso8859",
    "ISO_IR 192": "UTF8",
    **{f"ISO_IR {number}": codec for number, codec in _SINGLE_BYTE_SETS.items()},
    **{f"ISO 2022 IR {number}": codec for number, codec in _SINGLE_BYTE_SETS.items()},
}
# The VRs whose text is in the data set's character set; every other string is in the default repertoire.
CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
DEFAULT_CODEC = "latin_1"
ESCAPE = 0x1B
EXPLICIT_LITTLE, IMPLICIT_LITTLE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
SYNTAX_TAG = 0x00020010
IMAGE_TAGS = {"rows": 0x00280010, "columns": 0x00280011, "samples": 0x00280002, "bits": 0x00280100}
FRAMES = 0x00280008


# The two bytes of an explicit VR as they are encoded, to the VR (one lookup per element, no decoding).
_VR_NAMES = {vr.encode(): vr for vr in KNOWN_VRS}
ELEMENT_HEADER = struct.Struct("<HH2sH")
ITEM_HEADER = struct.Struct("<HHL")
LONG_LENGTH = struct.Struct("<L")


def _u16(data: bytes, at: int) -> int:
    return int(struct.unpack_from("<H", data, at)[0])


def _u32(data: bytes, at: int) -> int:
    return int(struct.unpack_from("<L", data, at)[0])


def _dictionary_vr(tag: int) -> str:
    """The VR an implicit-VR element has, as pydicom decides it: the data dictionary's, else UN."""
    return dictionary.vr(tag) or "UN"


def parse_elements(
    data: bytes, start: int, end: int, *, in_item: bool = False, implicit: bool = False
) -> tuple[list[Element], int]:
    """Little endian elements (explicit VR, or implicit with VRs from the data dictionary) from ``start``
    until ``end``, a pixel data tag at the top level, or an item delimiter when ``in_item``. Returns the
    elements and where reading stopped."""
    found: list[Element] = []
    position = start
    while position < end:
        if position + 8 > end:
            raise NotHandled("an element header runs past the end")
        header = 8
        if implicit:
            group, number, length = ITEM_HEADER.unpack_from(data, position)
        else:
            group, number, raw_vr, length = ELEMENT_HEADER.unpack_from(data, position)
        tag = group << 16 | number
        if tag == ITEM_END:
            if not in_item:
                raise NotHandled("an item delimiter outside an item")
            return found, position + 8
        if tag in PIXEL_TAGS and not in_item:
            return found, position
        if implicit:
            vr = _dictionary_vr(tag)
            if length == UNDEFINED and vr == "UN":
                vr = "SQ"  # an unknown (private) sequence, as pydicom reads it
        else:
            vr = _VR_NAMES.get(raw_vr, "")
            if not vr:
                raise NotHandled(f"VR {raw_vr!r}")
            if vr in LONG_VRS:
                if position + 12 > end:
                    raise NotHandled("an element header runs past the end")
                length, header = LONG_LENGTH.unpack_from(data, position + 8)[0], 12
        value_start = position + header
        if vr == "SQ":
            items, position = _parse_items(data, value_start, length, end, implicit)
            found.append((tag, vr, items))
            continue
        if length == UNDEFINED or length % 2 or value_start + length > end:
            raise NotHandled("an undefined, odd or truncated value length")
        position = value_start + length
        found.append((tag, vr, data[value_start:position]))
    if in_item:
        raise NotHandled("an item without its delimiter")
    return found, position


def _parse_items(
    data: bytes, start: int, length: int, end: int, implicit: bool
) -> tuple[list[list[Element]], int]:
    limit = end if length == UNDEFINED else start + length
    if limit > end:
        raise NotHandled("a sequence runs past the end")
    items: list[list[Element]] = []
    position = start
    while position < limit:
        if position + 8 > limit:
            raise NotHandled("an item header runs past the end")
        group, number, item_length = ITEM_HEADER.unpack_from(data, position)
        tag = group << 16 | number
        position += 8
        if tag == SEQUENCE_END and length == UNDEFINED:
            return items, position
        if tag != ITEM:
            raise NotHandled("a sequence holds something other than items")
        if item_length == UNDEFINED:
            elements, position = parse_elements(data, position, limit, in_item=True, implicit=implicit)
        else:
            if position + item_length > limit:
                raise NotHandled("an item runs past its sequence")
            elements, stopped = parse_elements(data, position, position + item_length, implicit=implicit)
            if stopped != position + item_length:
                raise NotHandled("pixel data inside an item")
            position += item_length
        items.append(elements)
    if length == UNDEFINED:
        raise NotHandled("a sequence without its delimiter")
    return items, position


# -- values ------------------------------------------------------------------------------------------------


def _text(value: bytes) -> str:
    return value.decode("latin-1").rstrip("\x00 ")


def _strings(vr: str, value: bytes, codec: str = DEFAULT_CODEC) -> list[str]:
    """The values of a text or UID element as pydicom reads them (each without trailing padding), text VRs
    decoded with ``codec`` (the character set's)."""
    if vr in CHARSET_VRS and codec != DEFAULT_CODEC:
        if ESCAPE in value:
            raise NotHandled("an ISO 2022 escape sequence")
        text = value.decode(codec)
    else:
        text = value.decode(DEFAULT_CODEC)
    if vr in SINGLE_TEXT_VRS:
        return [text.rstrip("\x00 ")]
    return [part.rstrip("\x00 ") for part in text.split("\\")]


def _encode_strings(vr: str, parts: Iterable[str], codec: str = DEFAULT_CODEC) -> bytes:
    encoded = "\\".join(parts).encode(codec if vr in CHARSET_VRS else DEFAULT_CODEC)
    if len(encoded) % 2:
        encoded += b"\x00" if vr == "UI" else b" "
    return encoded


def _number(vr: str, value: bytes) -> int | None:
    """An unsigned short or integer string, as the image checks need it."""
    if not value:
        return None
    if vr == "US" and len(value) >= 2:
        return _u16(value, 0)
    try:
        return int(_text(value).split("\\")[0])
    except ValueError:
        raise NotHandled("an image attribute that is not a number") from None


def _dummy(vr: str) -> bytes:
    dummy = values.dummy_value(vr)
    if isinstance(dummy, bytes):
        return dummy
    if vr in NUMBER_FORMATS:
        return struct.pack(NUMBER_FORMATS[vr], dummy)
    if vr == "AT":
        return b"\x00\x00\x00\x00"
    return _encode_strings(vr, [str(dummy)])


# -- the policy's decisions, on encoded values ------------------------------------------------------------


def _uids(vr: str, value: bytes, instance: Instance) -> bytes:
    parts = _strings(vr, value)
    if parts == [""] or instance.policy.retain_uids:
        return value
    return _encode_strings("UI", [instance.uid(part) for part in parts])


def _clean(vr: str, value: bytes, instance: Instance, where: Where, codec: str) -> bytes:
    """Action C (``Instance.clean``) on each value; a value that stays the same keeps its bytes."""
    parts = _strings(vr, value, codec)
    if parts == [""]:
        return value
    cleaned = [instance.clean(vr, part, where) for part in parts]
    return value if cleaned == parts else _encode_strings(vr, cleaned, codec)


def _residual(vr: str, value: bytes, instance: Instance, where: Where, codec: str) -> bytes:
    """A kept text value without the original header's identifiers (``Instance.residual``)."""
    parts = _strings(vr, value, codec)
    cleaned = [instance.residual(vr, part, where) for part in parts]
    return value if cleaned == parts else _encode_strings(vr, cleaned, codec)


def _searched_text(vr: str, value: bytes, codec: str) -> str:
    """What the residual scan reads of a kept text value."""
    return value.decode(DEFAULT_CODEC) if value.isascii() else "\\".join(_strings(vr, value, codec))


def _clean_kept_text(
    kept: list[Element], texts: list[tuple[int, str]], instance: Instance, codec: str, path: str
) -> None:
    """The residual scan of the kept text values at ``texts`` (index in ``kept``, and the text scanned), in
    one search: a line break is no word character and folds to itself, so an identifier found in one value
    is found where that value stands among the others, and text without a hit needs no look one by one."""
    scanner = instance.identifiers.residual
    if scanner.search("\n".join(text for _, text in texts)) is None:
        return
    for index, text in texts:
        if scanner.search(text) is None:
            continue
        tag, vr, value = kept[index]
        kept[index] = (tag, vr, _residual(vr, value, instance, (path, tag), codec))  # type: ignore[arg-type]


def _replace(
    vr: str, value: bytes, operation: Operation, instance: Instance, where: Where, codec: str
) -> bytes:
    if operation is Operation.EMPTY:
        return b""
    if operation is Operation.DUMMY or (operation is Operation.DUMMY_IF_SET and _strings(vr, value) != [""]):
        return _dummy(vr)
    if operation is Operation.UID:
        return _uids(vr, value, instance)
    if operation is Operation.CLEAN:
        return _clean(vr, value, instance, where, codec)
    return value


def _apply(
    elements: list[Element], instance: Instance, codec: str, inside: Inside, nested: bool, path: str = ""
) -> list[Element]:
    """engine._apply on encoded elements: the kept ones, each with its value as the policy decides."""
    kept: list[Element] = []
    # Kept text values, scanned for residual identifiers together once the rest is done.
    texts: list[tuple[int, str]] = []
    removed_groups: set[int] = set()
    decisions = instance.policy.decisions(inside, nested)
    for tag, vr, value in elements:
        if tag >> 16 & 1 or tag & 0xFFFF == 0:
            # Private attributes go (Retain Safe Private is left to the engine), and so do group lengths.
            continue
        if vr == "UN":
            raise NotHandled("an attribute of unknown VR")
        decision = decisions(tag, vr)
        operation = decision.operation
        if " or " in vr and operation not in (Operation.KEEP, Operation.REMOVE, Operation.DESCEND):
            raise NotHandled(f"an action on an attribute whose VR is ambiguous ({vr})")
        if decision.removes_group:
            removed_groups.add(tag >> 16)
        if operation is Operation.REMOVE:
            continue
        if isinstance(value, list):
            if operation is Operation.DESCEND:
                where = path + policy.attribute_name(tag)
                value = [
                    _apply(item, instance, codec, decision.inside, True, f"{where}[{index}].")
                    for index, item in enumerate(value)
                ]
            elif operation is Operation.EMPTY:
                value = []
        elif operation is not Operation.KEEP:
            value = _replace(vr, value, operation, instance, (path, tag), codec)
        elif value and vr in values.TEXT_VRS:
            texts.append((len(kept), _searched_text(vr, value, codec)))
        kept.append((tag, vr, value))
    if texts:
        _clean_kept_text(kept, texts, instance, codec, path)
    return [e for e in kept if e[0] >> 16 not in removed_groups] if removed_groups else kept


# -- writing -------------------------------------------------------------------------------------------------


def _encode(elements: list[Element], implicit: bool = False) -> bytes:
    out = bytearray()
    heads = _IMPLICIT_HEADS if implicit else _EXPLICIT_HEADS
    for tag, vr, value in sorted(elements, key=_TAG):
        if isinstance(value, list):
            body = b"".join(
                struct.pack("<HHL", 0xFFFE, 0xE000, len(encoded)) + encoded
                for encoded in (_encode(item, implicit) for item in value)
            )
        else:
            body = value
        head = heads.get((tag, vr))
        if head is None:
            head = heads[tag, vr] = _element_head(tag, vr, implicit)
        out += head[0]
        if head[1] is LONG_LENGTH:
            out += LONG_LENGTH.pack(len(body))
        elif len(body) > 0xFFFF:
            raise NotHandled(f"a {vr} value longer than its length field allows")
        else:
            out += SHORT_LENGTH.pack(len(body))
        out += body
    return bytes(out)


_TAG = operator.itemgetter(0)
SHORT_LENGTH = struct.Struct("<H")
# What an element's header starts with, by (tag, VR), and how its length is written after that.
_EXPLICIT_HEADS: dict[tuple[int, str], tuple[bytes, struct.Struct]] = {}
_IMPLICIT_HEADS: dict[tuple[int, str], tuple[bytes, struct.Struct]] = {}


def _element_head(tag: int, vr: str, implicit: bool) -> tuple[bytes, struct.Struct]:
    prefix = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return prefix, LONG_LENGTH
    if vr in LONG_VRS:
        return prefix + vr.encode() + b"\x00\x00", LONG_LENGTH
    return prefix + vr.encode(), SHORT_LENGTH


def _markers(markers: tuple[Marker, ...]) -> list[Element]:
    """The policy's PS3.15 E.1.1 markers, encoded."""
    return [
        (
            m.tag,
            m.vr,
            [_markers(item) for item in m.items] if m.vr == "SQ" else _encode_strings(m.vr, m.values),
        )
        for m in markers
    ]


def _file_meta(meta: list[Element], instance_uid: str) -> list[Element]:
    """engine._apply_file_meta and pydicom's enforce_file_format, on the encoded file meta."""
    if any(isinstance(value, list) for _, _, value in meta):
        raise NotHandled("a sequence in the file meta")
    by_tag = {tag: found for tag, found in _top(meta).items() if tag != 0x00020000}
    for required in (0x00020002, 0x00020003, SYNTAX_TAG):
        if required not in by_tag or not _text(by_tag[required][1]):
            raise NotHandled("file meta without its Type 1 attributes")
    by_tag[policy.MEDIA_SOP_INSTANCE] = ("UI", _encode_strings("UI", [instance_uid]))
    if policy.SOURCE_AE in by_tag:
        by_tag[policy.SOURCE_AE] = ("AE", _encode_strings("AE", [policy.SOURCE_AE_TITLE]))
    if 0x00020001 not in by_tag or not by_tag[0x00020001][1]:
        by_tag[0x00020001] = ("OB", b"\x00\x01")
    if 0x00020012 not in by_tag or not _text(by_tag[0x00020012][1]) or 0x00020013 not in by_tag:
        # What pydicom's writer fills in (the engine's output has it); only a file meta that lacks them pays
        # for importing pydicom.
        from pydicom import __version_info__ as pydicom_version
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

        if 0x00020012 not in by_tag or not _text(by_tag[0x00020012][1]):
            by_tag[0x00020012] = ("UI", _encode_strings("UI", [PYDICOM_IMPLEMENTATION_UID]))
        if 0x00020013 not in by_tag:
            by_tag[0x00020013] = ("SH", _encode_strings("SH", [f"PYDICOM {'.'.join(pydicom_version)}"]))
    return [(tag, vr, value) for tag, (vr, value) in by_tag.items()]


def _encode_file_meta(meta: list[Element]) -> bytes:
    body = _encode(meta)
    return _encode([(0x00020000, "UL", struct.pack("<L", len(body)))]) + body


# -- one file ------------------------------------------------------------------------------------------------


def _top(elements: list[Element]) -> dict[int, tuple[str, bytes]]:
    """The values of the elements that are not sequences, by tag (a tag given twice: its last value)."""
    found = dict(zip(map(_TAG, elements), map(_VR_VALUE, elements), strict=True))
    if len(found) != len(elements):
        return {tag: (vr, value) for tag, vr, value in elements if isinstance(value, bytes)}
    if "SQ" in map(_VR, elements):
        for tag in [e[0] for e in elements if e[1] == "SQ"]:
            del found[tag]
    return found


_VR, _VR_VALUE = operator.itemgetter(1), operator.itemgetter(1, 2)


class _Header:
    """The original header as ``phi.gather`` reads it."""

    def __init__(self, elements: list[Element], codec: str) -> None:
        self.elements, self.codec = elements, codec

    def select(
        self, tags: Collection[int], vrs: Collection[str]
    ) -> Iterator[tuple[int | None, int, str, list[str]]]:
        return _select(self.elements, tags, vrs, None, self.codec)


def _select(
    elements: list[Element], tags: Collection[int], vrs: Collection[str], parent: int | None, codec: str
) -> Iterator[tuple[int | None, int, str, list[str]]]:
    # Only sequences (the VR SQ, and no other, holds items), the attributes asked for and a character set
    # need a look: most of a header is none of these.
    looked_at = [
        e for e in elements if e[1] == "SQ" or e[0] in tags or e[1] in vrs or e[0] == policy.CHARACTER_SET
    ]
    for tag, vr, value in looked_at:
        if isinstance(value, list):
            for item in value:
                yield from _select(item, tags, vrs, tag, codec)
        elif tag in tags or vr in vrs:
            yield parent, tag, vr, _strings(vr, value, codec)
        elif tag == policy.CHARACTER_SET and parent is not None:
            raise NotHandled("a sequence item with a character set of its own")


def _holds_identifier(elements: list[Element], identifiers: Scanner) -> bool:
    for _, vr, value in elements:
        if isinstance(value, list):
            if any(_holds_identifier(item, identifiers) for item in value):
                return True
        elif vr in values.TEXT_VRS and value and identifiers.search(value.decode("latin-1")) is not None:
            return True
    return False


def _single(top: dict[int, tuple[str, bytes]], tag: int, codec: str = DEFAULT_CODEC) -> str:
    if tag not in top:
        return ""
    parts = _strings(*top[tag], codec)
    if len(parts) != 1:
        raise NotHandled("a multi-valued attribute where one value is expected")
    return parts[0]


def _pixel_problem(top: dict[int, tuple[str, bytes]], syntax: str, pixel_bytes: int | None) -> bool:
    """Whether files.truncation would find the image cut short (that file goes to the engine to say so)."""
    if IMAGE_TAGS["rows"] not in top or IMAGE_TAGS["columns"] not in top:
        return False
    if pixel_bytes is None:
        return True
    if syntax not in (EXPLICIT_LITTLE, IMPLICIT_LITTLE):
        return False  # compressed (``_read`` lets no other syntax through): no length to expect
    numbers = {name: _number(*top[tag]) if tag in top else None for name, tag in IMAGE_TAGS.items()}
    rows, columns = numbers["rows"], numbers["columns"]
    if rows is None or columns is None:
        return True
    frames = _number(*top[FRAMES]) if FRAMES in top else None
    return pixel_bytes < policy.expected_pixel_bytes(
        rows, columns, numbers["samples"], numbers["bits"], frames
    )


def rewrite(
    data: bytes, config: DeidConfig, pixels: Callable[[bytes, int, bool], tuple[int, int] | None]
) -> CleanFile:
    """De-identify one file on its bytes, or raise NotHandled. ``pixels(data, start, implicit)`` finds the
    pixel data element that starts at ``start`` and returns where it ends and its value length, or None when
    it cannot be carried over as it is (files.pixel_element)."""
    if config.pseudonym_table is not None or policy.compile_policy(config.options).retain_safe_private:
        raise NotHandled("a pseudonym table or Retain Safe Private")
    meta, elements, top, tail, implicit = _read(data, pixels)
    codec = _codec(top)
    if policy.burned_in_reason(
        _single(top, BURNED_IN), _single(top, SOP_CLASS), config.burned_in_annotations
    ):
        raise NotHandled("burned-in annotations")
    original_id = _single(top, PATIENT_ID, codec).strip()
    instance = start(config, original_id, _Header(elements, codec))
    cleaned = _apply(elements, instance, codec, Inside.PLAIN, False)
    pseudonym = config.keyring.pseudonym(original_id)
    written: list[Element] = [
        (tag, vr, _encode_strings(vr, [pseudonym], codec)) for tag, vr in policy.PSEUDONYMIZED
    ]
    written += _markers(instance.policy.markers)
    changed = {tag for tag, _, _ in written}
    cleaned = [e for e in cleaned if e[0] not in changed] + written
    # What cleaning did not reach (the written attributes, the file meta) is left to the engine to quarantine.
    if _holds_identifier(written, instance.identifiers.residual):
        raise NotHandled("a residual identifier (the engine names it)")
    result = _top(cleaned)
    new_meta = _file_meta(meta, _single(result, SOP_INSTANCE))
    if _holds_identifier(new_meta, instance.identifiers.residual):
        raise NotHandled("a residual identifier in the file meta")
    return CleanFile(
        parts=(b"".join((PREAMBLE, b"DICM", _encode_file_meta(new_meta), _encode(cleaned, implicit))), tail),
        patient=pseudonym,
        study=_single(result, STUDY),
        series=_single(result, SERIES),
        instance=_single(result, SOP_INSTANCE),
        modality=_single(result, MODALITY),
        body_part=_single(result, BODY_PART),
        cleaned=instance.report(),
    )


def _codec(top: dict[int, tuple[str, bytes]]) -> str:
    """The Python codec of the data set's character set; NotHandled for one this path does not read."""
    if policy.CHARACTER_SET not in top:
        return DEFAULT_CODEC
    names = _strings(*top[policy.CHARACTER_SET])
    codec = CHARACTER_SETS.get(names[0].strip()) if len(names) == 1 else None
    if codec is None:
        raise NotHandled(f"character set {names!r}")
    return DEFAULT_CODEC if codec in ("iso8859", "latin_1") else codec


def _read(
    data: bytes, pixels: Callable[[bytes, int, bool], tuple[int, int] | None]
) -> tuple[list[Element], list[Element], dict[int, tuple[str, bytes]], memoryview, bool]:
    """The file meta, the data set's elements (in order, and its top-level values by tag), the pixel data
    element as it is, and whether the VR is implicit; NotHandled for anything this path does not read exactly
    as pydicom does."""
    if len(data) < 144 or data[128:132] != b"DICM":
        raise NotHandled("no preamble")
    meta, meta_end = _parse_meta(data)
    meta_top = _top(meta)
    if SYNTAX_TAG not in meta_top:
        raise NotHandled("no transfer syntax")
    syntax = _text(meta_top[SYNTAX_TAG][1])
    if syntax not in (EXPLICIT_LITTLE, IMPLICIT_LITTLE) and not _encapsulated(syntax):
        raise NotHandled(f"transfer syntax {syntax}")
    implicit = syntax == IMPLICIT_LITTLE
    elements, stopped = _parse_data_set(data, meta_end, implicit)
    tail = memoryview(b"")
    pixel_bytes: int | None = None
    if stopped < len(data):
        found = pixels(data, stopped, implicit)
        if found is None:
            raise NotHandled("pixel data the engine has to judge")
        tail, pixel_bytes = memoryview(data)[stopped : found[0]], found[1]
    top = _top(elements)
    if SOP_INSTANCE not in top or SOP_CLASS not in top or _pixel_problem(top, syntax, pixel_bytes):
        raise NotHandled("not an instance, or an image cut short")
    return meta, elements, top, tail, implicit


# The header layouts this process has parsed (``deid.layout``): a slice of a series seen before is split into
# its elements by slicing.
LAYOUTS = layout.Layouts()


def _read_at_top(tag: int, vr: str) -> bool:
    """Whether this path reads a top-level element: every public attribute but group lengths, every sequence,
    and the private attributes whose VR the patient's identifiers are gathered from. Every other private
    attribute goes unread and is not written (Retain Safe Private is left to the engine)."""
    return not (tag >> 16 & 1 or tag & 0xFFFF == 0) or vr == "SQ" or vr in IDENTIFIER_VRS


def _parse_data_set(data: bytes, start: int, implicit: bool) -> tuple[list[Element], int]:
    """``parse_elements`` over the data set (of its top level, what ``_read_at_top`` wants), through a layout
    seen before when the file has one."""
    known = LAYOUTS.find(data, start, implicit)
    if known is not None:
        return known.elements(data), known.stop
    elements, stopped = parse_elements(data, start, len(data), implicit=implicit)
    learned = layout.learn(data, start, stopped, implicit, elements, _read_at_top)
    if learned is not None:
        LAYOUTS.remember(learned)
    return [e for e in elements if _read_at_top(e[0], e[1])], stopped


def _encapsulated(syntax: str) -> bool:
    """Whether pixel data in this transfer syntax is compressed and encapsulated, the header being explicit VR
    little endian (pydicom's UID knows; only such files pay for importing pydicom)."""
    from pydicom.uid import UID

    uid = UID(syntax)
    return bool(uid.is_compressed and not uid.is_deflated)


def transfer_syntax(data: bytes) -> tuple[str, int] | None:
    """The Transfer Syntax UID a Part 10 file names and where its data set starts (after the file meta
    group, PS3.10 7.1), or None when the file has no DICM prefix or its meta group cannot be read."""
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    try:
        meta, meta_end = _parse_meta(data)
    except Exception:
        return None
    found = _top(meta).get(SYNTAX_TAG)
    return (_text(found[1]), meta_end) if found else None


def _parse_meta(data: bytes) -> tuple[list[Element], int]:
    """The file meta group: elements from byte 132 while their group is 0002 (through a layout seen before
    when the file has one: the header of the element after the group is part of it)."""
    known = META_LAYOUTS.find(data, 132, False)
    if known is not None:
        return known.elements(data), known.stop
    meta: list[Element] = []
    position = 132
    while position + 8 <= len(data) and _u16(data, position) == 0x0002:
        element, position = parse_elements(data, position, _element_end(data, position))
        meta.extend(element)
    learned = layout.learn(data, 132, position, False, meta, _every)
    if learned is not None:
        META_LAYOUTS.remember(learned)
    return meta, position


META_LAYOUTS = layout.Layouts()


def _every(_tag: int, _vr: str) -> bool:
    return True


def _element_end(data: bytes, position: int) -> int:
    vr = data[position + 4 : position + 6].decode("latin-1")
    if vr in LONG_VRS:
        if position + 12 > len(data):
            raise NotHandled("a file meta element runs past the end")
        return min(len(data), position + 12 + _u32(data, position + 8))
    return min(len(data), position + 8 + _u16(data, position + 6))
