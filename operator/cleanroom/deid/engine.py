"""De-identification of one pydicom Dataset under the compiled policy (``policy``): the reference codec.

Walks every attribute, recursively inside sequences, and carries out what the policy decides for it:
removes private attributes (except the safe list under Retain Safe Private), replaces patient identity with
a keyed pseudonym, remaps UIDs consistently (file meta included), removes or shifts dates, writes the
PS3.15 E.1.1 markers, and then scans what is left for the patient's identifiers. Files it cannot make safe
are returned as quarantined with a reason, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from cleanroom.api import BurnedInAnnotationPolicy
from cleanroom.deid import elements, policy, values
from cleanroom.deid.clean_file import Cleaned, Quarantined
from cleanroom.deid.instance import Instance, Where, start
from cleanroom.deid.phi import Scanner
from cleanroom.deid.policy import DeidConfig, Inside, Marker, Operation

__all__ = ["DeidConfig", "Kept", "Outcome", "Quarantined", "burned_in_reason", "deidentify"]


@dataclass(frozen=True)
class Kept:
    """A de-identified instance and the facts a snapshot manifest needs about it."""

    dataset: Dataset
    patient: str
    study: str
    series: str
    instance: str
    modality: str
    body_part: str
    cleaned: tuple[Cleaned, ...] = ()


Outcome = Kept | Quarantined


def burned_in_reason(dataset: Dataset, burned_in: BurnedInAnnotationPolicy) -> str | None:
    """Why pixels may carry burned-in identifiers, or None (``policy.burned_in_reason``)."""
    return policy.burned_in_reason(
        str(dataset.get("BurnedInAnnotation", "")), str(dataset.get("SOPClassUID", "")), burned_in
    )


class _Header:
    """The original header as ``phi.gather`` reads it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def select(
        self, tags: Collection[int], vrs: Collection[str]
    ) -> Iterator[tuple[int | None, int, str, list[str]]]:
        return _select(self.dataset, tags, vrs, None)


def _select(
    dataset: Dataset, tags: Collection[int], vrs: Collection[str], parent: int | None
) -> Iterator[tuple[int | None, int, str, list[str]]]:
    for tag in list(dataset._dict):
        vr = elements.vr_of(dataset, tag)
        if vr == "SQ":
            for item in elements.sequence_items(dataset, tag):
                yield from _select(item, tags, vrs, int(tag))
        elif tag in tags or vr in vrs:
            yield parent, int(tag), vr, _strings(dataset, tag)


def _strings(dataset: Dataset, tag: BaseTag) -> list[str]:
    """An element's values as text, decoded in the data set's character set."""
    value = dataset[tag].value
    if value is None:
        return [""]
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def deidentify(dataset: Dataset, config: DeidConfig, pixels_checked: bool = False) -> Outcome:
    """De-identify ``dataset`` in place. Returns Kept (with the same object) or Quarantined. A file whose
    pixels may show burned-in text is quarantined unless ``pixels_checked`` says that ``deid.pixels`` has
    cleaned and checked them."""
    reason = burned_in_reason(dataset, config.burned_in_annotations)
    if reason and not pixels_checked:
        return Quarantined("BurnedInAnnotation", reason, "BurnedInAnnotation")
    original_id = str(dataset.get("PatientID", "")).strip()
    if config.pseudonym_table is not None:
        pseudonym = config.pseudonym_table.get(original_id)
        if pseudonym is None:
            return Quarantined(
                "PatientNotInPseudonymTable",
                "the patient is missing from the pseudonym table; add them, or the file stays out",
                "PatientID",
            )
    else:
        pseudonym = config.keyring.pseudonym(original_id)
    instance = start(config, original_id, _Header(dataset))
    _apply(dataset, instance)
    if hasattr(dataset, "file_meta"):
        _apply_file_meta(dataset.file_meta, dataset)
    for tag, vr in policy.PSEUDONYMIZED:
        dataset.add_new(tag, vr, pseudonym)
    _add_markers(dataset, instance.policy.markers)
    # What cleaning could not reach (the file meta, the pseudonym a table gave) quarantines the file.
    residual = instance.identifiers.residual
    found = _find(dataset, residual) or (
        _find(dataset.file_meta, residual) if hasattr(dataset, "file_meta") else None
    )
    if found:
        return Quarantined(
            "ResidualIdentifier",
            f"an identifier of the original header ({found[1]}) is still present in {found[0]}, where it "
            "cannot be cleaned",
            found[0],
        )
    return Kept(
        dataset=dataset,
        patient=pseudonym,
        study=str(dataset.get("StudyInstanceUID", "")),
        series=str(dataset.get("SeriesInstanceUID", "")),
        instance=str(dataset.get("SOPInstanceUID", "")),
        modality=str(dataset.get("Modality", "")),
        body_part=str(dataset.get("BodyPartExamined", "")),
        cleaned=instance.report(),
    )


def _apply(
    dataset: Dataset, instance: Instance, inside: Inside = Inside.PLAIN, nested: bool = False, path: str = ""
) -> None:
    """Carry out the policy's decision for every element; ``inside`` is the enclosing sequence's treatment,
    ``path`` the attribute path of the item (as reports name attributes)."""
    removed_groups: set[int] = set()
    for tag in list(dataset._dict):
        if tag.is_private:
            _private(dataset, tag, instance)
            continue
        vr = elements.vr_of(dataset, tag)
        if vr == "UN" and instance.policy.acts_on(int(tag)):
            # Explicitly UN in the file: pydicom resolves the VR from its dictionary when the value is read,
            # and the table's action applies to that.
            vr = dataset[tag].VR
        decision = instance.policy.decide(int(tag), vr, inside, nested)
        if decision.removes_group:
            removed_groups.add(tag.group)
        operation = decision.operation
        if operation is Operation.KEEP:
            if vr in values.TEXT_VRS:
                _residual(dataset, tag, instance, path)
        elif operation is Operation.REMOVE:
            del dataset[tag]
        elif operation is Operation.DESCEND:
            where = path + policy.attribute_name(int(tag))
            for index, item in enumerate(dataset[tag].value or ()):
                _apply(item, instance, decision.inside, True, f"{where}[{index}].")
        else:
            _replace(dataset[tag], operation, instance, (path, int(tag)))
    for group in removed_groups:
        for tag in [t for t in list(dataset.keys()) if t.group == group]:
            del dataset[tag]


def _residual(dataset: Dataset, tag: BaseTag, instance: Instance, path: str) -> None:
    """A kept text value, cleaned of the original header's identifiers. Raw ASCII is searched as it is;
    anything else is decoded in the data set's character set first."""
    raw = dataset._dict[tag]
    ascii_raw = raw.value if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) else None
    if (
        ascii_raw is not None
        and ascii_raw.isascii()
        and not instance.identifiers.residual.search(ascii_raw.decode())
    ):
        return
    element = dataset[tag]
    if element.value in (None, ""):
        return
    vr = element.VR
    element.value = _map_values(element.value, lambda text: instance.residual(vr, text, (path, int(tag))))


def _replace(element: DataElement, operation: Operation, instance: Instance, where: Where) -> None:
    vr, value = element.VR, element.value
    if operation is Operation.EMPTY:
        element.value = Sequence() if vr == "SQ" else values.empty_value(vr)
    elif operation is Operation.DUMMY or (operation is Operation.DUMMY_IF_SET and not element.is_empty):
        element.value = values.dummy_value(vr)
    elif value in (None, ""):
        return
    elif operation is Operation.UID:
        element.value = _map_values(value, instance.uid)
    elif operation is Operation.CLEAN:
        element.value = _map_values(value, lambda text: instance.clean(vr, text, where))


def _private(dataset: Dataset, tag: BaseTag, instance: Instance) -> None:
    if instance.policy.retain_safe_private:
        if tag.is_private_creator:
            return
        creator_tag = Tag(tag.group, tag.element >> 8)
        creator = elements.text_of(dataset, creator_tag).strip() if creator_tag in dataset._dict else ""
        if instance.policy.keeps_private(creator, tag.element):
            return
    del dataset[tag]


def _map_values(value: object, change: Callable[[str], str]) -> object:
    if isinstance(value, MultiValue | list | tuple):
        return [change(str(item)) for item in value]
    return change(str(value))


def _apply_file_meta(meta: FileMetaDataset, dataset: Dataset) -> None:
    if "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if "SourceApplicationEntityTitle" in meta:
        meta.SourceApplicationEntityTitle = policy.SOURCE_AE_TITLE
    for tag in [t for t in list(meta.keys()) if t.is_private]:
        del meta[tag]


def _add_markers(dataset: Dataset, markers: tuple[Marker, ...]) -> None:
    """The policy's PS3.15 E.1.1 markers, as attributes of ``dataset``."""
    for marker in markers:
        if marker.vr == "SQ":
            items = []
            for fields in marker.items:
                item = Dataset()
                _add_markers(item, fields)
                items.append(item)
            dataset.add_new(marker.tag, "SQ", Sequence(items))
        else:
            dataset.add_new(
                marker.tag, marker.vr, list(marker.values) if len(marker.values) > 1 else marker.values[0]
            )


def _find(dataset: Dataset, scanner: Scanner, path: str = "") -> tuple[str, str] | None:
    """(attribute path, source) of the first identifier in a text value of ``dataset``, if any."""
    for tag in list(dataset._dict):
        vr = elements.vr_of(dataset, tag)
        where = f"{path}{elements.name_of(tag)}"
        if vr == "SQ":
            for index, item in enumerate(elements.sequence_items(dataset, tag)):
                found = _find(item, scanner, f"{where}[{index}].")
                if found:
                    return found
        elif vr in values.TEXT_VRS:
            hit = next((h for h in map(scanner.search, _strings(dataset, tag)) if h), None)
            if hit:
                return where, hit.source
    return None
