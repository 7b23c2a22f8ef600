"""Looking at data elements without decoding them.

pydicom keeps each element as raw bytes until it is accessed; decoding every one of a header's hundreds of
elements costs more than the whole de-identification. These helpers read an element's VR and text from the
raw form, so only elements that are acted on get decoded.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag


def vr_of(dataset: Dataset, tag: BaseTag) -> str:
    """The element's VR: from the file (explicit VR) or the data dictionary (implicit VR); 'UN' if unknown."""
    element = dataset._dict[tag]
    vr = element.VR
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def text_of(dataset: Dataset, tag: BaseTag) -> str:
    """The element's value as text, decoded only when it already is; raw bytes are read as Latin-1, which
    keeps every ASCII identifier findable whatever the character set."""
    element = dataset._dict[tag]
    if isinstance(element, RawDataElement):
        return element.value.decode("latin-1") if element.value else ""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def name_of(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})"


def sequence_items(dataset: Dataset, tag: BaseTag) -> Iterator[Dataset]:
    yield from dataset[tag].value or ()
