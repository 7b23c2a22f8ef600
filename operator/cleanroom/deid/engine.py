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

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from cleanroom.api import BurnedInAnnotationPolicy
from cleanroom.deid import elements, phi, policy, values
from cleanroom.deid.instance import Instance, start
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


@dataclass(frozen=True)
class Quarantined:
    reason: str
    detail: str
    attribute: str = ""


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
    ) -> Iterator[tuple[int | None, int, list[str]]]:
        return _select(self.dataset, tags, vrs, None)


def _select(
    dataset: Dataset, tags: Collection[int], vrs: Collection[str], parent: int | None
) -> Iterator[tuple[int | None, int, list[str]]]:
    for tag in list(dataset._dict):
        vr = elements.vr_of(dataset, tag)
        if vr == "SQ":
            for item in elements.sequence_items(dataset, tag):
                yield from _select(item, tags, vrs, int(tag))
        elif tag in tags or vr in vrs:
            yield parent, int(tag), elements.text_of(dataset, tag).split("\\")


def deidentify(dataset: Dataset, config: DeidConfig) -> Outcome:
    """De-identify ``dataset`` in place. Returns Kept (with the same object) or Quarantined."""
    reason = burned_in_reason(dataset, config.burned_in_annotations)
    if reason:
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
    patient = instance.identifiers.patient
    finding = phi.scan(_texts(dataset), patient) or (
        phi.scan(_texts(dataset.file_meta), patient) if hasattr(dataset, "file_meta") else None
    )
    if finding:
        return Quarantined(
            "ResidualIdentifier",
            f"a patient identifier is still present in {finding.attribute} after de-identification",
            finding.attribute,
        )
    return Kept(
        dataset=dataset,
        patient=pseudonym,
        study=str(dataset.get("StudyInstanceUID", "")),
        series=str(dataset.get("SeriesInstanceUID", "")),
        instance=str(dataset.get("SOPInstanceUID", "")),
        modality=str(dataset.get("Modality", "")),
        body_part=str(dataset.get("BodyPartExamined", "")),
    )


def _apply(dataset: Dataset, instance: Instance, inside: Inside = Inside.PLAIN, nested: bool = False) -> None:
    """Carry out the policy's decision for every element; ``inside`` is the enclosing sequence's treatment."""
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
            continue
        if operation is Operation.REMOVE:
            del dataset[tag]
        elif operation is Operation.DESCEND:
            for item in dataset[tag].value or ():
                _apply(item, instance, decision.inside, nested=True)
        else:
            _replace(dataset[tag], operation, instance)
    for group in removed_groups:
        for tag in [t for t in list(dataset.keys()) if t.group == group]:
            del dataset[tag]


def _replace(element: DataElement, operation: Operation, instance: Instance) -> None:
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
        element.value = _map_values(value, lambda text: instance.clean(vr, text))


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


def _texts(dataset: Dataset, path: str = "") -> Iterator[tuple[str, str]]:
    """(attribute path, text) of every text value, inside sequences too, named as reports name them."""
    for tag in list(dataset._dict):
        vr = elements.vr_of(dataset, tag)
        where = f"{path}{elements.name_of(tag)}"
        if vr == "SQ":
            for index, item in enumerate(elements.sequence_items(dataset, tag)):
                yield from _texts(item, f"{where}[{index}].")
        elif vr in values.TEXT_VRS:
            text = elements.text_of(dataset, tag)
            if text:
                yield where, text
