"""De-identification of one pydicom Dataset under the PS3.15 Annex E profile: a pure transformation.

Applies Table E.1-1 (as compiled by ``profile``) to every attribute, recursively inside sequences; removes
private attributes (except the safe list under Retain Safe Private); replaces patient identity with a keyed
pseudonym; remaps UIDs consistently (file meta included); removes or shifts dates; writes the PS3.15 E.1.1
markers; and then scans what is left for the patient's identifiers. Files it cannot make safe are returned
as quarantined with a reason, never dropped.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from cleanroom import __version__
from cleanroom.api import BurnedInAnnotationPolicy, DeidentificationMethod, DeidentificationOption
from cleanroom.deid import elements, phi, values
from cleanroom.deid.keys import Keyring
from cleanroom.deid.markers import method_codes
from cleanroom.deid.profile import Action, Profile, compile_profile
from cleanroom.deid.safe_private import SAFE_PRIVATE

PATIENT_ID = Tag(0x0010, 0x0020)
PATIENT_NAME = Tag(0x0010, 0x0010)
OVERLAY_DATA_ELEMENT = 0x3000
# SOP classes whose pixels usually carry burned-in text (PS3.15 E.1.1 note on Burned In Annotation):
# secondary capture (1.2.840.10008.5.1.4.1.1.7 and its multi-frame kinds) and ultrasound.
BURNED_IN_PRONE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.6.",
    "1.2.840.10008.5.1.4.1.1.3.1",
)
DATE_VRS = frozenset({"DA", "DT"})


@dataclass(frozen=True)
class DeidConfig:
    method: DeidentificationMethod
    keyring: Keyring
    options: frozenset[DeidentificationOption] = frozenset()
    burned_in_annotations: BurnedInAnnotationPolicy = BurnedInAnnotationPolicy.QUARANTINE
    # Original patient ID -> pseudonym (e.g. EUPIDs); when given, a patient not in it is quarantined.
    pseudonym_table: Mapping[str, str] | None = field(default=None, repr=False)


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


class _Context:
    """Per-instance state shared by the recursive walk."""

    def __init__(
        self, config: DeidConfig, profile: Profile, tokens: frozenset[str], date_offset: int
    ) -> None:
        self.config = config
        self.profile = profile
        self.tokens = tokens
        self.date_offset = date_offset


def burned_in_reason(dataset: Dataset, policy: BurnedInAnnotationPolicy) -> str | None:
    """Why pixels may carry burned-in identifiers, or None (PS3.15 E.1.1: the profile does not clean pixels)."""
    return burned_in_reason_of(
        str(dataset.get("BurnedInAnnotation", "")), str(dataset.get("SOPClassUID", "")), policy
    )


def burned_in_reason_of(burned_in: str, sop_class: str, policy: BurnedInAnnotationPolicy) -> str | None:
    """burned_in_reason, from the Burned In Annotation and SOP Class UID values."""
    marked = burned_in.strip().upper()
    if marked == "YES":
        return "Burned In Annotation is YES"
    if policy is BurnedInAnnotationPolicy.ALLOW or marked == "NO":
        return None
    if sop_class.startswith(BURNED_IN_PRONE_PREFIXES):
        return f"SOP class {sop_class} usually carries burned-in text and Burned In Annotation is not NO"
    return None


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
    tokens = phi.identifiers(dataset)
    scrubbed = tokens | phi.context_identifiers(
        dataset,
        keep_institution=DeidentificationOption.RETAIN_INSTITUTION_IDENTITY in config.options,
        keep_device=DeidentificationOption.RETAIN_DEVICE_IDENTITY in config.options,
    )
    profile = compile_profile(config.options)
    context = _Context(config, profile, scrubbed, config.keyring.date_offset_days(original_id))
    _apply(dataset, context)
    if hasattr(dataset, "file_meta"):
        _apply_file_meta(dataset.file_meta, dataset, context)
    dataset.PatientID = pseudonym
    dataset.PatientName = pseudonym
    _mark(dataset, config.options)
    finding = phi.scan(dataset, tokens) or (
        phi.scan(dataset.file_meta, tokens) if hasattr(dataset, "file_meta") else None
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


class Inside(enum.Enum):
    """How free text the table does not list is treated inside a sequence, by the sequence's own action."""

    PLAIN = "plain"  # kept (the table decides)
    CLEANED = "cleaned"  # C: identifiers scrubbed out
    DUMMIED = "dummied"  # D: replaced by dummy values, structure kept


# Inside a dummied sequence, names and free text are replaced; coded strings, numbers and UIDs keep their
# meaning (dates and UIDs the table lists are handled by their own rows).
DUMMIED_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


def _apply(dataset: Dataset, context: _Context, inside: Inside = Inside.PLAIN, nested: bool = False) -> None:
    """Apply the profile to every element; ``inside`` says how text the table does not list is treated."""
    removed_overlay_groups: set[int] = set()
    for tag in list(dataset._dict):
        if tag.is_private:
            _private(dataset, tag, context)
            continue
        if tag.element == 0:
            # Group lengths are retired outside the file meta (PS3.5 7.2) and would be wrong after cleaning.
            del dataset[tag]
            continue
        action = context.profile.action(int(tag))
        if action is Action.REMOVE:
            if tag.group & 0xFF00 == 0x6000 and tag.element == OVERLAY_DATA_ELEMENT:
                # Overlay Data removed leaves an incomplete Overlay Plane module, so the whole group goes.
                removed_overlay_groups.add(tag.group)
            del dataset[tag]
            continue
        if action is None or action is Action.KEEP:
            vr = elements.vr_of(dataset, tag)
            if vr == "SQ":
                _recurse(dataset[tag].value, context, inside)
            elif inside is Inside.CLEANED and vr in values.TEXT_VRS:
                _clean(dataset[tag], context)
            elif inside is Inside.DUMMIED and vr in DUMMIED_VRS and not dataset[tag].is_empty:
                dataset[tag].value = values.dummy_value(vr)
            continue
        _act(dataset, tag, action, context, nested)
    for group in removed_overlay_groups:
        for tag in [t for t in list(dataset.keys()) if t.group == group]:
            del dataset[tag]


def _recurse(sequence: Sequence | None, context: _Context, inside: Inside = Inside.PLAIN) -> None:
    for item in sequence or ():
        _apply(item, context, inside, nested=True)


def _private(dataset: Dataset, tag: BaseTag, context: _Context) -> None:
    if DeidentificationOption.RETAIN_SAFE_PRIVATE in context.config.options:
        if tag.is_private_creator:
            return
        creator_tag = Tag(tag.group, tag.element >> 8)
        creator = elements.text_of(dataset, creator_tag).strip() if creator_tag in dataset._dict else ""
        if (creator, tag.element & 0xFF) in SAFE_PRIVATE:
            return
    del dataset[tag]


def _act(dataset: Dataset, tag: BaseTag, action: Action, context: _Context, nested: bool = False) -> None:
    element = dataset[tag]
    vr = element.VR
    if action is Action.REMOVE:
        del dataset[tag]
    elif vr == "SQ":
        if action is Action.ZERO_OR_REMOVE and nested:
            # X/Z sequences are Type 2 at the top level (Referenced Study Sequence in General Study), where
            # empty is valid, but Type 3 inside macros, where only absent is.
            del dataset[tag]
        elif action in (Action.ZERO, Action.ZERO_OR_REMOVE):
            element.value = Sequence()
        else:
            # D keeps the items (a Type 1 sequence stays valid) with every text inside dummied; U keeps them so
            # the UIDs inside are replaced; C keeps them and scrubs identifiers out of their text.
            inside = {Action.DUMMY: Inside.DUMMIED, Action.CLEAN: Inside.CLEANED}.get(action, Inside.PLAIN)
            _recurse(element.value, context, inside)
    elif action in (Action.ZERO, Action.ZERO_OR_REMOVE):
        element.value = values.empty_value(vr)
    elif action is Action.DUMMY:
        element.value = _uid(element.value, context) if vr == "UI" else values.dummy_value(vr)
    elif action is Action.UID:
        element.value = _uid(element.value, context)
    elif action is Action.CLEAN:
        _clean(element, context)


def _uid(value: object, context: _Context) -> object:
    if DeidentificationOption.RETAIN_UIDS in context.config.options or value in (None, ""):
        return value
    return _map_values(value, context.config.keyring.uid)


def _clean(element: DataElement, context: _Context) -> None:
    """Action C: shift dates under Modified Dates, scrub identifiers out of text, remap UIDs."""
    vr, value = element.VR, element.value
    if value in (None, "") or vr == "TM":
        return
    if vr in DATE_VRS and DeidentificationOption.RETAIN_LONGITUDINAL_MODIFIED_DATES in context.config.options:
        shift = values.shift_da if vr == "DA" else values.shift_dt
        element.value = _map_values(value, lambda text: shift(text, context.date_offset))
    elif vr in ("LO", "LT", "PN", "SH", "ST", "UC", "UT", "AE", "UR", "CS"):
        element.value = _map_values(value, lambda text: phi.scrub(text, context.tokens))
    elif vr == "UI":
        element.value = _uid(value, context)


def _map_values(value: object, change: Callable[[str], str]) -> object:
    if isinstance(value, MultiValue | list | tuple):
        return [change(str(item)) for item in value]
    return change(str(value))


def _apply_file_meta(meta: FileMetaDataset, dataset: Dataset, context: _Context) -> None:
    if "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if "SourceApplicationEntityTitle" in meta:
        meta.SourceApplicationEntityTitle = "CLEANROOM"
    for tag in [t for t in list(meta.keys()) if t.is_private]:
        del meta[tag]


def _mark(dataset: Dataset, options: frozenset[DeidentificationOption]) -> None:
    """PS3.15 E.1.1 markers: Patient Identity Removed, the method in words and in codes, and the date status."""
    dataset.PatientIdentityRemoved = "YES"
    # LO is limited to 64 characters a value, so each part is a value of its own (VM 1-n).
    dataset.DeidentificationMethod = [f"cleanroom {__version__}", "PS3.15 E Basic Profile"] + [
        o.value for o in DeidentificationOption if o in options
    ]
    codes = Sequence()
    for value, meaning in method_codes(options):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    dataset.DeidentificationMethodCodeSequence = codes
    if DeidentificationOption.RETAIN_LONGITUDINAL_FULL_DATES in options:
        dataset.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif DeidentificationOption.RETAIN_LONGITUDINAL_MODIFIED_DATES in options:
        dataset.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        dataset.LongitudinalTemporalInformationModified = "REMOVED"
