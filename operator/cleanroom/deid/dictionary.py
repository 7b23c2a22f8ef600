"""The DICOM data dictionary (PS3.6) as pydicom ships it, read without importing pydicom.

Importing pydicom loads its pixel handlers, numpy and Pillow: about 0.4 s of CPU on a two-core machine, more
than de-identifying 400 CT slices on their encoded bytes takes, and nothing the header codec (``rewrite``)
needs. pydicom's table is one module of plain literals (``pydicom/_dicom_dict.py``, generated from PS3.6), so
it is loaded here as it is, and these functions answer as pydicom.datadict's do (repeating groups included);
tests/unit/test_deid_dictionary.py holds them to pydicom's own for every tag of the table.
"""

from __future__ import annotations

import functools
import importlib.machinery
import sys
import types
from pathlib import Path

# (VR, VM, name, retired, keyword), as in pydicom.
Entry = tuple[str, str, str, str, str]


@functools.cache
def _tables() -> tuple[dict[int, Entry], dict[str, Entry], tuple[tuple[str, int, int], ...]]:
    """pydicom's main table, its repeating-group table ('60xx3000'), and the masks that match the latter."""
    module = sys.modules.get("pydicom._dicom_dict")
    if module is None:
        spec = importlib.machinery.PathFinder.find_spec("pydicom")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("pydicom is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / "_dicom_dict.py"
        # Same source, so the same cached bytecode pydicom itself uses.
        loader = importlib.machinery.SourceFileLoader("cleanroom.deid._pydicom_dicom_dict", str(path))
        module = types.ModuleType(loader.name)
        module.__file__ = str(path)
        loader.exec_module(module)
    main: dict[int, Entry] = module.DicomDictionary
    repeaters: dict[str, Entry] = module.RepeatersDictionary
    # pydicom.datadict.mask_match: the non-x digits equal, the x digits ignored.
    masks = tuple(
        (mask, int(mask.replace("x", "0"), 16), int("".join("F0"[c == "x"] for c in mask), 16))
        for mask in repeaters
    )
    return main, repeaters, masks


@functools.cache
def _keywords() -> dict[str, int]:
    return {entry[4]: tag for tag, entry in _tables()[0].items()}


def entry(tag: int) -> Entry | None:
    """The dictionary's entry for a public tag (a repeating group's too), or None."""
    main, repeaters, masks = _tables()
    found = main.get(tag)
    if found is not None or tag >> 16 & 1:
        return found
    for mask, equal, care in masks:
        if (tag ^ equal) & care == 0:
            return repeaters[mask]
    return None


@functools.lru_cache(maxsize=8192)
def vr(tag: int) -> str | None:
    """The VR the dictionary gives a tag (pydicom.datadict.dictionary_VR), or None for one it lacks."""
    found = entry(tag)
    return found[0] if found else None


@functools.lru_cache(maxsize=8192)
def keyword(tag: int) -> str:
    """The tag's keyword, or '' (pydicom.datadict.keyword_for_tag)."""
    found = entry(tag)
    return found[4] if found else ""


def tag(name: str) -> int | None:
    """The tag of a keyword, or None (pydicom.datadict.tag_for_keyword)."""
    return _keywords().get(name)
